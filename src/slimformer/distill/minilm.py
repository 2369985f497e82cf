"""MiniLM self-attention distribution and value-relation transfer (Wang et al. 2020, arXiv:2002.10957)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from slimformer.distill._common import _check_shapes
from slimformer.distill.kl import (
    Direction,
    check_direction,
    kl_rows_from_log_probs,
    mean_over_valid_queries,
)
from slimformer.distill.layerwise import _map_kl_one

if TYPE_CHECKING:
    pass


def _check_heads(s: Tensor, t: Tensor, what: str) -> None:
    if s.dim() != 4 or t.dim() != 4:
        raise ValueError(f"{what}: expected 4-D (B, H, n, ·) tensors, got {tuple(s.shape)} and {tuple(t.shape)}")
    if s.shape[1] != t.shape[1]:
        raise ValueError(f"{what}: student has {s.shape[1]} heads but teacher has {t.shape[1]}; they must match")
    if s.shape[0] != t.shape[0] or s.shape[2] != t.shape[2]:
        raise ValueError(f"{what}: batch/length differ: student {tuple(s.shape)}, teacher {tuple(t.shape)}")


def minilm_attention_kl(
    student_probs_last: Tensor, teacher_probs_last: Tensor, mask: Tensor | None = None, *, eps: float = 1e-8
) -> Tensor:
    """MiniLM self-attention distribution transfer (Wang et al. 2020, arXiv:2002.10957, Eq. 7; METHODS.md §2(b)).

    ``L_AT = (1/(A_h |x|)) Σ_a Σ_t KL(A_T[a,t,:] ‖ A_S[a,t,:])`` on the *last* layer of each model, averaged
    over heads and valid queries (``1/n_b`` per example), then over the batch; padded keys are excluded and
    both maps are clamped at ``eps``. Identical to one layer of :func:`attention_map_kl`.

    Args:
        student_probs_last: ``(B, H, n, n)``, e.g. ``student_out.attentions[-1]``.
        teacher_probs_last: ``(B, H, n, n)``; detached.
        mask: ``(B, n)`` 0/1 mask of real tokens, or ``None``.
        eps: clamp floor.

    Returns:
        A scalar.

    Raises:
        ValueError: head counts differ (names both), other shape mismatches, or a bad mask shape.
    """
    _check_heads(student_probs_last, teacher_probs_last, "minilm_attention_kl")
    _check_shapes(student_probs_last, teacher_probs_last, "minilm_attention_kl")
    return _map_kl_one(student_probs_last, teacher_probs_last.detach(), mask, eps, "minilm_attention_kl")


def _value_relation_log(values: Tensor, mask: Tensor | None) -> Tensor:
    scores = values @ values.transpose(-1, -2) / math.sqrt(values.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask.bool()[:, None, None, :], torch.finfo(scores.dtype).min)
    return F.log_softmax(scores, dim=-1)


def minilm_value_relation_kl(
    student_values_last: Tensor,
    teacher_values_last: Tensor,
    mask: Tensor | None = None,
    *,
    direction: Direction = "teacher_student",
) -> Tensor:
    """MiniLM value-relation transfer (Wang et al. 2020, arXiv:2002.10957, Eqs. 8–10; METHODS.md §2(b)).

    ``VR = softmax(V Vᵀ / √d_h)`` per head over the keys (masked keys excluded), each model with its own
    ``d_h``; ``L_VR = (1/(A_h |x|)) Σ_a Σ_t KL(VR_T[a,t,:] ‖ VR_S[a,t,:])`` averaged over heads and valid
    queries (``1/n_b`` per example), then over the batch. Computed in log space (no clamping).

    Args:
        student_values_last: ``(B, H, n, d_h^S)`` last-layer values (``student_out.values[-1]``).
        teacher_values_last: ``(B, H, n, d_h^T)``; detached. Head sizes may differ, head counts may not.
        mask: ``(B, n)`` 0/1 mask of real tokens, or ``None``.
        direction: ``"teacher_student"`` (MiniLM) or ``"student_teacher"``.

    Returns:
        A scalar (0 for identical values).

    Raises:
        ValueError: head counts differ (names both), batch/length differ, or a bad mask shape.
        ConfigError: unknown ``direction``.
    """
    check_direction(direction)
    _check_heads(student_values_last, teacher_values_last, "minilm_value_relation_kl")
    batch, _, length, _ = student_values_last.shape
    if mask is not None and tuple(mask.shape) != (batch, length):
        raise ValueError(
            f"minilm_value_relation_kl: mask {tuple(mask.shape)} does not match (B, n) of "
            f"{tuple(student_values_last.shape)}"
        )
    log_s = _value_relation_log(student_values_last, mask)
    log_t = _value_relation_log(teacher_values_last.detach(), mask)
    key_mask = None if mask is None else mask[:, None, None, :]
    if direction == "teacher_student":
        rows = kl_rows_from_log_probs(log_t, log_s, key_mask)
    else:
        rows = kl_rows_from_log_probs(log_s, log_t, key_mask)
    return mean_over_valid_queries(rows, mask)
