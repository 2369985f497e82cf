"""Knowledge distillation with the Hugging Face Trainer: only ``compute_loss`` changes (STYLE.md §8).

The student is the Trainer's model; the teacher is frozen (``requires_grad`` off, ``eval`` mode, forward
under ``torch.no_grad``), so it never enters the autograd graph and never reaches the optimizer. Both run
through :func:`~slimformer.models.encoder_forward`, capturing only the internals the chosen
:class:`~slimformer.distill.loss.DistillationLoss` terms need. Schedules (e.g. the SDQ Quant-Noise rate)
are ``TrainerCallback`` s, not Trainer overrides.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import Trainer

from slimformer.distill.loss import DistillationLoss
from slimformer.tasks.data import MODEL_INPUTS

__all__ = ["DistillationTrainer", "freeze_teacher", "LABEL_KEYS"]

#: Batch keys holding ground-truth targets (classification / regression labels, span-QA answer positions).
LABEL_KEYS = ("labels", "start_positions", "end_positions")


def freeze_teacher(teacher: nn.Module) -> nn.Module:
    """Put ``teacher`` in ``eval`` mode and switch ``requires_grad`` off for all its parameters (in place)."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class DistillationTrainer(Trainer):
    """A ``transformers.Trainer`` whose loss is a :class:`DistillationLoss` of student and teacher.

    Args:
        *args, **kwargs: as for ``transformers.Trainer`` (``model`` is the student :class:`SlimModel`).
        teacher: the teacher :class:`SlimModel`, frozen here and moved to the training device; may be ``None``
            when ``kd_loss`` has no distillation term (ground-truth training only, e.g. plain QAT).
        kd_loss: the loss set.

    Raises:
        ConfigError: from :meth:`DistillationLoss.validate`, before any training step (incompatible models,
            missing layer map, a term the models cannot give).

    Attributes:
        last_loss_terms: the unweighted terms of the last training batch (``{"gt" | loss name: scalar}``).
    """

    def __init__(self, *args: Any, teacher: nn.Module | None, kd_loss: DistillationLoss, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        kd_loss.validate(self.model, teacher)
        self.kd_loss = kd_loss
        self.teacher = None
        if kd_loss.needs_teacher and teacher is not None:
            self.teacher = freeze_teacher(teacher).to(self.args.device)
        self.last_loss_terms: dict[str, Tensor] = {}

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, Any]:
        """``kd_loss(student(inputs), teacher(inputs))`` on one batch.

        Args:
            model: the student (possibly wrapped by the Trainer).
            inputs: ``input_ids`` / ``attention_mask`` [/ ``token_type_ids``] ``(B, N)`` and the targets.
            return_outputs: also return the student's :class:`TaskOutput`.
            num_items_in_batch: unused (every term is a mean already).

        Returns:
            The scalar loss, or ``(loss, student_output)``.
        """
        kd = self.kd_loss
        model_inputs = {k: v for k, v in inputs.items() if k in MODEL_INPUTS}
        targets = {k: v for k, v in inputs.items() if k in LABEL_KEYS} if kd.gt_weight else {}
        capture = kd.capture
        student_out = model(**model_inputs, **targets, capture=capture)
        teacher_out = None
        if self.teacher is not None:
            if self.teacher.training:  # something called .train() on it: the teacher always runs without dropout
                self.teacher.eval()
            with torch.no_grad():
                teacher_out = self.teacher(**model_inputs, capture=capture)
        loss, self.last_loss_terms = kd(student_out, teacher_out, model_inputs.get("attention_mask"))
        return (loss, student_out) if return_outputs else loss
