"""The ``finetune`` stage: fine-tune a pretrained encoder on a task with the Hugging Face Trainer.

The Trainer brings the optimizer (AdamW), the linear schedule with warm-up, gradient clipping,
checkpoints every ``save_steps`` and resume; the same code runs on several GPUs / nodes when launched with
``accelerate launch``. Evaluation with the official metric runs at the end, and after every earlier epoch for the
learning curve (``eval_each_epoch``; :mod:`slimformer.train.curves`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from slimformer import dist
from slimformer.checkpoint import load_pretrained, save_model
from slimformer.config import PREVIOUS_MODEL, identity_dump, legacy_identity, resolve_data_path
from slimformer.errors import ConfigError
from slimformer.evaluate import evaluate_predictor, torch_predictor
from slimformer.io import atomic_write_json, check_output_path, read_json
from slimformer.models import META_FILE, HeadKind, ModelMeta
from slimformer.stages.base import PlanState, RunContext, register_stage, require
from slimformer.tasks import get_task, task_to_dict
from slimformer.tasks.data import load_eval_set, load_train_features
from slimformer.train.args import training_arguments
from slimformer.train.checkpoints import (
    checkpoint_dir,
    kill_callbacks,
    prepare_checkpoints,
    remove_checkpoints,
    resume_record,
)
from slimformer.train.curves import LearningCurve, Scorer
from slimformer.train.dataset import FeatureDataset
from slimformer.train.options import TrainingOptions

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune", "checkpoint_dir"]


class FinetuneConfig(TrainingOptions):
    """Fine-tune a pretrained encoder on a task with the Hugging Face Trainer (Accelerate underneath)."""

    model: str = Field(
        "minilm-l6",
        description="model alias (minilm-l6), local HF folder, hub id, or 'previous' (in a recipe: the model "
        "written by an earlier stage, e.g. embeddings)",
    )
    max_seq_length: int | None = Field(None, gt=8, le=4096, description="tokens per sequence (default: the task's)")
    squad_split: str = Field(
        "dev-article-split", description="named article-level split of SQuAD dev (train part/eval part)"
    )
    doc_stride: int = Field(128, ge=1, description="SQuAD: token overlap between windows of a long context")


@dataclass
class FinetuneResult:
    """Where the fine-tuned model went and how it scored.

    ``learning_curve``: the dev metrics after each epoch, the last point being ``metrics``
    (:mod:`slimformer.train.curves`).
    """

    model_dir: Path
    metrics: dict[str, float]
    train_examples: int
    train_features: int
    steps: int
    learning_curve: list[dict[str, Any]] = field(default_factory=list)


def _head_for(kind: str) -> HeadKind:
    return HeadKind.QA if kind == "qa" else HeadKind.CLASSIFICATION


def check_out_folder(out: Path, *, overwrite: bool = False) -> None:
    """Refuse, before any work, an ``out`` whose files saving the model would delete.

    ``out`` may be missing, an empty folder, or a model folder an earlier fine-tune wrote (``slimformer.json``
    records a ``finetune`` stage): saving replaces it as a whole. Any other folder is refused unless ``overwrite``.

    Raises:
        ConfigError: ``out`` is a file, lies under a file or in a folder that cannot be written, or is a folder of
            other files and ``overwrite`` is not set.
    """
    check_output_path(out, kind="folder", option="--out")
    if not out.is_dir() or overwrite or not any(out.iterdir()):
        return
    meta = out / META_FILE
    try:
        applied = read_json(meta).get("applied", []) if meta.is_file() else None
    except (OSError, ValueError, AttributeError):
        applied = None
    if isinstance(applied, list) and any(isinstance(a, dict) and a.get("stage") == "finetune" for a in applied):
        return
    raise ConfigError(
        f"--out {out}: the folder exists and is not a model folder written by finetune; saving would delete its "
        "files. Choose a new folder, or pass --overwrite to replace it"
    )


def finetune(
    config: FinetuneConfig,
    out: str | os.PathLike[str],
    *,
    data_root: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> FinetuneResult:
    """Fine-tune ``config.model`` on ``config.task`` and save the model folder to ``out``.

    Args:
        config: the validated fine-tuning config.
        out: the model folder to write (written atomically at the end; Trainer checkpoints go to
            ``<out>.checkpoints`` and are removed after a successful save).
        data_root: root for relative data paths (default ``$SLIMFORMER_DATA``).
        resume: continue from the last checkpoint in ``<out>.checkpoints`` if there is one.
        overwrite: replace an existing ``out`` folder even when it is not a fine-tuned model folder
            (:func:`check_out_folder`).

    Returns:
        :class:`FinetuneResult` with the dev metrics (official metric; fractions for GLUE, points for SQuAD) and the
        learning curve (the dev metrics after each epoch; only the final point when ``config.eval_each_epoch`` is
        off).

    Raises:
        ConfigError, DataError, ModelLoadError: bad task / data / model, an ``out`` that must not be replaced
            (one-line messages, before any training).
    """
    from transformers import DataCollatorWithPadding, Trainer, set_seed

    out = Path(out)
    check_out_folder(out, overwrite=overwrite)
    spec = get_task(config.task)
    data = resolve_data_path(config.data, data_root)
    if config.threads:
        torch.set_num_threads(config.threads)
    set_seed(config.seed)
    labels = list(spec.labels) if spec.labels else None
    num_labels = 1 if spec.kind == "regression" else (len(labels) if labels else None)
    model, tok = load_pretrained(
        config.model, _head_for(spec.kind), num_labels=num_labels, labels=labels, new_head=True
    )
    msl = config.max_seq_length or spec.max_seq_length
    common = dict(max_seq_length=msl, squad_split=config.squad_split, doc_stride=config.doc_stride)
    train = load_train_features(
        spec.name, data, tok, max_examples=config.max_train_examples, seed=config.seed, **common
    )
    dev = load_eval_set(spec.name, data, tok, max_examples=config.max_eval_examples, **common)

    ckpt = checkpoint_dir(out)
    args = training_arguments(config, ckpt, checkpoints=True, disable_tqdm=False)
    score = _dev_scorer(dev, config, tok)
    curve = LearningCurve(score, enabled=config.eval_each_epoch)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=FeatureDataset(train.features),
        data_collator=DataCollatorWithPadding(tok),
        processing_class=tok,
        callbacks=[curve, *kill_callbacks()],
    )
    # records written before save_steps / save_total_limit became run-control held them too
    last = dist.on_main(
        lambda: prepare_checkpoints(ckpt, resume_record(config), resume, legacy=legacy_identity(config))
    )
    result = trainer.train(resume_from_checkpoint=str(last) if last else None)
    # several processes: the weights are equal on every rank after training; one process evaluates and writes
    return dist.on_main(
        lambda: _finish(model, tok, config, spec, out, ckpt, train, dev, result, msl, labels, score, curve)
    )


def _dev_scorer(dev: Any, config: FinetuneConfig, tok: Any) -> Scorer:
    """``model -> official dev metrics`` (the final evaluation and the learning curve's points)."""
    return lambda model: evaluate_predictor(
        torch_predictor(model), dev, batch_size=config.eval_batch_size, pad_token_id=tok.pad_token_id or 0
    )


def _finish(
    model: Any,
    tok: Any,
    config: FinetuneConfig,
    spec: Any,
    out: Path,
    ckpt: Path,
    train: Any,
    dev: Any,
    result: Any,
    msl: int,
    labels: list[str] | None,
    score: Scorer,
    curve: LearningCurve,
) -> FinetuneResult:
    """Score the trained model on the dev set and write its folder (the main process only)."""
    metrics = score(model)
    learning_curve = curve.with_final(metrics)
    record = {"stage": "finetune", **config.model_dump(mode="json"), "train_examples": len(train.examples)}
    meta = ModelMeta(
        head=model.head.value,
        task=spec.name,
        base_model=config.model,
        applied=[*_prior_stages(config.model), record],
        seed=config.seed,
        max_seq_length=msl,
        labels=labels,
        task_spec=task_to_dict(spec) if spec.files is not None else None,
    )
    save_model(model, tok, out, meta)
    atomic_write_json(
        out / "eval_results.json",
        {
            "task": spec.name,
            "split": dev.split,
            "examples": len(dev.examples),
            "metrics": metrics,
            "train_loss": result.training_loss,
            "steps": result.global_step,
            "learning_curve": learning_curve,
        },
    )
    remove_checkpoints(ckpt)
    return FinetuneResult(out, metrics, len(train.examples), len(train.features), result.global_step, learning_curve)


def _prior_stages(model: str) -> list[dict[str, Any]]:
    """The ``applied`` records of a slimformer model folder fine-tuned from (e.g. factorised embeddings), else []."""
    meta = Path(model) / META_FILE
    return list(read_json(meta).get("applied", [])) if meta.is_file() else []


def _reusable_model(out: Path, cfg: FinetuneConfig) -> dict[str, Any] | None:
    """The ``eval_results.json`` of a model already fine-tuned into ``out`` with ``cfg`` (run-control fields aside),
    else None."""
    meta_path, results = out / META_FILE, out / "eval_results.json"
    if not (meta_path.is_file() and results.is_file() and (out / "model.safetensors").is_file()):
        return None
    applied = read_json(meta_path).get("applied", [])
    done = next((a for a in applied if a.get("stage") == "finetune"), {})
    recorded = {k: v for k, v in done.items() if k not in ("stage", "train_examples")}
    control = set(cfg.model_dump()) - set(identity_dump(cfg))
    if {k: v for k, v in recorded.items() if k not in control} != identity_dump(cfg):
        return None
    return read_json(results)


def _check(plan: PlanState, cfg: FinetuneConfig) -> None:
    """Plan check: ``model: previous`` has an earlier model; the training and eval files are there."""
    if cfg.model == PREVIOUS_MODEL and "model_dir" not in plan.available:
        raise ConfigError("model: previous needs a model_dir from an earlier 'embeddings' stage")
    plan.check_data(cfg, "train", "dev")


@register_stage(
    "finetune",
    FinetuneConfig,
    inherits=("model", "task", "data", "seed"),
    trains=True,
    produces_model=True,
    check=_check,
)
def _finetune(ctx: RunContext, cfg: FinetuneConfig) -> dict[str, Any]:
    out = ctx.stage_dir("finetune")
    if cfg.model == PREVIOUS_MODEL:  # e.g. after an `embeddings` stage: fine-tune the model it wrote
        cfg = cfg.model_copy(update={"model": require(ctx, "model_dir", "finetune (model: previous)", "embeddings")})
    results = _reusable_model(out, cfg)
    if results is not None:  # saved by a run killed before it removed its checkpoints (or recorded the stage)
        remove_checkpoints(checkpoint_dir(out))
        # a folder written before learning curves has none: an empty curve says "not recorded"
        metrics, curve = results["metrics"], results.get("learning_curve", [])
    else:  # resume=True: an interrupted earlier attempt continues from its last checkpoint
        done = finetune(cfg, out, data_root=ctx.data_root, resume=True)
        metrics, curve = done.metrics, done.learning_curve
    return {"model_dir": str(out), "metrics": metrics, "learning_curve": curve, "task": cfg.task, "data": cfg.data}
