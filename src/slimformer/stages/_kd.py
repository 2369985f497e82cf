"""Shared plumbing of the stages that train a student against a fine-tuned teacher (``distill``, ``qat``, ``sdq``).

:class:`KDTrainConfig` holds the loss set and the training budget (the same options as
:class:`~slimformer.config.FinetuneConfig`); :func:`train_student` runs a :class:`DistillationTrainer` on the
task's training data and records its learning curve (the dev metric after each epoch but the last:
:mod:`slimformer.train.curves`); :func:`evaluate_model` scores a model with the official metric; :func:`student_meta`
builds the ``slimformer.json`` record of the result (the teacher's history plus one ``applied`` entry).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, model_validator

from slimformer import dist
from slimformer.checkpoint import load_model, save_model
from slimformer.config import resolve_data_path
from slimformer.distill.loss import DistillationLoss
from slimformer.errors import ConfigError
from slimformer.evaluate import check_model_for_task, evaluate_predictor, torch_predictor
from slimformer.io import atomic_write_json
from slimformer.models import LoadedModel, ModelMeta, SlimModel
from slimformer.stages._holdout import held_out_context, held_out_indices
from slimformer.stages.base import STAGES, PlanState, RunContext, quantized_stages
from slimformer.tasks import get_task
from slimformer.tasks.data import TaskData, load_eval_set, load_train_features
from slimformer.train.args import training_arguments
from slimformer.train.checkpoints import kill_callbacks, prepare_checkpoints, remove_checkpoints, resume_record
from slimformer.train.curves import LearningCurve, curve_point
from slimformer.train.dataset import FeatureDataset
from slimformer.train.options import TrainingOptions

__all__ = [
    "KDTrainConfig",
    "KDRun",
    "load_teacher",
    "teacher_dir",
    "check_kd_stage",
    "train_student",
    "evaluate_model",
    "student_meta",
    "save_student",
]


class KDTrainConfig(TrainingOptions):
    """Loss set and training budget of a student trained against a teacher (base of the stage configs)."""

    teacher: str | None = Field(
        None, description="fine-tuned teacher folder (default: the model_dir of the previous stage)"
    )
    kd_losses: dict[str, float] = Field(
        default_factory=dict, description="{loss name: weight}, names from slimformer.distill.losses.LOSSES"
    )
    gt_weight: float = Field(0.0, ge=0, description="weight of the ground-truth task loss")
    temperature: float = Field(1.0, gt=0, description="temperature of logits_kd")
    temperature_squared: bool = Field(False, description="multiply logits_kd by temperature²")
    beta_map: float = Field(1.0, ge=0, description="unified_attention: weight of the attention-map KL")
    beta_out: float = Field(1.0, ge=0, description="unified_attention: weight of the attention-output MSE")
    layer_map: dict[int, int] | None = Field(
        None, description="{student layer: teacher layer}, 0-based encoder layers (default: identity)"
    )
    learning_rate: float = Field(2e-5, gt=0, lt=1)

    @model_validator(mode="after")
    def _check_losses(self) -> KDTrainConfig:
        self.loss()  # unknown names, bad weights, nothing to train -> ConfigError (a ValueError) at parse time
        return self

    def for_task(self, kind: str, explicit: set[str]) -> KDTrainConfig:
        """This config with defaults that fit a task of ``kind``: on a regression task the default loss set
        distills the one output with ``logits_mse`` instead of the softmax ``logits_kd`` (a loss set the user wrote
        is kept and checked by :func:`check_kd_stage`). ``explicit``: the option names the recipe set."""
        if kind != "regression" or "kd_losses" in explicit:
            return self
        swap = {"logits_kd": "logits_mse", "soft_cross_entropy": "logits_mse"}
        return self.model_copy(update={"kd_losses": {swap.get(k, k): w for k, w in self.kd_losses.items()}})

    def loss(self) -> DistillationLoss:
        """The :class:`DistillationLoss` these options describe."""
        return DistillationLoss(
            dict(self.kd_losses),
            gt_weight=self.gt_weight,
            temperature=self.temperature,
            temperature_squared=self.temperature_squared,
            beta_map=self.beta_map,
            beta_out=self.beta_out,
            layer_map=self.layer_map,
        )


@dataclass
class KDRun:
    """What :func:`train_student` did.

    ``epoch``: epochs trained (``TrainerState.epoch``); ``curve``: the dev metrics after each epoch but the last
    (learning-curve points, :mod:`slimformer.train.curves`; empty with ``eval_each_epoch`` off); ``held_out``: the
    training-file indices a config with ``hold_out`` left out (:mod:`slimformer.stages._holdout`);
    ``held_out_context``: the record of the examples its ``hold_out_context`` left out beside them.
    """

    train_examples: int
    train_features: int
    steps: int
    train_loss: float
    epoch: float = 0.0
    curve: list[dict[str, Any]] = field(default_factory=list)
    held_out: list[int] | None = None  # training-file indices left out for the search (``hold_out``), else None
    held_out_context: dict[str, Any] | None = None  # count and digest of what ``hold_out_context`` left out too

    def learning_curve(self, metrics: dict[str, float]) -> list[dict[str, Any]]:
        """The whole learning curve: :attr:`curve`, then ``metrics`` (the final evaluation) at the last step."""
        return [*self.curve, curve_point(self.epoch, self.steps, metrics)]


def load_teacher(path: str | Path, task: str) -> LoadedModel:
    """Load a fine-tuned teacher folder (:func:`load_model`) and check it was trained on ``task``.

    Raises:
        ModelLoadError: not a slimformer model folder. ConfigError: the teacher's task is not ``task``, its head
            does not fit the task (kind or number of labels), or the folder holds a quantized model (a ``qat`` /
            ``sdq`` output).
    """
    teacher = load_model(path)
    if teacher.meta.task is not None and teacher.meta.task != task:
        raise ConfigError(f"teacher {path} was fine-tuned on {teacher.meta.task!r}, not on task {task!r}")
    check_model_for_task(teacher.model, get_task(task), f"teacher {path}")
    done = next((a["stage"] for a in teacher.meta.applied if a.get("stage") in quantized_stages()), None)
    if done is not None:
        raise ConfigError(f"teacher {path} is already quantized (stage {done!r}); give a full-precision teacher")
    return teacher


def check_kd_stage(plan: PlanState, config: KDTrainConfig) -> None:
    """Plan check of a stage that trains a student against a teacher (``distill``, ``qat``, ``sdq``), before the
    recipe's first stage: a teacher exists (``teacher:`` or an earlier full-precision model), the loss set fits the
    task's head, the training and eval files are there.

    Raises:
        ConfigError, DataError: naming the key (``teacher``, ``kd_losses.<name>``) or the file.
    """
    if config.teacher is not None:
        if not Path(config.teacher).expanduser().exists():
            raise ConfigError(f"teacher: {config.teacher} not found; expected a fine-tuned model folder")
    elif not any(STAGES[n].produces_model and not STAGES[n].quantized_output for n in plan.stages):
        raise ConfigError("teacher: no earlier stage writes a full-precision model; add a finetune stage or teacher:")
    config.loss().check_task(plan.task.kind)
    plan.check_data(config, "train", "dev")


def teacher_dir(ctx: RunContext, teacher: str | None, stage: str) -> str:
    """``teacher`` if set, else the most recent full-precision ``model_dir`` of the run (never a quantized one).

    Raises:
        ConfigError: no teacher given and no earlier stage produced a full-precision model.
    """
    if teacher:
        return teacher
    quantized = quantized_stages()
    for name, outputs in ctx.earlier():
        if "model_dir" in outputs and name not in quantized and not outputs.get("quantized"):
            return str(outputs["model_dir"])
    raise ConfigError(f"stage {stage!r} needs a teacher: set teacher: <folder> or put a 'finetune' stage before it")


def _task_options(meta: ModelMeta) -> dict[str, Any]:
    ft = meta.origin() or {}
    return {"squad_split": ft.get("squad_split", "dev-article-split"), "doc_stride": ft.get("doc_stride", 128)}


def train_student(
    student: SlimModel,
    teacher: SlimModel | None,
    tokenizer: Any,
    config: KDTrainConfig,
    *,
    teacher_meta: ModelMeta,
    work_dir: Path,
    data_root: str | None = None,
    callbacks: list[Any] | None = None,
    identity: dict[str, Any] | None = None,
) -> KDRun:
    """Train ``student`` in place with a :class:`DistillationTrainer` on the task's training data.

    Args:
        student: the model to train (fp32, prepared for QAT, ...). teacher: the frozen teacher, or ``None``
            for ground-truth-only training.
        tokenizer: the tokenizer of both models. config: loss set and budget.
        teacher_meta: the teacher's metadata (sequence length and SQuAD options default to its own).
        work_dir: the Trainer's checkpoint folder: a checkpoint every ``config.save_steps`` steps (and the
            learning curve so far); started again with the same config and ``identity``, an interrupted run resumes
            from the last one. Removed once training finishes.
        callbacks: extra ``TrainerCallback`` s (e.g. the Quant-Noise schedule).
        identity: what else the checkpoints depend on (e.g. ``{"teacher": <folder>}``).

    Raises:
        ConfigError, DataError: bad loss set for these models (before training), bad task or data.
    """
    from transformers import DataCollatorWithPadding, set_seed

    from slimformer.distill.trainer import DistillationTrainer  # local: lean import (Trainer loads datasets)

    if config.threads:
        torch.set_num_threads(config.threads)
    set_seed(config.seed)
    kd_loss = config.loss()
    kd_loss.validate(student, teacher)  # before the data is read: config errors come first
    msl = config.max_seq_length or teacher_meta.max_seq_length
    data = resolve_data_path(config.data, data_root)
    options = _task_options(teacher_meta)
    held_out = held_out_indices(config, config.task, data, teacher_meta.applied, squad_split=options["squad_split"])
    context, context_record = held_out_context(config, config.task, data, held_out, squad_split=options["squad_split"])
    train = load_train_features(
        config.task,
        data,
        tokenizer,
        max_seq_length=msl,
        max_examples=config.max_train_examples,
        seed=config.seed,
        exclude=None if held_out is None else sorted({*held_out, *context}),
        **options,
    )
    args = training_arguments(config, work_dir, checkpoints=True)
    score = _dev_scorer(tokenizer, config, teacher_meta=teacher_meta, data_root=data_root)
    curve = LearningCurve(score, enabled=config.eval_each_epoch)
    trainer = DistillationTrainer(
        model=student,
        args=args,
        train_dataset=FeatureDataset(train.features),
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        callbacks=[*(callbacks or []), curve, *kill_callbacks()],
        teacher=teacher,
        kd_loss=kd_loss,
    )
    last = dist.on_main(lambda: prepare_checkpoints(work_dir, resume_record(config, **(identity or {})), resume=True))
    result = trainer.train(resume_from_checkpoint=str(last) if last else None)
    dist.on_main(lambda: remove_checkpoints(work_dir))
    student.eval()
    epoch = float(trainer.state.epoch or 0.0)
    return KDRun(
        len(train.examples),
        len(train.features),
        result.global_step,
        float(result.training_loss),
        epoch,
        curve.points,
        held_out,
        context_record,
    )


def _load_dev(
    tokenizer: Any, config: KDTrainConfig, *, teacher_meta: ModelMeta, data_root: str | None = None
) -> TaskData:
    """The task's dev set at the student's length (the teacher's unless ``max_seq_length`` is set)."""
    return load_eval_set(
        config.task,
        resolve_data_path(config.data, data_root),
        tokenizer,
        max_seq_length=config.max_seq_length or teacher_meta.max_seq_length,
        max_examples=config.max_eval_examples,
        **_task_options(teacher_meta),
    )


def _score(model: SlimModel, dev: TaskData, tokenizer: Any, config: KDTrainConfig) -> dict[str, float]:
    return evaluate_predictor(
        torch_predictor(model), dev, batch_size=config.eval_batch_size, pad_token_id=tokenizer.pad_token_id or 0
    )


def _dev_scorer(
    tokenizer: Any, config: KDTrainConfig, *, teacher_meta: ModelMeta, data_root: str | None = None
) -> Callable[[SlimModel], dict[str, float]]:
    """``model -> official dev metrics``, as :func:`evaluate_model`; the dev set is read at the first call (the
    learning curve's first point: never when training lasts one epoch) and kept."""
    dev = functools.cache(lambda: _load_dev(tokenizer, config, teacher_meta=teacher_meta, data_root=data_root))
    return lambda model: _score(model, dev(), tokenizer, config)


def evaluate_model(
    model: SlimModel,
    tokenizer: Any,
    config: KDTrainConfig,
    *,
    teacher_meta: ModelMeta,
    data_root: str | None = None,
) -> dict[str, float]:
    """Official dev metrics of ``model`` (fractions for GLUE, points for SQuAD), at the student's length."""
    dev = _load_dev(tokenizer, config, teacher_meta=teacher_meta, data_root=data_root)
    return _score(model, dev, tokenizer, config)


def student_meta(teacher_meta: ModelMeta, config: KDTrainConfig, record: dict[str, Any]) -> ModelMeta:
    """The student's ``slimformer.json``: the teacher's head, task, labels and history, plus ``record``.

    ``record`` is appended to ``applied`` after the stage's config (``config.model_dump``), so the
    fine-tuning record that export and benchmark read (task data, SQuAD split) stays first.
    """
    entry = {"stage": record.get("stage"), **config.model_dump(mode="json"), **record}
    return ModelMeta(
        head=teacher_meta.head,
        task=teacher_meta.task or config.task,
        base_model=teacher_meta.base_model,
        applied=[*teacher_meta.applied, entry],
        seed=config.seed,
        max_seq_length=config.max_seq_length or teacher_meta.max_seq_length,
        labels=teacher_meta.labels,
        task_spec=teacher_meta.task_spec,
        teacher_source=teacher_meta.teacher_source,
    )


def save_student(
    student: SlimModel,
    tokenizer: Any,
    out: Path,
    teacher_meta: ModelMeta,
    config: KDTrainConfig,
    record: dict[str, Any],
    metrics: dict[str, float],
    run: KDRun,
) -> None:
    """Save a trained student (``slimformer.json`` from :func:`student_meta`) and its ``eval_results.json`` (with
    the learning curve, :meth:`KDRun.learning_curve`)."""
    save_model(student, tokenizer, out, student_meta(teacher_meta, config, record))
    atomic_write_json(
        Path(out) / "eval_results.json",
        {
            "task": config.task,
            "metrics": metrics,
            "train_loss": run.train_loss,
            "steps": run.steps,
            "learning_curve": run.learning_curve(metrics),
        },
    )
