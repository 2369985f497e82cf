"""Recipe stage ``distill``: task distillation of the fine-tuned teacher into a shallower student (METHODS §2(b)).

The student is either a subset of the teacher's layers (``student_layers: [1, 3, 5]``; hidden size unchanged,
embeddings and head copied) or any checkpoint (``student: <folder or alias>``). It is trained with a
:class:`~slimformer.distill.trainer.DistillationTrainer`; the default loss set is the MiniLM-style one of
DESIGN.md: logits KD, hidden-state MSE (mapped layers), and MiniLM's last-layer self-attention distribution
and value-relation KL (Wang et al. 2020, arXiv:2002.10957). The fp32 student is saved with
:func:`~slimformer.checkpoint.save_model` and scored on the dev set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from slimformer import dist
from slimformer.distill.student import load_student, select_layers
from slimformer.errors import ConfigError
from slimformer.stages._holdout import HoldOutOptions
from slimformer.stages._kd import (
    KDTrainConfig,
    check_kd_stage,
    evaluate_model,
    load_teacher,
    save_student,
    teacher_dir,
    train_student,
)
from slimformer.stages.base import RunContext, register_stage

__all__ = ["DistillStageConfig", "run_distill"]


class DistillStageConfig(KDTrainConfig, HoldOutOptions):
    """The ``distill`` stage: a shallower student trained against the fine-tuned teacher."""

    student_layers: list[int] | None = Field(
        None, description="teacher layers (0-based, increasing) that make the student, e.g. [1, 3, 5]"
    )
    student: str | None = Field(None, description="or: a student checkpoint folder / alias to distill into")
    kd_losses: dict[str, float] = Field(
        default_factory=lambda: {
            "logits_kd": 1.0,
            "hidden_mse": 1.0,
            "minilm_attention_kl": 1.0,
            "minilm_value_relation_kl": 1.0,
        },
        description="{loss name: weight}; default: logits KD + hidden MSE + MiniLM attention / value relations",
    )
    learning_rate: float = Field(5e-5, gt=0, lt=1)

    @model_validator(mode="after")
    def _one_student(self) -> DistillStageConfig:
        if (self.student_layers is None) == (self.student is None):
            raise ConfigError("distill needs exactly one of student_layers: [...] or student: <checkpoint>")
        return self


def run_distill(
    config: DistillStageConfig,
    out: str | Path,
    *,
    teacher: str | Path,
    data_root: str | None = None,
    callbacks: list[Any] | None = None,
) -> dict[str, Any]:
    """Distill ``teacher`` into the configured student and save it to ``out``.

    Checkpoints go to ``<out>.trainer`` every ``save_steps`` steps; started again with the same config and
    teacher, an interrupted run continues from the last one. ``callbacks``: extra ``TrainerCallback`` s.

    With ``student_layers`` and no ``layer_map``, student layer ``i`` is paired with teacher layer
    ``student_layers[i]`` for the layer-wise losses.

    Returns:
        ``{"model_dir", "metrics", "num_layers", "kd_losses", "train_examples", "steps", "learning_curve"}``
        (``learning_curve``: the dev metrics after each epoch, the last point being ``metrics``).

    Raises:
        ConfigError: a layer index outside the teacher, a student deeper than the teacher, a loss set the
            models cannot give (e.g. layer-wise losses across depths without ``layer_map``), another task.
        ModelLoadError: bad teacher / student folder. DataError: missing data.
    """
    out = Path(out)
    loaded = load_teacher(teacher, config.task)
    if config.student_layers is not None:
        student, tok = select_layers(loaded.model, config.student_layers), loaded.tokenizer
        if config.layer_map is None:
            config = config.model_copy(update={"layer_map": dict(enumerate(config.student_layers))})
    else:
        student, tok = load_student(config.student, loaded.model, loaded.meta.labels)
    kd = config.loss()
    run = train_student(
        student,
        loaded.model if kd.needs_teacher else None,
        tok,
        config,
        teacher_meta=loaded.meta,
        work_dir=out.parent / f"{out.name}.trainer",
        data_root=data_root,
        identity={"teacher": str(Path(teacher).resolve())},
        callbacks=callbacks,
    )
    # several processes: equal weights on every rank now; the main process evaluates and writes (slimformer.dist)
    return dist.on_main(lambda: _finish(student, tok, config, loaded, teacher, out, run, kd, data_root))


def _finish(
    student: Any,
    tok: Any,
    config: DistillStageConfig,
    loaded: Any,
    teacher: str | Path,
    out: Path,
    run: Any,
    kd: Any,
    data_root: str | None,
) -> dict[str, Any]:
    """Score the trained student on the dev set and save it (the main process only)."""
    metrics = evaluate_model(student, tok, config, teacher_meta=loaded.meta, data_root=data_root)
    record = {
        "stage": "distill",
        "teacher": str(teacher),
        "num_layers": student.num_layers,
        "train_examples": run.train_examples,
        "steps": run.steps,
        "train_loss": run.train_loss,
        **({"held_out": run.held_out} if run.held_out is not None else {}),  # the search split (search_split.py)
        **({"held_out_context": run.held_out_context} if run.held_out_context is not None else {}),
    }
    save_student(student, tok, out, loaded.meta, config, record, metrics, run)
    return {
        "model_dir": str(out),
        "metrics": metrics,
        "num_layers": student.num_layers,
        "kd_losses": kd.losses,
        "train_examples": run.train_examples,
        "steps": run.steps,
        "learning_curve": run.learning_curve(metrics),
    }


@register_stage(
    "distill",
    DistillStageConfig,
    inherits=("task", "data", "seed"),
    trains=True,
    produces_model=True,
    check=check_kd_stage,
)
def _distill(ctx: RunContext, config: DistillStageConfig) -> dict[str, Any]:
    teacher = teacher_dir(ctx, config.teacher, "distill")
    return run_distill(config, ctx.stage_dir("distill"), teacher=teacher, data_root=ctx.data_root)
