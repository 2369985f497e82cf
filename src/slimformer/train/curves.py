"""Learning curves: the dev metric after each training epoch, kept across a kill and a resume.

:class:`LearningCurve` is a ``TrainerCallback``. At the end of every epoch but the last it scores the model with
the stage's own scoring function (the stage's dev set and metric; this layer does not import
:mod:`slimformer.evaluate`) on the main process (:func:`slimformer.dist.on_main`, reached by every rank, so all
hold the same points), puts the model back in train mode, and writes the points to ``learning_curve.json`` in the
Trainer's checkpoint folder (atomically). The last epoch is scored once, by the stage's final evaluation:
:meth:`LearningCurve.with_final` appends that point.

A point is ``{"epoch": float, "step": int, "metrics": {...}}``: ``epoch`` in epochs (``TrainerState.epoch``, 1.0
at the end of the first), ``step`` in optimizer steps (``global_step``), ``metrics`` as the stage's scorer returns
them (GLUE fractions, SQuAD points).

Resume: at the start of training (after the Trainer restored its state) the points are read back and those whose
step is beyond the checkpoint resumed from are dropped (:func:`load_curve`): a run killed after an epoch's point was
written but before the next checkpoint redoes that epoch and scores it again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from slimformer import dist
from slimformer.io import atomic_write_json, read_json

__all__ = ["CURVE_FILE", "LearningCurve", "Scorer", "curve_point", "load_curve"]

#: The file in the Trainer's checkpoint folder holding the points recorded so far.
CURVE_FILE = "learning_curve.json"

#: ``score(model) -> {metric: value}``: the stage's dev evaluation of the (unwrapped) model being trained.
Scorer = Callable[[Any], dict[str, float]]


def curve_point(epoch: float, step: int, metrics: dict[str, float]) -> dict[str, Any]:
    """One point of a learning curve: ``epoch`` (epochs trained), ``step`` (optimizer steps) and the metrics."""
    return {"epoch": float(epoch), "step": int(step), "metrics": dict(metrics)}


def load_curve(folder: str | Path, step: int) -> list[dict[str, Any]]:
    """The points recorded in ``folder/learning_curve.json`` up to optimizer step ``step`` (inclusive).

    Points beyond ``step`` belong to training that the checkpoint being resumed from does not hold (a kill came
    after the point was written, before the next checkpoint); they are dropped and recorded again when training
    gets there. No file, or one that cannot be read: no points.

    Args:
        folder: the Trainer's checkpoint folder.
        step: the optimizer step training resumes from (0: from scratch).
    """
    path = Path(folder) / CURVE_FILE
    if not path.is_file():
        return []
    try:
        points = read_json(path)["points"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [p for p in points if int(p["step"]) <= step]


class LearningCurve(TrainerCallback):
    """Score the model at the end of every epoch except the last and keep the points (see module notes).

    Args:
        score: the stage's dev evaluation, run on the main process only; it may put the model in eval mode (the
            model is put back in train mode afterwards).
        enabled: ``False``: no intermediate evaluation, nothing read or written; the curve holds only the final
            point (``TrainingOptions.eval_each_epoch``).

    Attributes:
        points: the per-epoch points so far (equal on every process).
    """

    def __init__(self, score: Scorer, *, enabled: bool = True) -> None:
        self.score = score
        self.enabled = enabled
        self.points: list[dict[str, Any]] = []
        self._end: tuple[float, int] | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Read back the points of an interrupted run up to the step training resumes from."""
        folder, step = Path(args.output_dir), state.global_step
        self.points = dist.on_main(lambda: load_curve(folder, step)) if self.enabled else []

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Score the model unless this is the last epoch (the stage's final evaluation gives that point)."""
        if not self.enabled or state.global_step >= state.max_steps:
            return
        model = kwargs["model"]
        inner = getattr(model, "module", model)  # several processes: the DDP wrapper's module
        folder = Path(args.output_dir)

        def record() -> list[dict[str, Any]]:
            points = [*self.points, curve_point(state.epoch, state.global_step, self.score(inner))]
            atomic_write_json(folder / CURVE_FILE, {"points": points})
            return points

        self.points = dist.on_main(record)  # every rank calls it (a collective); the main one scores
        model.train()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._end = (float(state.epoch or 0.0), int(state.global_step))

    def with_final(self, metrics: dict[str, float]) -> list[dict[str, Any]]:
        """The whole curve: the per-epoch points, then ``metrics`` (the stage's final evaluation) at the epoch and
        step training ended at.

        Raises:
            RuntimeError: training has not ended.
        """
        if self._end is None:
            raise RuntimeError("LearningCurve.with_final: training has not ended (no on_train_end seen)")
        return [*self.points, curve_point(*self._end, metrics)]
