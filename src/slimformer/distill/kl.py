"""KL-divergence helpers with an explicit direction, mask and reduction (METHODS.md §6).

The three papers slimformer follows use three KL conventions (METHODS.md §6):

* LAT in-place distillation (§1(b)): ``KLDivLoss(reduction="batchmean")(log p_full, p_sub)``, i.e.
  ``KL(p_sub ‖ p_full)`` -- the *student* distribution comes first (pitfall §1(f).1);
* KD-QAT ``L_map`` (§4(b)): ``KL(A_T ‖ A_S)`` per attention row, averaged over valid queries;
* textbook KD (Hinton et al. 2015): ``KL(p_T ‖ p_S)``, optionally times ``τ²``.

so every helper here names the direction explicitly: ``"teacher_student"`` is ``KL(p_T ‖ p_S)`` and
``"student_teacher"`` is ``KL(p_S ‖ p_T)``, with ``KL(p ‖ q) = Σ p (log p − log q)`` (§0). Teacher
tensors are always detached, so gradients reach the student only.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from slimformer.errors import ConfigError

__all__ = [
    "DIRECTIONS",
    "REDUCTIONS",
    "Direction",
    "Reduction",
    "kl_div",
    "kl_rows_from_log_probs",
    "kl_rows_from_probs",
    "mean_over_valid_queries",
]

Direction = Literal["teacher_student", "student_teacher"]
Reduction = Literal["batchmean", "mean", "sum", "none"]
DIRECTIONS: tuple[str, ...] = ("teacher_student", "student_teacher")
REDUCTIONS: tuple[str, ...] = ("batchmean", "mean", "sum", "none")


def check_direction(direction: str) -> None:
    """Raise :class:`ConfigError` unless ``direction`` is one of :data:`DIRECTIONS`."""
    if direction not in DIRECTIONS:
        raise ConfigError(f"unknown KL direction {direction!r}; expected one of {list(DIRECTIONS)}")


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ConfigError(f"unknown KL reduction {reduction!r}; expected one of {list(REDUCTIONS)}")


def kl_rows_from_log_probs(log_p: Tensor, log_q: Tensor, key_mask: Tensor | None = None) -> Tensor:
    """Row-wise ``KL(p ‖ q) = Σ_k p_k (log p_k − log q_k)`` over the last axis, from log-probabilities.

    Entries with ``p_k = 0`` contribute 0 (``0 · log 0 = 0``), and entries where ``key_mask`` is 0 are
    excluded (their ``log p``/``log q`` values are never used, so ``-inf``/``finfo.min`` there cannot
    produce NaN values or NaN gradients). No detaching happens here.

    Args:
        log_p: ``(..., K)`` log-probabilities of the first (target) distribution.
        log_q: ``(..., K)`` log-probabilities of the second distribution, same shape.
        key_mask: optional 0/1 mask broadcastable to ``(..., K)``; 1 = key included.

    Returns:
        ``(...)`` one KL value per row.
    """
    keep = torch.isfinite(log_p) & (log_p.exp() > 0)
    if key_mask is not None:
        keep = keep & key_mask.bool()
    safe_p = torch.where(keep, log_p, torch.zeros_like(log_p))
    safe_q = torch.where(keep, log_q, torch.zeros_like(log_q))
    terms = torch.where(keep, safe_p.exp() * (safe_p - safe_q), torch.zeros_like(safe_p))
    return terms.sum(dim=-1)


def kl_rows_from_probs(
    teacher_probs: Tensor,
    student_probs: Tensor,
    *,
    direction: Direction = "teacher_student",
    key_mask: Tensor | None = None,
    eps: float = 1e-8,
) -> Tensor:
    """Row-wise KL between two probability tensors over the last axis, both clamped at ``eps``.

    As in the KD-QAT ``L_map`` code (METHODS.md §4(b)): ``A_T ← max(A_T, eps)``, ``A_S ← max(A_S, eps)``,
    then ``Σ_k A_T (log A_T − log A_S)`` (``teacher_student``) or ``Σ_k A_S (log A_S − log A_T)``
    (``student_teacher``), summing only over keys with ``key_mask = 1``. The teacher is detached.

    Args:
        teacher_probs: ``(..., K)`` probabilities (rows sum to 1), e.g. attention maps ``(B, H, n, n)``.
        student_probs: same shape as ``teacher_probs``.
        direction: ``"teacher_student"`` = ``KL(p_T ‖ p_S)``, ``"student_teacher"`` = ``KL(p_S ‖ p_T)``.
        key_mask: optional 0/1 mask broadcastable to ``(..., K)``.
        eps: clamp floor for both tensors (1e-8 in the KD-QAT code).

    Returns:
        ``(...)`` one KL value per row (no reduction).

    Raises:
        ValueError: the shapes differ.
        ConfigError: unknown ``direction``.
    """
    check_direction(direction)
    if teacher_probs.shape != student_probs.shape:
        raise ValueError(f"teacher probs {tuple(teacher_probs.shape)} != student probs {tuple(student_probs.shape)}")
    log_t = teacher_probs.detach().clamp_min(eps).log()
    log_s = student_probs.clamp_min(eps).log()
    if direction == "teacher_student":
        return kl_rows_from_log_probs(log_t, log_s, key_mask)
    return kl_rows_from_log_probs(log_s, log_t, key_mask)


def kl_div(
    teacher_logits: Tensor,
    student_logits: Tensor,
    *,
    direction: Direction,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: Reduction = "batchmean",
    scale_by_temperature_squared: bool = False,
) -> Tensor:
    """KL divergence between ``softmax(z_T/τ)`` and ``softmax(z_S/τ)`` over the last axis.

    ``direction="teacher_student"``: ``KL(p_T ‖ p_S) = Σ_c p_T (log p_T − log p_S)`` (textbook KD,
    Hinton et al. 2015). ``direction="student_teacher"``: ``KL(p_S ‖ p_T)``, the direction of the LAT
    official code, ``KLDivLoss(batchmean)(log_softmax(z_full), softmax(z_sub))`` (METHODS.md §1(b) and
    pitfall §1(f).1). ``teacher_logits`` is detached in both cases: the gradient flows through the
    student only.

    Args:
        teacher_logits: ``(B, ..., C)`` teacher logits (``-inf``/``finfo.min`` entries get probability 0).
        student_logits: same shape as ``teacher_logits``.
        direction: ``"teacher_student"`` or ``"student_teacher"`` (keyword-only, no default on purpose).
        temperature: ``τ > 0``; both logits are divided by it before the softmax.
        mask: optional 0/1 *row* mask of shape ``(B, ...)`` (the leading axes, broadcastable); rows with 0
            are excluded from the sum and from the ``"mean"`` count.
        reduction: ``"batchmean"`` = sum over rows / ``B`` (size of axis 0, as ``torch.nn.KLDivLoss``);
            ``"mean"`` = sum / number of included rows (not torch's per-element mean); ``"sum"``;
            ``"none"`` = the per-row values ``(B, ...)`` (excluded rows hold 0).
        scale_by_temperature_squared: multiply by ``τ²`` (Hinton et al. 2015: keeps gradient magnitudes
            comparable across temperatures). Off by default; LAT uses ``τ = 1`` and no scaling.

    Returns:
        A scalar, or ``(B, ...)`` for ``reduction="none"``.

    Raises:
        ValueError: the logits' shapes differ, they are 0-d, or ``mask`` does not broadcast to the rows.
        ConfigError: unknown ``direction``/``reduction`` or ``temperature <= 0``.
    """
    check_direction(direction)
    _check_reduction(reduction)
    if not temperature > 0:
        raise ConfigError(f"KD temperature must be > 0, got {temperature}")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher logits {tuple(teacher_logits.shape)} != student logits {tuple(student_logits.shape)}"
        )
    if teacher_logits.dim() == 0:
        raise ValueError("kl_div needs logits with at least one axis (the class axis)")
    log_t = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    log_s = F.log_softmax(student_logits / temperature, dim=-1)
    rows = (
        kl_rows_from_log_probs(log_t, log_s) if direction == "teacher_student" else kl_rows_from_log_probs(log_s, log_t)
    )
    if mask is not None:
        try:
            row_mask = torch.broadcast_to(mask.to(rows.dtype), rows.shape)
        except RuntimeError as err:
            raise ValueError(f"mask {tuple(mask.shape)} does not broadcast to the rows {tuple(rows.shape)}") from err
        rows = torch.where(row_mask > 0, rows, torch.zeros_like(rows))
        count = row_mask.sum()
    else:
        count = torch.tensor(float(rows.numel()), dtype=rows.dtype, device=rows.device)
    if scale_by_temperature_squared:
        rows = rows * temperature**2
    if reduction == "none":
        return rows
    total = rows.sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / count.clamp_min(1)
    return total / (rows.shape[0] if rows.dim() > 0 else 1)


def mean_over_valid_queries(rows: Tensor, query_mask: Tensor | None) -> Tensor:
    """Average per-query values ``(B, H, n)`` as KD-QAT ``L_map`` does (METHODS.md §4(b), pitfall §4(f).3).

    For each example ``b`` and head ``h``: ``(1/n_b) Σ_{q valid} rows[b, h, q]`` with ``n_b`` the number of
    valid queries of example ``b`` (at least 1); then the mean over batch and heads.

    Args:
        rows: ``(B, H, n)`` one value per query (e.g. a row KL).
        query_mask: ``(B, n)`` 0/1 mask of real tokens, or ``None`` (every query valid).

    Returns:
        A scalar.
    """
    if query_mask is None:
        return rows.mean()
    m = query_mask.to(rows.dtype)[:, None, :]
    n_b = m.sum(dim=-1).clamp_min(1)
    return ((rows * m).sum(dim=-1) / n_b).mean()
