"""The ``evaluate`` stage: a model folder (PyTorch) or an ``.onnx`` file (ONNX Runtime) scored with the task's
official metric on an eval split."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field

from slimformer.checkpoint import load_model, read_meta
from slimformer.config import StageConfig, resolve_data_path
from slimformer.errors import ConfigError, ModelLoadError
from slimformer.evaluate import (
    check_head_for_task,
    check_labelled,
    check_model_for_task,
    evaluate_predictor,
    torch_predictor,
)
from slimformer.export.ort import OrtModel
from slimformer.io import atomic_write_json
from slimformer.models import ModelMeta
from slimformer.models.load import check_tokenizer_files, load_tokenizer
from slimformer.stages.base import RunContext, register_stage, require
from slimformer.tasks import get_task
from slimformer.tasks.data import load_eval_set

__all__ = ["EvaluateConfig", "evaluate", "model_meta"]

PathLike = str | os.PathLike[str]


class EvaluateConfig(StageConfig):
    """Evaluate a model (PyTorch folder or ONNX file) on a task split with the official metric."""

    split: str = Field(
        "dev", description="split name: dev (GLUE; MNLI dev_matched), dev_mismatched, or the SQuAD eval part"
    )
    batch_size: int = Field(64, ge=1)
    max_examples: int | None = Field(None, ge=1)
    threads: int | None = Field(None, ge=1)


def model_meta(path: PathLike) -> ModelMeta:
    """The ``slimformer.json`` of a model folder, or of the folder holding an ONNX file."""
    p = Path(path)
    return read_meta(p.parent if p.is_file() else p)


def _onnx_num_labels(session: Any) -> int | None:
    """The static width of an ONNX graph's ``logits`` output (``None``: no such output or a dynamic width)."""
    for out in session.get_outputs():
        if out.name == "logits" and len(out.shape) == 2 and isinstance(out.shape[1], int):
            return int(out.shape[1])
    return None


def _task_and_data(meta: ModelMeta, task: str | None, data: str | None) -> tuple[str, str]:
    finetuned = meta.origin() or {}
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
        ConfigError, DataError, ModelLoadError: one-line messages naming the bad value or file; among them a model
            whose head does not fit the task (:func:`~slimformer.evaluate.check_head_for_task`) and a split
            without labels.
    """
    cfg = config or EvaluateConfig()
    p = Path(model)
    onnx = p.suffix == ".onnx"
    if onnx and not p.is_file():
        what = "is a folder" if p.is_dir() else "no such file"
        raise ModelLoadError(f"{p}: {what}; expected an ONNX model file exported by slimformer export")
    loaded = None if onnx else load_model(p)  # checks the folder and its weights first
    meta = loaded.meta if loaded is not None else model_meta(p)
    task, data = _task_and_data(meta, task, data)
    spec = get_task(task)
    finetuned = meta.origin() or {}
    split_name = squad_split or finetuned.get("squad_split", "dev-article-split")
    _set_threads(cfg.threads)
    if onnx:
        check_tokenizer_files(str(p.parent), True)
        tok = load_tokenizer(str(p.parent), True)
        predictor = OrtModel(p, intra_op_num_threads=cfg.threads)
        check_head_for_task(meta.head, _onnx_num_labels(predictor.session), spec, str(p))
    else:
        assert loaded is not None
        check_model_for_task(loaded.model, spec, str(p))
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
    check_labelled(eval_set, str(resolve_data_path(data, data_root)))
    return evaluate_predictor(predictor, eval_set, batch_size=cfg.batch_size, pad_token_id=tok.pad_token_id or 0)


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


@register_stage("evaluate", EvaluateConfig)
def _evaluate(ctx: RunContext, cfg: EvaluateConfig) -> dict[str, Any]:
    model_dir = require(ctx, "model_dir", "evaluate", "finetune")
    metrics = evaluate(model_dir, config=cfg, data_root=ctx.data_root)
    out = ctx.stage_dir("evaluate")
    atomic_write_json(out / "metrics.json", {"model": model_dir, "split": cfg.split, "metrics": metrics})
    return {"metrics": metrics, "split": cfg.split}
