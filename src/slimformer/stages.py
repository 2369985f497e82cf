"""The built-in recipe stages, registered with :func:`slimformer.recipe.register_stage`.

Each handler reads its inputs from earlier stages' outputs (``ctx.latest("model_dir")`` ...), writes into
``<run_dir>/<stage>`` and returns its outputs (paths and figures), which ``state.json`` records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slimformer.config import (
    PREVIOUS_MODEL,
    BenchmarkConfig,
    EvaluateConfig,
    ExportConfig,
    FinetuneConfig,
    QuantizeConfig,
)
from slimformer.errors import ConfigError
from slimformer.io import atomic_write_json, read_json
from slimformer.recipe import RunContext, register_stage

__all__: list[str] = []


def _require(ctx: RunContext, key: str, stage: str, producer: str) -> Any:
    value = ctx.latest(key)
    if value is None:
        raise ConfigError(f"stage {stage!r} needs a {key} from an earlier {producer!r} stage in the recipe")
    return value


def _reusable_model(out: Path, cfg: FinetuneConfig) -> dict[str, Any] | None:
    """The metrics of a model already fine-tuned into ``out`` with exactly ``cfg``, else None."""
    meta_path, results = out / "slimformer.json", out / "eval_results.json"
    if not (meta_path.is_file() and results.is_file() and (out / "model.safetensors").is_file()):
        return None
    applied = read_json(meta_path).get("applied", [])
    done = next((a for a in applied if a.get("stage") == "finetune"), {})
    recorded = {k: v for k, v in done.items() if k not in ("stage", "train_examples")}
    if recorded != cfg.model_dump(mode="json"):
        return None
    return read_json(results)["metrics"]


@register_stage("finetune", FinetuneConfig, inherits=("model", "task", "data", "seed"))
def _finetune(ctx: RunContext, cfg: FinetuneConfig) -> dict[str, Any]:
    from slimformer.train.finetune import finetune

    out = ctx.stage_dir("finetune")
    if cfg.model == PREVIOUS_MODEL:  # e.g. after an `embeddings` stage: fine-tune the model it wrote
        cfg = cfg.model_copy(update={"model": _require(ctx, "model_dir", "finetune (model: previous)", "embeddings")})
    metrics = _reusable_model(out, cfg)
    if metrics is None:  # resume=True: an interrupted earlier attempt continues from its last checkpoint
        metrics = finetune(cfg, out, data_root=ctx.data_root, resume=True).metrics
    return {"model_dir": str(out), "metrics": metrics, "task": cfg.task, "data": cfg.data}


@register_stage("evaluate", EvaluateConfig)
def _evaluate(ctx: RunContext, cfg: EvaluateConfig) -> dict[str, Any]:
    from slimformer.api import evaluate

    model_dir = _require(ctx, "model_dir", "evaluate", "finetune")
    metrics = evaluate(model_dir, config=cfg, data_root=ctx.data_root)
    out = ctx.stage_dir("evaluate")
    atomic_write_json(out / "metrics.json", {"model": model_dir, "split": cfg.split, "metrics": metrics})
    return {"metrics": metrics, "split": cfg.split}


@register_stage("export", ExportConfig)
def _export(ctx: RunContext, cfg: ExportConfig) -> dict[str, Any]:
    from slimformer.pipeline import export_model

    model_dir = _require(ctx, "model_dir", "export", "finetune")
    return export_model(model_dir, cfg, out=ctx.stage_dir("export"), data_root=ctx.data_root)


@register_stage("quantize", QuantizeConfig)
def _quantize(ctx: RunContext, cfg: QuantizeConfig) -> dict[str, Any]:
    from slimformer.pipeline import quantize_model

    onnx_fp32 = _require(ctx, "onnx_fp32", "quantize", "export")
    return quantize_model(onnx_fp32, cfg, data_root=ctx.data_root)


@register_stage("benchmark", BenchmarkConfig)
def _benchmark(ctx: RunContext, cfg: BenchmarkConfig) -> dict[str, Any]:
    from slimformer.pipeline import benchmark_run

    return benchmark_run(ctx, cfg)
