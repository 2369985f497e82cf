"""The ``benchmark`` stage: accuracy, latency (bs 1), throughput (bs 32) and size of every runtime of a run.

Each row states the batching its metric was measured with (``batching``, ``batching_text``). A graph with dynamic
activation scales (dynamic int8 PTQ, a QAT QDQ graph) is scored at batch size 1 unless ``eval_batch_size`` is set
(what a served request gets); the others at 64. ``batchings: [1, 32]`` adds the spread of the int8 graph's metric
over those batch sizes (``batching_spread`` in its row), with advice towards static int8 when it is large.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from slimformer.bench.latency import compare_runtimes
from slimformer.bench.machine import file_size_mb, machine_info, physical_cores
from slimformer.bench.report import make_row, write_report
from slimformer.checkpoint import load_model
from slimformer.config import IDENTITY_WHEN_SET, StageConfig, resolve_data_path
from slimformer.errors import ConfigError
from slimformer.evaluate import (
    EvalBatching,
    batching_spread,
    default_batching,
    evaluate_predictor,
    pad_batch,
    torch_predictor,
)
from slimformer.export import FP32_FILE, INT8_FILE, OrtModel
from slimformer.export._proto import read_metadata
from slimformer.export.qdq import quantization_summary
from slimformer.io import read_json
from slimformer.models import META_FILE
from slimformer.quant import has_dynamic_activation_quantizers
from slimformer.stages.base import RunContext, register_stage
from slimformer.stages.evaluate import spread_advice
from slimformer.stages.quantize import training_data
from slimformer.tasks.data import load_eval_set

__all__ = ["BenchmarkConfig", "benchmark_artifacts", "benchmark_target"]

PathLike = str | os.PathLike[str]


class BenchmarkConfig(StageConfig):
    """Accuracy, latency (bs 1), throughput (bs 32) and size of every runtime of a run."""

    batch_sizes: list[int] = Field([1, 32], min_length=1, description="batch sizes to time")
    seq_len: int | None = Field(None, gt=0, description="tokens per sequence (default: the task's max_seq_length)")
    warmup: int = Field(5, ge=0, description="untimed calls before timing")
    iters: int = Field(30, ge=1, description="timed calls; medians are reported")
    threads: int | None = Field(None, ge=1, description="threads pinned for every runtime (default: physical cores)")
    runtimes: list[Literal["pytorch-fp32", "onnxruntime-fp32", "onnxruntime-int8"]] = Field(
        ["pytorch-fp32", "onnxruntime-fp32", "onnxruntime-int8"], min_length=1
    )
    evaluate: bool = Field(True, description="also measure the task metric of each runtime on the eval split")
    max_eval_examples: int | None = Field(None, ge=1)
    eval_batch_size: int | None = Field(
        None,
        ge=1,
        description="inputs per evaluation batch (length-sorted); default: 1 for a graph with dynamic activation "
        "scales (dynamic int8, QAT: what a served request gets), 64 for the others",
        json_schema_extra={IDENTITY_WHEN_SET: True},
    )
    batchings: list[int] | None = Field(
        None,
        min_length=1,
        description="also score the int8 graph under each of these evaluation batch sizes (length-sorted) and "
        "report the spread of its metric",
        json_schema_extra={IDENTITY_WHEN_SET: True},
    )

    @field_validator("batch_sizes", "batchings")
    @classmethod
    def _positive(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(b < 1 for b in v):
            raise ValueError(f"batch sizes must be ≥ 1, got {v}")
        return v


def benchmark_artifacts(
    model_dir: PathLike,
    config: BenchmarkConfig,
    *,
    onnx_fp32: PathLike | None = None,
    onnx_int8: PathLike | None = None,
    out_dir: PathLike,
    name: str,
    data: str | None = None,
    data_root: str | None = None,
) -> dict[str, Any]:
    """Accuracy (official metric, eval split) and speed of each runtime; writes ``report.json``/``report.md``.

    Timings: batch-1 latency (median ms) and batch-32 throughput (sequences/s) on real eval inputs padded to
    ``seq_len`` tokens, every runtime with the same pinned thread count, interleaved rounds, medians.

    Returns:
        ``{"report_json", "report_md", "rows"}``.
    """
    loaded = load_model(model_dir)
    meta, tok = loaded.meta, loaded.tokenizer
    task, trained_on, ft = training_data(meta)
    threads = config.threads or physical_cores()
    seq_len = config.seq_len or meta.max_seq_length or 128
    eval_set = load_eval_set(
        task,
        resolve_data_path(data or trained_on, data_root),
        tok,
        max_seq_length=meta.max_seq_length,
        max_examples=config.max_eval_examples,
        squad_split=ft.get("squad_split", "dev-article-split"),
    )
    runtimes: dict[str, tuple[str, Any, float]] = {}
    qat = quantization_summary(loaded.model)
    if "pytorch-fp32" in config.runtimes:
        label = "teacher fp32" if qat is None else f"{qat['label']} QAT (PyTorch)"
        runtimes["pytorch-fp32"] = (label, loaded.model.eval(), file_size_mb(model_dir))
    int8_info = _int8_info(onnx_int8)
    int8_mode = int8_info.get("mode", "")
    int8_label = (
        f"{int8_info.get('label', '')} QAT (ORT int8)" if int8_mode == "qat" else f"teacher int8 {int8_mode} PTQ (ORT)"
    )
    for key, path, label in (
        ("onnxruntime-fp32", onnx_fp32, "teacher fp32 (ORT)"),
        ("onnxruntime-int8", onnx_int8, int8_label),
    ):
        if key in config.runtimes and path:
            runtimes[key] = (label, OrtModel(path, intra_op_num_threads=threads), file_size_mb(path))

    torch.set_num_threads(threads)
    metrics: dict[str, dict[str, float]] = {}
    scored: dict[str, dict[str, Any]] = {}  # batching facts of each row's metric
    pad = tok.pad_token_id or 0
    if config.evaluate:
        for key, (_, model, _) in runtimes.items():
            predictor = torch_predictor(model) if key == "pytorch-fp32" else model
            dynamic = has_dynamic_activation_quantizers(model) if key == "pytorch-fp32" else model.dynamic_activations
            batching = default_batching(dynamic, config.eval_batch_size)
            metrics[key] = evaluate_predictor(predictor, eval_set, batching=batching, pad_token_id=pad)
            facts: dict[str, Any] = {
                "batching": batching.to_dict(),
                "batching_text": batching.describe(),
                "dynamic_activations": dynamic,
            }
            if config.batchings and key == "onnxruntime-int8":
                extra = [EvalBatching(batch_size=b) for b in config.batchings]
                spread = batching_spread(predictor, eval_set, list(dict.fromkeys([batching, *extra])), pad_token_id=pad)
                facts["batching_spread"] = spread
                advice = spread_advice(spread, dynamic)
                if advice:
                    facts["advice"] = advice
            scored[key] = facts
    feats = eval_set.features[: max(config.batch_sizes)]
    batch = pad_batch(feats, tok.pad_token_id or 0, length=seq_len)
    timings = compare_runtimes(
        {k: v[1] for k, v in runtimes.items()},
        batch,
        seq_len=seq_len,
        threads=threads,
        warmup=config.warmup,
        iters_bs1=config.iters,
        iters_bs32=max(2, config.iters // 5),
        throughput_batch_size=max(config.batch_sizes),
    )
    notes = {
        "pytorch-fp32": "PyTorch eager, torch.inference_mode, fp32"
        + ("" if qat is None else "; weights dequantized from stored codes, activations fake-quantized"),
        "onnxruntime-fp32": "ONNX Runtime CPU, fp32 graph (TorchScript exporter, all graph optimizations)",
        "onnxruntime-int8": f"ONNX Runtime CPU, int8 {int8_mode} post-training quantization"
        if int8_mode != "qat"
        else "ONNX Runtime CPU, QDQ graph of the QAT model: int8 weight codes, dynamic int8 activations "
        "(MatMulIntegerToFloat kernels)",
    }
    rows = []
    for key, (label, _, size) in runtimes.items():
        m = metrics.get(key, {})
        rows.append(
            make_row(
                label,
                key,
                metric_value=m.get("main"),
                timing=timings[key],
                size_mb=size,
                seq_len=seq_len,
                notes=notes.get(key, ""),
                threads=threads,
                metrics=m,
                **scored.get(key, {}),
            )
        )
    report = {
        "benchmark": name,
        "command": f"slimformer benchmark {out_dir}",
        "machine": machine_info(threads),
        "task": task,
        "metric": eval_set.spec.main_metric,
        "eval_split": eval_set.split,
        "eval_examples": len(eval_set.examples),
        "timing": {
            "inputs": f"first {len(feats)} eval examples padded to {seq_len} tokens",
            "warmup": config.warmup,
            "iters_bs1": config.iters,
            "threads": threads,
        },
        "rows": rows,
    }
    js, md = write_report(out_dir, report)
    return {"report_json": str(js), "report_md": str(md), "rows": rows}


def _int8_info(path: PathLike | None) -> dict[str, Any]:
    """The ``slimformer.int8`` metadata of an int8 graph: ``mode`` is ``dynamic`` / ``static`` (PTQ) or ``qat``."""
    if not path:
        return {}
    return json.loads(read_metadata(path).get("slimformer.int8", "{}"))


@register_stage("benchmark", BenchmarkConfig, produces=("report_json",))
def _benchmark(ctx: RunContext, config: BenchmarkConfig) -> dict[str, Any]:
    """The ``benchmark`` recipe stage: every artefact the run produced, report in the run folder."""
    model_dir = ctx.latest("model_dir")
    if model_dir is None:
        raise ConfigError("stage 'benchmark' needs a model_dir from an earlier 'finetune' stage in the recipe")
    return benchmark_artifacts(
        model_dir,
        config,
        onnx_fp32=ctx.latest("onnx_fp32"),
        onnx_int8=ctx.latest("onnx_int8"),
        out_dir=ctx.run_dir,
        name=ctx.recipe.name,
        data_root=ctx.data_root,
    )


def benchmark_target(
    target: PathLike, config: BenchmarkConfig, *, data: str | None = None, data_root: str | None = None
) -> dict[str, Any]:
    """Benchmark a run folder (its ``state.json`` names the artefacts) or a model folder (+ its ``onnx/``)."""
    t = Path(target)
    if (t / "state.json").is_file():
        outputs: dict[str, Any] = {}
        for stage in read_json(t / "state.json").get("stages", []):
            outputs.update(stage.get("outputs", {}))
        model_dir = outputs.get("model_dir")
        fp32, int8 = outputs.get("onnx_fp32"), outputs.get("onnx_int8")
    elif (t / META_FILE).is_file():
        model_dir, onnx_dir = t, t / "onnx"
        fp32 = onnx_dir / FP32_FILE if (onnx_dir / FP32_FILE).is_file() else None
        int8 = onnx_dir / INT8_FILE if (onnx_dir / INT8_FILE).is_file() else None
    else:
        raise ConfigError(f"{t}: neither a run folder (state.json) nor a model folder ({META_FILE})")
    if model_dir is None:
        raise ConfigError(f"{t}: the run has no fine-tuned model yet")
    return benchmark_artifacts(
        model_dir, config, onnx_fp32=fp32, onnx_int8=int8, out_dir=t, name=t.name, data=data, data_root=data_root
    )
