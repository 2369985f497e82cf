"""The ``length_benchmark`` recipe stage: the QuaLA report of a searched, exported length-adaptive model.

Recipe use (last, after ``search`` and an ``export`` stage with int8)::

    - search: {max_loss: 1.0}
    - export: {int8: dynamic}
    - length_benchmark: {max_eval_examples: null, iters: 20}

Writes ``report.json`` / ``report.md`` in the run folder (rows in the DESIGN.md results convention) and two
Pareto plots, ``pareto_flops.png`` and ``pareto_latency.png``. Every metric is on the report split (dev), every
timing on ``seq_len`` real tokens (no padding; :func:`~slimformer.export.length_ort.full_length_batch`) with the same
pinned threads, interleaved (:func:`~slimformer.bench.latency.compare_runtimes`). Rows:

* ``teacher fp32`` (PyTorch) and ``teacher int8 ... (ORT)``: the fine-tuned teacher (the distill stage's);
* ``student int8 ..., no LengthDrop (full length)``: the model the ``length`` stage started from;
* ``QuaLA student int8 ..., length config (...)``: the exported pick, its configuration fed as graph inputs.

``front`` holds every search-front configuration re-scored on the int8 graph (METHODS.md §2(f) pitfall 2; when the
export is a pick graph, ``length_graph: pick``, on an every-layer int8 export of the same model instead) and,
as "plain truncation", the same configurations on the model without LengthDrop; ``lengthdrop_vs_truncation``
summarises whether the LengthDrop training dominates; ``rank_correlation_search_dev`` is Spearman's rho between the
front's search-split and report-split metrics (does the search split rank configurations as dev does?).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from slimformer.bench.latency import compare_runtimes
from slimformer.bench.machine import file_size_mb, machine_info, physical_cores
from slimformer.bench.report import make_row, write_report
from slimformer.checkpoint import load_model
from slimformer.config import StageConfig, resolve_data_path
from slimformer.errors import ConfigError
from slimformer.evaluate import EvalBatching, evaluate_predictor, torch_predictor
from slimformer.export.length_ort import LengthOrtModel, full_length_batch
from slimformer.export.ort import OrtModel
from slimformer.io import read_json
from slimformer.length.flops import EncoderDims, config_flops
from slimformer.length.selection import gene_config
from slimformer.stages import _length_report as rep
from slimformer.stages._length_artifacts import export_length_int8
from slimformer.stages.base import RunContext, register_stage
from slimformer.stages.export import ExportConfig, export_model
from slimformer.stages.quantize import QuantizeConfig, quantize_model
from slimformer.tasks.data import load_eval_set

__all__ = ["LengthBenchmarkConfig", "run_length_benchmark"]


class LengthBenchmarkConfig(StageConfig):
    """Report of a length-adaptive run: reference rows, the pick's timings, Pareto plots."""

    teacher: str | None = Field(None, description="teacher folder (default: the one the distill stage recorded)")
    student: str | None = Field(None, description="model without LengthDrop (default: the length stage's input)")
    int8: Literal["dynamic", "static"] | None = Field(None, description="int8 PTQ of the references (default: pick's)")
    calibration_examples: int = Field(256, ge=1, description="static int8: calibration examples")
    max_eval_examples: int | None = Field(None, ge=1, description="cap on report-split examples (None: all)")
    eval_batch_size: int = Field(
        64,
        ge=1,
        description="inputs per evaluation batch (length-sorted, padded to the longest) for every row and front "
        "point; stated in the report. Dynamic int8 figures move with it (the evaluate stage scores at 1)",
    )
    truncation: bool = Field(True, description="also score the front's configurations without LengthDrop")
    warmup: int = Field(3, ge=0)
    iters: int = Field(20, ge=1, description="timed batch-1 calls per round (medians reported)")
    iters_bs32: int = Field(4, ge=1, description="timed batch-32 calls per round")
    rounds: int = Field(3, ge=1, description="interleaved timing rounds (samples pooled)")
    min_time_s: float = Field(0.5, ge=0, description="least seconds of timed calls per runtime, batch size, round")
    threads: int | None = Field(None, ge=1, description="threads for every runtime (default: physical cores)")


def run_length_benchmark(
    config: LengthBenchmarkConfig,
    *,
    front_json: str,
    onnx_int8: str | None,
    student: str | None,
    data: str,
    run_dir: Path,
    name: str,
    data_root: str | None = None,
) -> dict[str, Any]:
    """Measure and write the report (see the module notes).

    Returns:
        ``{"report_json", "report_md", "rows", "plots", "lengthdrop_vs_truncation", "rank_correlation_search_dev"}``.

    Raises:
        ConfigError: the int8 graph is not the exported pick, no teacher is known. ExportError, DataError.
    """
    import torch

    front = read_json(front_json)
    n, form = front["seq_len"], front["gene_form"]
    gene = front["selected"]["length_config"]
    chosen = gene_config(gene, form, n)
    rep.check_pick_graph(onnx_int8, chosen)
    searched = load_model(front["searched_model"])
    meta, tok = searched.meta, searched.tokenizer
    teacher_dir = config.teacher or (meta.stage("distill") or {}).get("teacher")
    if not teacher_dir and meta.stage("distill") is None and meta.teacher_source == "hf-folder":
        teacher_dir = front["searched_model"]  # no distillation: the searched model is the user's teacher itself
    if not teacher_dir:
        raise ConfigError("length_benchmark: set teacher: <folder> (no distill stage recorded a teacher)")
    plain_dir = config.student or student
    mode = config.int8 or rep.int8_mode(onnx_int8)
    threads = config.threads or physical_cores()
    torch.set_num_threads(threads)
    work = run_dir / "length_benchmark"
    quant = QuantizeConfig(mode=mode, calibration_examples=config.calibration_examples)
    teacher = load_model(teacher_dir)
    t_fp32 = export_model(teacher_dir, ExportConfig(), out=work / "teacher-onnx")["onnx_fp32"]
    t_int8 = quantize_model(t_fp32, quant, data_root=data_root)["onnx_int8"]
    sessions: dict[str, Any] = {
        "teacher fp32": teacher.model.eval(),
        f"teacher int8 {mode} PTQ (ORT)": OrtModel(t_int8, intra_op_num_threads=threads),
    }
    plain = None
    if plain_dir:
        _, s_int8 = export_length_int8(
            plain_dir,
            work / "student-onnx",
            mode=mode,
            calibration_examples=config.calibration_examples,
            data_root=data_root,
        )
        plain = LengthOrtModel(s_int8, None, intra_op_num_threads=threads)
        sessions[f"student int8 {mode} PTQ, no LengthDrop (full length)"] = plain
    pick_name = f"QuaLA student int8 {mode} PTQ, length config {tuple(gene)}" + (
        " as ratios" if form == "ratios" else ""
    )
    pick = LengthOrtModel(onnx_int8, chosen, intra_op_num_threads=threads)
    sessions[pick_name] = pick
    front_graph, front_model = onnx_int8, pick
    if pick.select_layers is not None:  # exported for the pick only (length_graph: pick): the front needs every layer
        _, front_graph = export_length_int8(
            front["searched_model"],
            work / "front-onnx",
            mode=mode,
            calibration_examples=config.calibration_examples,
            data_root=data_root,
        )
        front_model = LengthOrtModel(front_graph, chosen, intra_op_num_threads=threads)

    ft = meta.origin() or {}
    eval_set = load_eval_set(
        front["task"],
        resolve_data_path(data, data_root),
        tok,
        max_seq_length=meta.max_seq_length,
        max_examples=config.max_eval_examples,
        squad_split=ft.get("squad_split", "dev-article-split"),
        doc_stride=ft.get("doc_stride", 128),
    )
    pad = tok.pad_token_id or 0
    batching = EvalBatching(batch_size=config.eval_batch_size)
    metrics = {
        key: evaluate_predictor(
            torch_predictor(m) if key == "teacher fp32" else m,
            eval_set,
            batch_size=config.eval_batch_size,
            pad_token_id=pad,
            progress=False,
        )
        for key, m in sessions.items()
    }
    front_rows = rep.rescore_front(
        front["front"],
        front_model,
        plain if config.truncation else None,
        eval_set,
        to_config=lambda g: gene_config(g, form, n),
        pad_token_id=pad,
        batch_size=config.eval_batch_size,
    )
    # every front configuration is timed with the references, interleaved (one session each, same graph)
    front_names = {tuple(g): f"front {tuple(g)}" for g in (r["length_config"] for r in front_rows)}
    front_names[tuple(gene)] = pick_name
    front_sessions = {
        name: LengthOrtModel(front_graph, gene_config(g, form, n), intra_op_num_threads=threads)
        for g, name in front_names.items()
        if name != pick_name
    }
    timings = compare_runtimes(
        {**sessions, **front_sessions},
        full_length_batch(searched.model.config.vocab_size, n, 32),
        seq_len=n,
        threads=threads,
        warmup=config.warmup,
        iters_bs1=config.iters,
        iters_bs32=config.iters_bs32,
        rounds=config.rounds,
        min_time_s=config.min_time_s,
    )
    t_dims, s_dims = EncoderDims.from_model(teacher.model), EncoderDims.from_model(searched.model)
    info = {
        "teacher fp32": (
            "pytorch-fp32",
            config_flops(None, n, t_dims),
            None,
            file_size_mb(teacher_dir),
            "PyTorch eager fp32, full length",
        ),
        f"teacher int8 {mode} PTQ (ORT)": (
            "onnxruntime-int8",
            config_flops(None, n, t_dims),
            None,
            file_size_mb(t_int8),
            f"ONNX Runtime int8 {mode} PTQ, full length",
        ),
        pick_name: (
            "onnxruntime-int8",
            config_flops(chosen, n, s_dims),
            list(gene),
            file_size_mb(onnx_int8),
            f"the exported pick; length inputs fed; search metric "
            f"{front['selected']['metric']:.4g} on the search split; selected by {front['selected']['selected_by']}",
        ),
    }
    if plain is not None:
        info[f"student int8 {mode} PTQ, no LengthDrop (full length)"] = (
            "onnxruntime-int8",
            config_flops(None, n, s_dims),
            None,
            file_size_mb(plain.path),
            f"{plain_dir} (no LengthDrop training), full length",
        )
    rows = []
    for key in sessions:
        runtime, flops, lengths, size, notes = info[key]
        rows.append(
            make_row(
                key,
                runtime,
                metric_value=metrics[key]["main"],
                timing=timings[key],
                size_mb=size,
                seq_len=n,
                notes=notes,
                flops=flops,
                length_config=lengths,
                length_form=form if lengths else None,
                threads=threads,
                metrics=metrics[key],
                batching=batching.to_dict(),
                batching_text=batching.describe(),
            )
        )
    for r in front_rows:
        t = timings[front_names[tuple(r["length_config"])]]
        r.update(latency_ms_bs1=round(t.latency_ms_bs1, 3), throughput_bs32=round(t.throughput_bs32, 2))
    refs = {r["name"]: r for r in rows}
    metric_label = f"{eval_set.spec.main_metric} ({eval_set.split} split)"
    plots = rep.plot_report(run_dir, refs, front_rows, metric_label=metric_label, seq_len=n)
    summary = rep.truncation_summary(front_rows)
    ranking = rep.rank_correlation_search_dev(front_rows)
    report = {
        "benchmark": name,
        "command": f"slimformer compress recipes/{name}.yaml",
        "machine": machine_info(threads),
        "task": front["task"],
        "metric": eval_set.spec.main_metric,
        "eval_split": eval_set.split,
        "eval_examples": len(eval_set.examples),
        "eval_batching": batching.to_dict(),
        "search_split": front["search_split"],
        "selected": front["selected"],
        "timing": {
            "inputs": f"{n} real tokens per sequence (random ids, no padding)",
            "threads": threads,
            "warmup": config.warmup,
            "iters_bs1": config.iters,
            "iters_bs32": config.iters_bs32,
        },
        "rows": rows,
        "front": front_rows,
        "lengthdrop_vs_truncation": summary,
        "rank_correlation_search_dev": ranking,
        "plots": plots,
    }
    js, md = write_report(run_dir, report)
    return {
        "report_json": str(js),
        "report_md": str(md),
        "rows": rows,
        "plots": plots,
        "lengthdrop_vs_truncation": summary,
        "rank_correlation_search_dev": ranking,
    }


def _model_before_length(ctx: RunContext) -> str | None:
    """The ``model_dir`` the ``length`` stage started from (the latest one output before it)."""
    before = None
    for name, out in ctx.history:
        if name == "length":
            return before
        before = out.get("model_dir", before)
    return None


@register_stage("length_benchmark", LengthBenchmarkConfig, needs=("front_json",), produces=("report_json",))
def _length_benchmark(ctx: RunContext, cfg: LengthBenchmarkConfig) -> dict[str, Any]:
    front_json = ctx.latest("front_json")
    if front_json is None:
        raise ConfigError("stage 'length_benchmark' needs a front_json from an earlier 'search' stage in the recipe")
    data = next(o["data"] for _, o in ctx.earlier() if "front_json" in o)
    return run_length_benchmark(
        cfg,
        front_json=front_json,
        onnx_int8=ctx.latest("onnx_int8"),
        student=_model_before_length(ctx),
        data=data,
        run_dir=ctx.run_dir,
        name=ctx.recipe.name,
        data_root=ctx.data_root,
    )
