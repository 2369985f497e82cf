"""Prediction-layer distillation (METHODS §1(b), §4(b) L_pred).

Logits KD with temperature and an explicit KL direction, soft cross-entropy, and MSE for regression.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor

from slimformer.distill.kl import (
    Direction,
    Reduction,
    kl_div,
)

if TYPE_CHECKING:
    pass

from slimformer.distill._common import Logits, _check_shapes, _span_mean


def logits_kd(
    student_logits: Logits,
    teacher_logits: Logits,
    *,
    temperature: float = 1.0,
    direction: Direction = "teacher_student",
    scale_by_temperature_squared: bool = False,
    reduction: Reduction = "batchmean",
) -> Tensor:
    """Logit distillation by KL divergence (Hinton et al. 2015; LAT in-place KD, METHODS.md §1(b)).

    ``KL`` over the class axis (or over sequence positions for span QA, then the mean of the start and
    end terms, as LAT does) of ``softmax(z/τ)``; see :func:`slimformer.distill.kl.kl_div` for the
    direction and reduction. LAT reproduction: ``direction="student_teacher"``, ``τ = 1``, ``batchmean``.

    Args:
        student_logits: ``(B, C)`` or a ``(start, end)`` pair of ``(B, N)``.
        teacher_logits: same structure and shapes; detached.
        temperature: ``τ > 0``.
        direction: ``"teacher_student"`` = ``KL(p_T ‖ p_S)``; ``"student_teacher"`` = ``KL(p_S ‖ p_T)``.
        scale_by_temperature_squared: multiply by ``τ²``.
        reduction: as in :func:`~slimformer.distill.kl.kl_div` (default ``"batchmean"``: sum / ``B``).

    Returns:
        A scalar (or per-row values for ``reduction="none"``; for span QA their start/end mean).

    Raises:
        ValueError: shapes differ, or only one side is a span pair.
        ConfigError: bad ``direction``/``reduction``/``temperature``.
    """

    def one(s: Tensor, t: Tensor) -> Tensor:
        return kl_div(
            t,
            s,
            direction=direction,
            temperature=temperature,
            reduction=reduction,
            scale_by_temperature_squared=scale_by_temperature_squared,
        )

    return _span_mean(one, student_logits, teacher_logits)


def soft_cross_entropy(student_logits: Logits, teacher_logits: Logits) -> Tensor:
    """KD-QAT ``L_pred`` for classification: ``mean_b Σ_c −softmax(z_T)_c · log softmax(z_S)_c`` (§4(b)).

    Temperature 1. The mean runs over every leading position (the batch for ``(B, C)``); span QA
    ``(start, end)`` pairs give the mean of the two terms. Equals ``KL(p_T ‖ p_S)`` plus the teacher's
    entropy, a constant, so the student gradient is that of ``logits_kd(..., direction="teacher_student")``.

    Args:
        student_logits: ``(B, C)`` or a ``(start, end)`` pair of ``(B, N)``.
        teacher_logits: same structure and shapes; detached.

    Returns:
        A scalar.

    Raises:
        ValueError: shapes differ, or only one side is a span pair.
    """

    def one(s: Tensor, t: Tensor) -> Tensor:
        _check_shapes(s, t, "soft_cross_entropy")
        return -(F.softmax(t.detach(), dim=-1) * F.log_softmax(s, dim=-1)).sum(dim=-1).mean()

    return _span_mean(one, student_logits, teacher_logits)


def logits_mse(student_logits: Logits, teacher_logits: Logits) -> Tensor:
    """Mean squared error of logits (KD-QAT ``L_pred`` for regression, e.g. STS-B, METHODS.md §4(b)).

    Args:
        student_logits: ``(B, 1)`` (any shape; a span pair gives the mean of both terms).
        teacher_logits: same shape; detached.

    Returns:
        A scalar, the mean over all elements.

    Raises:
        ValueError: shapes differ.
    """

    def one(s: Tensor, t: Tensor) -> Tensor:
        _check_shapes(s, t, "logits_mse")
        return F.mse_loss(s, t.detach())

    return _span_mean(one, student_logits, teacher_logits)


def prediction_loss(student_logits: Logits, teacher_logits: Logits) -> Tensor:
    """KD-QAT ``L_pred`` (METHODS.md §4(b)): :func:`logits_mse` if ``num_labels == 1`` (last axis of size 1,
    regression), else :func:`soft_cross_entropy` (span pairs: soft CE over positions, start/end mean).

    Raises:
        ValueError: shapes differ, or only one side is a span pair.
    """
    if isinstance(student_logits, Tensor) and student_logits.dim() > 0 and student_logits.shape[-1] == 1:
        return logits_mse(student_logits, teacher_logits)
    return soft_cross_entropy(student_logits, teacher_logits)
