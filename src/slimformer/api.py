"""The public Python surface: ``finetune``, ``evaluate``, ``export``, ``benchmark``, ``compress``, ``load``.

The CLI calls exactly these functions with the config objects it parsed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from slimformer.config import BenchmarkConfig, EvaluateConfig, ExportConfig, FinetuneConfig, resolve_data_path
from slimformer.errors import ConfigError, ModelLoadError
from slimformer.io import read_json
from slimformer.models import LoadedModel, ModelMeta, load_model
from slimformer.models.load import META_FILE
from slimformer.recipe import Recipe, RunContext, load_recipe, run_recipe

__all__ = ["finetune", "load", "evaluate", "export", "benchmark", "compress", "model_meta"]

PathLike = str | os.PathLike[str]


def finetune(
    config: FinetuneConfig | None = None,
    out: PathLike = "runs/finetune",
    *,
    data_root: str | None = None,
    resume: bool = False,
    **kwargs: Any,
) -> Any:
    """Fine-tune an encoder on a task; see :func:`slimformer.train.finetune.finetune`.

    ``config`` may be omitted and given as keyword arguments (``finetune(task="sst2", data=..., out=...)``).
    """
    from slimformer.train.finetune import finetune as _finetune

    cfg = config or FinetuneConfig(**kwargs)
    return _finetune(cfg, out, data_root=data_root, resume=resume)


def load(path: PathLike) -> LoadedModel:
    """Load a saved slimformer model folder (model, tokenizer, metadata)."""
    return load_model(path)


def model_meta(path: PathLike) -> ModelMeta:
    """The ``slimformer.json`` of a model folder, or of the folder holding an ONNX file."""
    p = Path(path)
    folder = p.parent if p.is_file() else p
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise ModelLoadError(f"{folder}: no {META_FILE}; not a slimformer model or export folder")
    return ModelMeta.from_dict(read_json(meta_path), str(meta_path))


def _task_and_data(meta: ModelMeta, task: str | None, data: str | None) -> tuple[str, str]:
    finetuned = meta.stage("finetune") or {}
    task = task or meta.task
    data = data or finetuned.get("data")
    if not task:
        raise ConfigError("--task is required: the model's slimformer.json names no task")
    if not data:
        raise ConfigError("--data is required: the model's slimformer.json records no training data")
    return task, data


def evaluate(
    model: PathLike,
    *,
    task: str | None = None,
    data: str | None = None,
    config: EvaluateConfig | None = None,
    data_root: str | None = None,
    squad_split: str | None = None,
) -> dict[str, float]:
    """Evaluate a model folder (PyTorch) or an ``.onnx`` file (ONNX Runtime) with the task's official metric.

    Returns:
        ``{metric: value, "main": value}``: fractions for GLUE, points for SQuAD EM/F1.

    Raises:
        ConfigError, DataError, ModelLoadError: one-line messages naming the bad value or file.
    """
    from transformers import AutoTokenizer

    from slimformer.evaluate import evaluate_predictor, torch_predictor
    from slimformer.train.data import load_eval_set

    cfg = config or EvaluateConfig()
    p = Path(model)
    loaded = None if p.suffix == ".onnx" else load_model(p)  # checks the folder and its weights first
    meta = loaded.meta if loaded is not None else model_meta(p)
    task, data = _task_and_data(meta, task, data)
    finetuned = meta.stage("finetune") or {}
    split_name = squad_split or finetuned.get("squad_split", "dev-article-split")
    _set_threads(cfg.threads)
    if p.suffix == ".onnx":
        from slimformer.export.ort import OrtModel

        tok = AutoTokenizer.from_pretrained(str(p.parent), local_files_only=True)
        predictor = OrtModel(p, intra_op_num_threads=cfg.threads)
    else:
        assert loaded is not None
        tok, predictor = loaded.tokenizer, torch_predictor(loaded.model)
    eval_set = load_eval_set(
        task,
        resolve_data_path(data, data_root),
        tok,
        split=cfg.split,
        max_seq_length=meta.max_seq_length,
        max_examples=cfg.max_examples,
        squad_split=split_name,
    )
    return evaluate_predictor(predictor, eval_set, batch_size=cfg.batch_size, pad_token_id=tok.pad_token_id or 0)


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def export(
    model_dir: PathLike, config: ExportConfig | None = None, *, out: PathLike | None = None, calibration: Any = None
) -> dict[str, Any]:
    """Export a model folder to ONNX (fp32 + parity check), optionally also int8; see :mod:`slimformer.pipeline`."""
    from slimformer.pipeline import export_model

    return export_model(model_dir, config or ExportConfig(), out=out, calibration=calibration)


def benchmark(
    target: PathLike, config: BenchmarkConfig | None = None, *, data: str | None = None, data_root: str | None = None
) -> dict[str, Any]:
    """Benchmark every runtime of a run folder or model folder; writes ``report.json`` and ``report.md``."""
    from slimformer.pipeline import benchmark_target

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
            ``{"budget_ms": ms}``, ``{"max_flops": FLOPs}`` (:class:`~slimformer.length.search_stage.LengthBudget`);
            it replaces the stage's own choice. Completed earlier stages are reused; the search replays from
            its store.

    Raises:
        ConfigError: a bad recipe or budget; the recipe has no ``search`` stage but a budget was given; an
            impossible budget (raised by the ``search`` stage; earlier stages and the search store are kept);
            ``rerun_from`` names no stage.
    """
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe, overrides)
    if budget is not None:
        from slimformer.length.search_stage import LengthBudget, apply_budget

        try:
            rec = apply_budget(rec, LengthBudget(**budget))
        except ValidationError as e:
            raise ConfigError(f"budget: {e.errors()[0]['msg']} (got {budget})") from None
    return run_recipe(rec, run_dir=run_dir, data_root=data_root, restart=restart, rerun_from=rerun_from)
