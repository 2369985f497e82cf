"""The ``length`` recipe stage: LengthDrop fine-tuning of an already fine-tuned model (LAT stage 2).

Recipe use (after ``finetune``; trains ``ctx.latest("model_dir")``)::

    stages:
      - finetune: {epochs: 2}
      - length: {epochs: 5, num_sandwich: 2, length_drop_ratio_bound: 0.2}

The trained model is saved as an ordinary model folder with ``length_config.json`` holding the full-length
configuration (every ratio 1); the evolutionary search then picks configurations for given budgets.
Defaults follow METHODS.md §1(c) / §2(c) (LAT: 5 epochs, ``m = 2``, ``p = 0.2``; learning rate 3e-5 as in
QuaLA-MiniLM, LAT used 2e-5 for GLUE and 5e-5 for SQuAD; no warm-up, no weight decay: HF defaults). LayerDrop
defaults by depth: off up to 4 layers, LAT's 0.2 deeper (``layer_drop_prob: null``, resolved when the stage runs
and recorded in ``slimformer.json``). Sub-models are per-row keep ratios on the grid of the training
``max_seq_length``, the search's default ``seq_len`` (:mod:`slimformer.length.lengthdrop`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from slimformer import dist
from slimformer.checkpoint import load_model, save_model
from slimformer.config import IDENTITY_WHEN_SET, resolve_data_path
from slimformer.errors import ConfigError
from slimformer.io import atomic_write_json
from slimformer.length.config import LengthConfig, save_length_config
from slimformer.length.evaluate import evaluate_config
from slimformer.length.lengthdrop import default_layer_drop_prob
from slimformer.models import HeadKind
from slimformer.stages._holdout import HoldOutOptions, held_out_context, held_out_indices
from slimformer.stages._kd import load_teacher
from slimformer.stages.base import PlanState, RunContext, register_stage
from slimformer.tasks import get_task
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

__all__ = ["LengthStageConfig", "train_length_adaptive"]


class LengthStageConfig(TrainingOptions, HoldOutOptions):
    """LengthDrop training with the sandwich rule and in-place distillation (Kim & Cho 2021)."""

    epochs: float = Field(5.0, gt=0, description="training epochs (LAT: 5)")
    learning_rate: float = Field(3e-5, gt=0, lt=1)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    squad_split: str = Field("dev-article-split")
    doc_stride: int = Field(128, ge=1)
    num_sandwich: int = Field(2, ge=0, description="random sub-models per step (sandwich rule)")
    length_drop_ratio_bound: float = Field(0.2, ge=0, lt=1, description="LengthDrop: max fraction dropped per layer")
    layer_drop_prob: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="LayerDrop probability of the sub-models; null: by depth, 0 up to 4 layers, else 0.2 (LAT)",
    )
    layer_drop_full: bool = Field(False, description="LayerDrop the full model too (the LAT code does)")
    kl_direction: Literal["teacher_student", "student_teacher"] = Field(
        "teacher_student", description="KL(p_full||p_sub) (textbook KD) or KL(p_sub||p_full) (the LAT code)"
    )
    min_length: int = Field(2, ge=1, description="floor of sampled genes (tokens on the max_seq_length grid)")
    teacher_weight: float = Field(
        0.0,
        ge=0,
        le=1,
        description="α: the full pass learns (1-α)·CE + α·τ²·KL(teacher||full) from a frozen teacher (0: LAT, labels)",
        json_schema_extra={IDENTITY_WHEN_SET: True},
    )
    teacher: str | None = Field(
        None,
        description="teacher folder for teacher_weight > 0 (default: the teacher of the recipe's distill stage, else "
        "its finetune model)",
        json_schema_extra={IDENTITY_WHEN_SET: True},
    )
    teacher_temperature: float = Field(
        1.0, gt=0, description="τ of the teacher term", json_schema_extra={IDENTITY_WHEN_SET: True}
    )


def train_length_adaptive(
    config: LengthStageConfig,
    model_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    data_root: str | None = None,
    callbacks: list[Any] | None = None,
) -> dict[str, Any]:
    """Train ``model_dir`` with LengthDrop and save it to ``out`` with a full-length ``length_config.json``.

    With ``config.teacher_weight > 0`` the full pass also learns from the frozen ``config.teacher`` (a fine-tuned
    full-precision model of the same task; see :mod:`slimformer.length.trainer`).

    Checkpoints go to ``<out>.checkpoints`` every ``save_steps`` steps; started again with the same config and
    input model, an interrupted run continues from the last one (weights, optimizer, schedule, RNG states, data
    position and the sub-model sampler, which is seeded per optimizer step), and gives the same model as an
    uninterrupted run. ``callbacks``: extra ``TrainerCallback`` s.

    Returns:
        ``{"model_dir", "metrics", "length_config", "steps", "learning_curve"}``; ``metrics`` are the full-length
        dev metrics, ``learning_curve`` the same after each epoch (:mod:`slimformer.train.curves`; only the final
        point when ``config.eval_each_epoch`` is off).

    Raises:
        ConfigError: the model was fine-tuned on another task, or has no classification / QA head;
            ``teacher_weight > 0`` without a teacher, or a teacher of another task / a quantized one.
        DataError, ModelLoadError: missing data or model files.
    """
    from transformers import DataCollatorWithPadding, set_seed

    from slimformer.length.trainer import LengthDropTrainer  # local: lean import (Trainer loads datasets)

    out = Path(out)
    loaded = load_model(model_dir)
    model, tok, meta = loaded.model, loaded.tokenizer, loaded.meta
    spec = get_task(config.task)
    if meta.task and meta.task != spec.name:
        raise ConfigError(f"length: the model in {model_dir} was fine-tuned on {meta.task!r}, not {spec.name!r}")
    if model.head is HeadKind.NONE:
        raise ConfigError(f"length: the model in {model_dir} has no task head; LengthDrop needs task labels")
    layer_drop = default_layer_drop_prob(model.num_layers, config.layer_drop_prob)
    # checkpoints of a run with the old sandwich (absolute lengths of the batch's longest row) are not resumed
    identity = {"model_dir": str(Path(model_dir).resolve()), "sandwich": "gene-ratios", "layer_drop": layer_drop}
    teacher = None
    if config.teacher_weight > 0:
        if not config.teacher:
            raise ConfigError("length: teacher_weight > 0 needs teacher: <folder> (a fine-tuned model of the task)")
        teacher = load_teacher(config.teacher, spec.name).model
        identity["teacher"] = str(Path(config.teacher).resolve())
    if config.threads:
        torch.set_num_threads(config.threads)
    set_seed(config.seed)
    data = resolve_data_path(config.data, data_root)
    msl = config.max_seq_length or meta.max_seq_length or spec.max_seq_length
    common = dict(max_seq_length=msl, squad_split=config.squad_split, doc_stride=config.doc_stride)
    held_out = held_out_indices(config, spec.name, data, meta.applied, squad_split=config.squad_split)
    context, context_record = held_out_context(config, spec.name, data, held_out, squad_split=config.squad_split)
    exclude = None if held_out is None else sorted({*held_out, *context})
    held = {"held_out": held_out, "held_out_context": context_record}  # the search split (search_split.py)
    held = {k: v for k, v in held.items() if v is not None}
    train = load_train_features(
        spec.name, data, tok, max_examples=config.max_train_examples, seed=config.seed, exclude=exclude, **common
    )
    dev = load_eval_set(spec.name, data, tok, max_examples=config.max_eval_examples, **common)
    ckpt = checkpoint_dir(out)
    args = training_arguments(config, ckpt, checkpoints=True)
    score = _full_length_scorer(dev, config, tok)
    curve = LearningCurve(score, enabled=config.eval_each_epoch)
    model.train()
    trainer = LengthDropTrainer(
        model=model,
        args=args,
        train_dataset=FeatureDataset(train.features),
        data_collator=DataCollatorWithPadding(tok),
        processing_class=tok,
        seq_len=msl,
        num_sandwich=config.num_sandwich,
        length_drop_ratio_bound=config.length_drop_ratio_bound,
        layer_drop_prob=layer_drop,
        layer_drop_full=config.layer_drop_full,
        kl_direction=config.kl_direction,
        min_length=config.min_length,
        length_seed=config.seed,
        teacher=teacher,
        teacher_weight=config.teacher_weight,
        teacher_temperature=config.teacher_temperature,
        callbacks=[*(callbacks or []), curve, *kill_callbacks()],
    )
    last = dist.on_main(lambda: prepare_checkpoints(ckpt, resume_record(config, **identity), resume=True))
    result = trainer.train(resume_from_checkpoint=str(last) if last else None)
    # several processes: equal weights on every rank now; the main process evaluates and writes (slimformer.dist)
    return dist.on_main(
        lambda: _finish(model, tok, config, meta, layer_drop, msl, train, held, dev, out, ckpt, result, score, curve)
    )


def _full_length_scorer(dev: Any, config: LengthStageConfig, tok: Any) -> Scorer:
    """``model -> dev metrics at full length`` (every ratio 1, no LayerDrop): the final evaluation and the learning
    curve's points."""
    pad = tok.pad_token_id or 0
    return lambda model: evaluate_config(
        model, dev, LengthConfig.full(model.num_layers), batch_size=config.eval_batch_size, pad_token_id=pad
    )


def _finish(
    model: Any,
    tok: Any,
    config: LengthStageConfig,
    meta: Any,
    layer_drop: float,
    msl: int,
    train: Any,
    held: dict[str, Any],
    dev: Any,
    out: Path,
    ckpt: Path,
    result: Any,
    score: Scorer,
    curve: LearningCurve,
) -> dict[str, Any]:
    """Score the full-length model on the dev set and write the LengthDrop model folder (the main process only)."""
    spec = get_task(config.task)
    full = LengthConfig.full(model.num_layers)
    metrics = score(model)
    learning_curve = curve.with_final(metrics)
    meta.applied.append(
        {
            "stage": "length",
            **config.model_dump(mode="json"),
            "layer_drop_prob": layer_drop,  # resolved (the config's null means "by depth")
            "layer_drop_prob_by_depth": config.layer_drop_prob is None,
            "sub_models": {"form": "ratios", "seq_len": msl},  # the grid of the sub-models' genes
            "train_examples": len(train.examples),
            **held,  # held_out: the search split (search_split.py); held_out_context: what else was left out
        }
    )
    meta.max_seq_length = msl
    save_model(model, tok, out, meta)
    save_length_config(full, out)
    atomic_write_json(
        out / "eval_results.json",
        {
            "task": spec.name,
            "split": dev.split,
            "examples": len(dev.examples),
            "metrics": metrics,
            "length_config": full.to_dict(),
            "train_loss": result.training_loss,
            "steps": result.global_step,
            "learning_curve": learning_curve,
        },
    )
    remove_checkpoints(ckpt)
    return {
        "model_dir": str(out),
        "metrics": metrics,
        "length_config": full.to_dict(),
        "steps": result.global_step,
        "learning_curve": learning_curve,
    }


def _recipe_teacher(ctx: RunContext) -> str:
    """The teacher of the recipe's latest ``distill`` stage, else the model of its ``finetune`` stage.

    Raises:
        ConfigError: neither stage ran before ``length``.
    """
    teacher = (ctx.output_of("distill") or {}).get("teacher") or (ctx.output_of("finetune") or {}).get("model_dir")
    if not teacher:
        raise ConfigError("length: teacher_weight > 0 needs teacher: <folder>, or a distill / finetune stage before it")
    return str(teacher)


def _check(plan: PlanState, cfg: LengthStageConfig) -> None:
    """Plan check: the training and eval files are there (``needs`` an earlier model_dir)."""
    plan.check_data(cfg, "train", "dev")


@register_stage(
    "length",
    LengthStageConfig,
    inherits=("task", "data", "seed"),
    trains=True,
    produces_model=True,
    needs=("model_dir",),
    check=_check,
)
def _length(ctx: RunContext, cfg: LengthStageConfig) -> dict[str, Any]:
    model_dir = ctx.latest("model_dir")
    if model_dir is None:
        raise ConfigError("stage 'length' needs a model_dir from an earlier 'finetune' stage in the recipe")
    if cfg.teacher_weight > 0 and not cfg.teacher:
        cfg = cfg.model_copy(update={"teacher": _recipe_teacher(ctx)})
    outputs = train_length_adaptive(cfg, model_dir, ctx.stage_dir("length"), data_root=ctx.data_root)
    return {**outputs, "task": cfg.task, "data": cfg.data}
