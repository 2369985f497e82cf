"""Export, int8 quantization and benchmarking of a fine-tuned model folder, as used by the CLI and recipes.

An export folder is a deployable artefact: ``model.onnx`` (fp32), optionally ``model.int8.onnx``, the
tokenizer files and ``slimformer.json`` (the model's metadata plus the export / quantize steps applied).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from slimformer.config import BenchmarkConfig, ExportConfig, QuantizeConfig, resolve_data_path
from slimformer.errors import ConfigError
from slimformer.io import atomic_write_json, read_json
from slimformer.length.config import load_length_config, save_length_config
from slimformer.models import ModelMeta, load_model
from slimformer.models.load import META_FILE

__all__ = ["export_model", "quantize_model", "benchmark_artifacts", "benchmark_run", "benchmark_target"]

PathLike = str | os.PathLike[str]
FP32_FILE, INT8_FILE = "model.onnx", "model.int8.onnx"


def _meta_of(folder: Path) -> ModelMeta:
    return ModelMeta.from_dict(read_json(folder / META_FILE), str(folder / META_FILE))


def _training_data(meta: ModelMeta) -> tuple[str, str, dict[str, Any]]:
    ft = meta.stage("finetune")
    if ft is None or not meta.task:
        raise ConfigError("the model's slimformer.json records no fine-tuning (task and data are needed)")
    return meta.task, ft["data"], ft


def export_model(
    model_dir: PathLike,
    config: ExportConfig,
    *,
    out: PathLike | None = None,
    data_root: str | None = None,
    calibration: Any = None,
) -> dict[str, Any]:
    """Export ``model_dir`` to ``out/model.onnx`` (fp32), check it against PyTorch, and copy tokenizer + metadata.

    A length-adaptive model (its folder has ``length_config.json``) is exported with
    :func:`slimformer.length.export.export_length_onnx`: the length configuration is a graph input whose default is
    the saved configuration (copied to ``out``).

    Returns:
        ``{"export_dir", "onnx_fp32", "max_abs_diff", "size_mb"}`` (+ int8 outputs when ``config.int8`` is set).

    Raises:
        ExportError: ONNX Runtime and PyTorch differ by more than ``config.atol`` (nothing is written then).
    """
    from slimformer.bench.machine import file_size_mb
    from slimformer.export import export_onnx, validate_outputs
    from slimformer.export.qdq import quantization_summary

    loaded = load_model(model_dir)
    out_dir = Path(out) if out else Path(model_dir) / "onnx"
    summary = quantization_summary(loaded.model)
    if summary is not None:
        return _export_quantized(loaded, config, out_dir, summary)
    out_dir.mkdir(parents=True, exist_ok=True)
    length_config = load_length_config(model_dir)
    if length_config is None:
        fp32 = export_onnx(loaded.model, out_dir / FP32_FILE, opset=config.opset, atol=config.atol)
        diff = validate_outputs(loaded.model, fp32, atol=config.atol)
    else:  # a length-adaptive model: the configuration is a graph input, the saved one its default
        from slimformer.length.export import export_length_onnx, validate_length_outputs

        fp32 = out_dir / FP32_FILE
        export_length_onnx(loaded.model, fp32, length_config, opset=config.opset, atol=config.atol)
        diff = validate_length_outputs(loaded.model, fp32, [length_config], atol=config.atol)
        save_length_config(length_config, out_dir)
    loaded.tokenizer.save_pretrained(out_dir)
    meta = loaded.meta
    meta.applied.append({"stage": "export", **config.model_dump(mode="json"), "max_abs_diff": diff})
    atomic_write_json(out_dir / META_FILE, asdict(meta))
    result: dict[str, Any] = {
        "export_dir": str(out_dir),
        "onnx_fp32": str(fp32),
        "max_abs_diff": diff,
        "size_mb": file_size_mb(fp32),
    }
    if config.int8 != "none":
        result.update(quantize_model(fp32, QuantizeConfig(mode=config.int8), data_root=data_root))
    return result


def _export_quantized(loaded: Any, config: ExportConfig, out_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """A quantized (QAT-converted) model: one QDQ graph with int8 weight codes, ``model.int8.onnx``."""
    from slimformer.bench.machine import file_size_mb
    from slimformer.export import export_onnx, validate_outputs

    if config.int8 != "none":
        raise ConfigError(
            f"{loaded.path}: the model is already quantized ({summary['label']}); int8: {config.int8} (ONNX Runtime "
            "PTQ) applies to fp32 models only, expected int8: none"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = export_onnx(loaded.model, out_dir / INT8_FILE, opset=config.opset, atol=config.qat_atol)
    diff = validate_outputs(loaded.model, path, atol=config.qat_atol)
    loaded.tokenizer.save_pretrained(out_dir)
    meta = loaded.meta
    meta.applied.append(
        {"stage": "export", **config.model_dump(mode="json"), "max_abs_diff": diff, "quantization": summary}
    )
    atomic_write_json(out_dir / META_FILE, asdict(meta))
    return {
        "export_dir": str(out_dir),
        "onnx_int8": str(path),
        "max_abs_diff": diff,
        "size_mb": file_size_mb(path),
        "quantization": summary,
    }


def _calibration_batches(folder: Path, n: int, data_root: str | None) -> list[dict[str, Any]]:
    """``n`` real training examples of the model's task, padded per batch of 32 (static int8 calibration)."""
    from transformers import AutoTokenizer

    from slimformer.evaluate import pad_batch
    from slimformer.train.data import load_train_features

    meta = _meta_of(folder)
    task, data, ft = _training_data(meta)
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    feats = load_train_features(
        task,
        resolve_data_path(data, data_root),
        tok,
        max_seq_length=meta.max_seq_length,
        max_examples=n,
        seed=ft.get("seed", 42),
        squad_split=ft.get("squad_split", "dev-article-split"),
    ).features[:n]
    return [pad_batch(feats[i : i + 32], tok.pad_token_id or 0) for i in range(0, len(feats), 32)]


def quantize_model(onnx_fp32: PathLike, config: QuantizeConfig, *, data_root: str | None = None) -> dict[str, Any]:
    """int8 post-training quantization (ONNX Runtime) of an exported fp32 graph, next to it as ``model.int8.onnx``.

    Static mode calibrates on ``config.calibration_examples`` training examples of the model's task.

    Returns:
        ``{"onnx_int8", "int8": <config dict>, "size_mb"}``.
    """
    from slimformer.bench.machine import file_size_mb
    from slimformer.export import Int8Config, quantize_int8

    fp32 = Path(onnx_fp32)
    kw = {"per_channel": config.per_channel, "calibration_examples": config.calibration_examples}
    int8_cfg = (
        Int8Config.static(**kw) if config.mode == "static" else Int8Config.dynamic(per_channel=config.per_channel)
    )
    batches = (
        _calibration_batches(fp32.parent, config.calibration_examples, data_root) if config.mode == "static" else None
    )
    out = quantize_int8(fp32, fp32.parent / INT8_FILE, int8_cfg, batches)
    meta = _meta_of(fp32.parent)
    meta.applied.append({"stage": "quantize", **config.model_dump(mode="json"), "int8": int8_cfg.to_dict()})
    atomic_write_json(fp32.parent / META_FILE, asdict(meta))
    return {"onnx_int8": str(out), "int8": int8_cfg.to_dict(), "size_mb": file_size_mb(out)}


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
    from slimformer.bench.latency import compare_runtimes
    from slimformer.bench.machine import file_size_mb, machine_info, physical_cores
    from slimformer.bench.report import make_row, write_report
    from slimformer.evaluate import evaluate_predictor, pad_batch, torch_predictor
    from slimformer.train.data import load_eval_set

    loaded = load_model(model_dir)
    meta, tok = loaded.meta, loaded.tokenizer
    task, trained_on, ft = _training_data(meta)
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
    from slimformer.export.qdq import quantization_summary

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
            from slimformer.export import OrtModel

            runtimes[key] = (label, OrtModel(path, intra_op_num_threads=threads), file_size_mb(path))

    import torch

    torch.set_num_threads(threads)
    metrics: dict[str, dict[str, float]] = {}
    if config.evaluate:
        for key, (_, model, _) in runtimes.items():
            predictor = torch_predictor(model) if key == "pytorch-fp32" else model
            metrics[key] = evaluate_predictor(predictor, eval_set, pad_token_id=tok.pad_token_id or 0)
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
    import json

    from slimformer.export._proto import read_metadata

    return json.loads(read_metadata(path).get("slimformer.int8", "{}"))


def benchmark_run(ctx: Any, config: BenchmarkConfig) -> dict[str, Any]:
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
