"""The public Python surface: ``finetune``, ``evaluate``, ``export``, ``benchmark``, ``compress``, ``load``.

The CLI calls exactly these functions with the config objects it parsed.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import ValidationError

from slimformer.checkpoint import load_model
from slimformer.errors import ConfigError
from slimformer.models import LoadedModel
from slimformer.recipe import Recipe, load_recipe, run_recipe
from slimformer.stages import RunContext
from slimformer.stages.benchmark import BenchmarkConfig, benchmark_target
from slimformer.stages.evaluate import (
    EvaluateConfig,
    evaluate,  # the public evaluate: a model folder or an .onnx file
    model_meta,
)
from slimformer.stages.export import ExportConfig, export_model
from slimformer.stages.finetune import FinetuneConfig
from slimformer.stages.finetune import finetune as _finetune
from slimformer.stages.search import LengthBudget, apply_budget

__all__ = [
    "finetune",
    "load",
    "evaluate",
    "export",
    "benchmark",
    "compress",
    "model_meta",
    "FinetuneConfig",
    "EvaluateConfig",
    "ExportConfig",
    "BenchmarkConfig",
]

PathLike = str | os.PathLike[str]


def finetune(
    config: FinetuneConfig | None = None,
    out: PathLike = "runs/finetune",
    *,
    data_root: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    **kwargs: Any,
) -> Any:
    """Fine-tune an encoder on a task; see :func:`slimformer.stages.finetune.finetune`.

    ``config`` may be omitted and given as keyword arguments (``finetune(task="sst2", data=..., out=...)``).
    ``overwrite``: replace an existing ``out`` that is not a fine-tuned model folder (refused otherwise).
    """
    cfg = config or FinetuneConfig(**kwargs)
    return _finetune(cfg, out, data_root=data_root, resume=resume, overwrite=overwrite)


def load(path: PathLike) -> LoadedModel:
    """Load a saved slimformer model folder (model, tokenizer, metadata)."""
    return load_model(path)


def export(
    model_dir: PathLike, config: ExportConfig | None = None, *, out: PathLike | None = None, calibration: Any = None
) -> dict[str, Any]:
    """Export a model folder to ONNX (fp32 + parity check), optionally also int8 (:mod:`slimformer.stages.export`)."""
    return export_model(model_dir, config or ExportConfig(), out=out, calibration=calibration)


def benchmark(
    target: PathLike, config: BenchmarkConfig | None = None, *, data: str | None = None, data_root: str | None = None
) -> dict[str, Any]:
    """Benchmark every runtime of a run folder or model folder; writes ``report.json`` and ``report.md``."""
    return benchmark_target(target, config or BenchmarkConfig(), data=data, data_root=data_root)


def compress(
    recipe: PathLike | Recipe,
    *,
    overrides: list[str] | None = None,
    run_dir: PathLike | None = None,
    data_root: str | None = None,
    restart: bool = False,
    rerun_from: str | None = None,
    budget: dict[str, float] | None = None,
) -> RunContext:
    """Run a recipe (YAML path or :class:`Recipe`) into its run folder, resuming completed stages.

    Args:
        restart: rerun every stage; rerun_from: rerun this stage (name or 0-based index) and every later one
            (:func:`~slimformer.recipe.run_recipe`).
        budget: which length configuration the recipe's ``search`` stage picks, one of ``{"max_loss": points}``,
            ``{"budget_ms": ms}``, ``{"max_flops": FLOPs}`` (:class:`~slimformer.stages.search.LengthBudget`);
            it replaces the stage's own choice. Completed earlier stages are reused; the search replays from
            its store.

    Raises:
        ConfigError: a bad recipe or budget; the recipe has no ``search`` stage but a budget was given; an
            impossible budget (raised by the ``search`` stage; earlier stages and the search store are kept);
            ``rerun_from`` names no stage.
    """
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe, overrides)
    if budget is not None:
        try:
            rec = apply_budget(rec, LengthBudget(**budget))
        except ValidationError as e:
            raise ConfigError(f"budget: {e.errors()[0]['msg']} (got {budget})") from None
    return run_recipe(rec, run_dir=run_dir, data_root=data_root, restart=restart, rerun_from=rerun_from)
