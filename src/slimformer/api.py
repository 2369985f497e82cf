"""The public Python surface: ``finetune``, ``evaluate``, ``export``, ``benchmark``, ``compress``, ``load``.

The CLI calls exactly these functions with the config objects it parsed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from slimformer import dist
from slimformer.autorecipe import VARIANTS
from slimformer.autorecipe import new_recipe as _new_recipe
from slimformer.checkpoint import load_model
from slimformer.errors import ConfigError
from slimformer.io import atomic_write_json, atomic_write_text
from slimformer.models import LoadedModel
from slimformer.recipe import Recipe, load_recipe, parse_recipe, plan_recipe, run_recipe
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
    "plan",
    "model_meta",
    "new_recipe",
    "write_recipe",
    "compress_user",
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


def new_recipe(**kwargs: Any) -> dict[str, Any]:
    """The recipe compressing the user's model on their data; see :func:`slimformer.autorecipe.new_recipe`."""
    return _new_recipe(**kwargs)


def write_recipe(raw: dict[str, Any], path: PathLike) -> Path:
    """Write a raw recipe as YAML (atomically), after checking it parses (:func:`~slimformer.recipe.parse_recipe`).

    Raises:
        ConfigError: the recipe does not validate (nothing is written then).
    """
    parse_recipe(raw, str(path))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return out


def compress_user(
    *,
    model: str,
    files: Any,
    name: str | None = None,
    main_metric: str | None = None,
    max_loss: float = 1.0,
    run_dir: PathLike | None = None,
    data_root: str | None = None,
    overrides: list[str] | None = None,
    variants: tuple[str, ...] | None = None,
    log: Any = print,
) -> RunContext:
    """Compress the user's model on their data with the one-command recipe, falling back in a stated order.

    Each variant of :data:`slimformer.autorecipe.VARIANTS` (half-depth student, two-thirds-depth student, the
    teacher's own depth) is a recipe written to ``<run_dir>/<variant>/recipe.yaml`` and run there. When its search
    finds no configuration within ``max_loss`` of the teacher (on held-out training data), the next is tried;
    ``<run_dir>/variants.json`` records what was tried and what each reached. A pick outside the asked loss is never
    reported as within it.

    Returns:
        The :class:`RunContext` of the first variant that met ``max_loss``.

    Raises:
        ConfigError: bad data or model; no variant met ``max_loss`` (names what each reached).
    """
    tried: list[dict[str, Any]] = []
    root: Path | None = None
    for variant in variants or VARIANTS:
        raw = _new_recipe(
            model=model, files=files, name=name, main_metric=main_metric, max_loss=max_loss, variant=variant
        )
        root = Path(run_dir) if run_dir is not None else Path("runs") / raw["name"].rsplit("-", 1)[0]
        folder = root / variant
        recipe = dist.on_main(lambda raw=raw, folder=folder: write_recipe(raw, folder / "recipe.yaml"))
        log(f"[{variant}] recipe: {recipe} (edit and rerun: slimformer compress {recipe} --run-dir {folder})")
        try:
            ctx = compress(recipe, overrides=overrides, run_dir=folder, data_root=data_root)
        except ConfigError as e:
            if "no point reaches metric" not in str(e):
                raise
            tried.append({"variant": variant, "run_dir": str(folder), "met_max_loss": False, "reason": str(e)})
            if dist.is_main():
                atomic_write_json(root / "variants.json", {"max_loss": max_loss, "tried": tried})
            log(f"[{variant}] not within --max-loss {max_loss}: {e}; trying the next variant")
            continue
        selected = (ctx.output_of("search") or {}).get("selected", {})
        tried.append({"variant": variant, "run_dir": str(folder), "met_max_loss": True, "selected": selected})
        if dist.is_main():
            atomic_write_json(root / "variants.json", {"max_loss": max_loss, "tried": tried, "chosen": variant})
        return ctx
    summary = "; ".join(f"{t['variant']}: {t['reason']}" for t in tried)
    raise ConfigError(f"no variant met --max-loss {max_loss} ({summary})")


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

    Every stage is checked against the task, the data and the earlier stages before the first one runs
    (:func:`~slimformer.recipe.validate_plan`); :func:`plan` shows the same checked plan without running it.

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
    rec = _budgeted(recipe, overrides, data_root, budget)
    return run_recipe(rec, run_dir=run_dir, data_root=data_root, restart=restart, rerun_from=rerun_from)


def plan(
    recipe: PathLike | Recipe | dict[str, Any],
    *,
    overrides: list[str] | None = None,
    run_dir: PathLike | None = None,
    data_root: str | None = None,
    restart: bool = False,
    rerun_from: str | None = None,
    budget: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """The checked plan :func:`compress` would run with the same arguments, without running or writing anything
    (``compress --dry-run``): per stage ``{stage, action, needs, produces, config}``
    (:func:`~slimformer.recipe.plan_recipe`). ``recipe`` may also be a raw recipe mapping.

    Raises:
        ConfigError, DataError: what :func:`compress` would raise before its first stage.
    """
    if isinstance(recipe, dict):
        recipe = parse_recipe(recipe, "<recipe>", data_root=data_root)
    rec = _budgeted(recipe, overrides, data_root, budget)
    return plan_recipe(rec, run_dir=run_dir, data_root=data_root, restart=restart, rerun_from=rerun_from)


def _budgeted(
    recipe: PathLike | Recipe, overrides: list[str] | None, data_root: str | None, budget: dict[str, float] | None
) -> Recipe:
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe, overrides, data_root=data_root)
    if budget is not None:
        try:
            rec = apply_budget(rec, LengthBudget(**budget))
        except ValidationError as e:
            raise ConfigError(f"budget: {e.errors()[0]['msg']} (got {budget})") from None
    return rec
