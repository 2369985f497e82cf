"""The ``evaluate`` stage: a model folder (PyTorch) or an ``.onnx`` file (ONNX Runtime) scored with the task's
official metric on an eval split.

The record states its batching (:class:`~slimformer.evaluate.EvalBatching`). A graph with dynamic activation
scales (dynamic int8 PTQ, a QAT QDQ graph) is scored at batch size 1 unless ``batch_size`` is set: each input
alone, what a served request gets. ``batchings: [1, 32]`` also scores it under those batch sizes (the spread).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from slimformer.checkpoint import load_model, read_meta
from slimformer.config import IDENTITY_WHEN_SET, StageConfig, resolve_data_path
from slimformer.errors import ConfigError, ModelLoadError
from slimformer.evaluate import (
    EvalBatching,
    batching_spread,
    check_head_for_task,
    check_labelled,
    check_model_for_task,
    default_batching,
    evaluate_predictor,
    spread_is_large,
    torch_predictor,
)
from slimformer.export.ort import OrtModel
from slimformer.io import atomic_write_json
from slimformer.models import ModelMeta
from slimformer.models.load import check_tokenizer_files, load_tokenizer
from slimformer.quant import has_dynamic_activation_quantizers
from slimformer.stages.base import PlanState, RunContext, register_stage, require
from slimformer.tasks import get_task
from slimformer.tasks.data import load_eval_set

__all__ = ["EvaluateConfig", "evaluate", "evaluate_record", "model_meta", "spread_advice"]

PathLike = str | os.PathLike[str]


class EvaluateConfig(StageConfig):
    """Evaluate a model (PyTorch folder or ONNX file) on a task split with the official metric."""

    split: str = Field(
        "dev", description="split name: dev (GLUE; MNLI dev_matched), dev_mismatched, or the SQuAD eval part"
    )
    batch_size: int = Field(
        64,
        ge=1,
        description="inputs per batch (length-sorted, padded to the longest); unless set, a graph with dynamic "
        "activation scales (dynamic int8, QAT) is scored at 1: each input alone, what a served request gets",
    )
    max_examples: int | None = Field(None, ge=1)
    threads: int | None = Field(None, ge=1)
    batchings: list[int] | None = Field(
        None,
        min_length=1,
        description="also score under each of these batch sizes (length-sorted) and report the spread of the metric",
        json_schema_extra={IDENTITY_WHEN_SET: True},
    )

    @field_validator("batchings")
    @classmethod
    def _positive(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(b < 1 for b in v):
            raise ValueError(f"batch sizes must be >= 1, got {v}")
        return v

    def batching_for(self, dynamic_activations: bool) -> EvalBatching:
        """The batching of the headline figure: ``batch_size`` when set explicitly (``model_fields_set``), else
        :func:`~slimformer.evaluate.default_batching` (1 for dynamic activation scales, 64 otherwise)."""
        explicit = self.batch_size if "batch_size" in self.model_fields_set else None
        return default_batching(dynamic_activations, explicit)


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

    The batching follows :meth:`EvaluateConfig.batching_for`; :func:`evaluate_record` also returns it (and the
    spread over ``config.batchings``).

    Returns:
        ``{metric: value, "main": value}``: fractions for GLUE, points for SQuAD EM/F1.

    Raises:
        ConfigError, DataError, ModelLoadError: as :func:`evaluate_record`.
    """
    return evaluate_record(model, task=task, data=data, config=config, data_root=data_root, squad_split=squad_split)[
        "metrics"
    ]


def evaluate_record(
    model: PathLike,
    *,
    task: str | None = None,
    data: str | None = None,
    config: EvaluateConfig | None = None,
    data_root: str | None = None,
    squad_split: str | None = None,
) -> dict[str, Any]:
    """:func:`evaluate` with what the figure depends on.

    Returns:
        ``{"metrics": {...}, "batching": EvalBatching.to_dict(), "dynamic_activations": bool}`` plus, with
        ``config.batchings``, ``"spread"``: :func:`~slimformer.evaluate.batching_spread` over the headline
        batching and each listed batch size (length-sorted), and ``"advice"`` (:func:`spread_advice`) when it is
        large.

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
        session = OrtModel(p, intra_op_num_threads=cfg.threads)
        predictor, dynamic = session, session.dynamic_activations
        check_head_for_task(meta.head, _onnx_num_labels(session.session), spec, str(p))
    else:
        assert loaded is not None
        check_model_for_task(loaded.model, spec, str(p))
        tok, predictor = loaded.tokenizer, torch_predictor(loaded.model)
        dynamic = has_dynamic_activation_quantizers(loaded.model)  # QAT fake quantization: per-batch scales
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
    batching = cfg.batching_for(dynamic)
    pad = tok.pad_token_id or 0
    metrics = evaluate_predictor(predictor, eval_set, batching=batching, pad_token_id=pad)
    record: dict[str, Any] = {"metrics": metrics, "batching": batching.to_dict(), "dynamic_activations": dynamic}
    if cfg.batchings:
        batchings = list(dict.fromkeys([batching, *(EvalBatching(batch_size=b) for b in cfg.batchings)]))
        spread = batching_spread(predictor, eval_set, batchings, pad_token_id=pad)
        record["spread"] = spread
        advice = spread_advice(spread, dynamic)
        if advice:
            record["advice"] = advice
    return record


def spread_advice(spread: dict[str, Any], dynamic_activations: bool) -> str | None:
    """The report line for a large :func:`~slimformer.evaluate.batching_spread` (``None`` when it is small).

    A large spread of a graph with dynamic activation scales points to static scales (``quantize: {mode:
    static}``); of any other graph it is reported as unexpected (fp32 and static int8 should not move).
    """
    if not spread_is_large(spread["spread"], spread["main_max"]):
        return None
    if dynamic_activations:
        return (
            f"the metric moves by {spread['spread']:.4g} with batching (dynamic activation scales follow each "
            "batch's maximum): report the batch-size-1 figure, or quantize with static activation scales "
            "(quantize: {mode: static})"
        )
    return f"the metric moves by {spread['spread']:.4g} with batching although the graph has static scales"


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _check(plan: PlanState, cfg: EvaluateConfig) -> None:
    """Plan check: the split exists and has labels (GLUE's test files have none)."""
    spec = plan.task
    if spec.files is None and spec.kind != "qa":
        spec.split_file(cfg.split)  # ConfigError naming the known splits
        if cfg.split.startswith("test"):
            raise ConfigError(
                f"split: {cfg.split!r} of task {spec.name} has no labels (GLUE test files are unlabelled); "
                "evaluate a labelled split such as dev"
            )


@register_stage("evaluate", EvaluateConfig, needs=("model_dir",), check=_check)
def _evaluate(ctx: RunContext, cfg: EvaluateConfig) -> dict[str, Any]:
    model_dir = require(ctx, "model_dir", "evaluate", "finetune")
    record = evaluate_record(model_dir, config=cfg, data_root=ctx.data_root)
    out = ctx.stage_dir("evaluate")
    atomic_write_json(out / "metrics.json", {"model": model_dir, "split": cfg.split, **record})
    return {"split": cfg.split, **record}
