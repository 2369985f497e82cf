"""Distillation losses as plain functions of captured encoder internals (METHODS.md §1, §2, §4, §5).

Each function takes tensors from :class:`slimformer.models.EncoderOutput` (captured with
:class:`slimformer.models.Capture`) for the student and the teacher. Teacher tensors are detached
inside every function, so the teacher may be passed with ``requires_grad`` and only the student
receives gradients. Layer-wise losses take a list with one tensor per layer (a single tensor counts
as one layer) and are *summed* over layers, as in the KD-QAT code (§4(b)).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from slimformer.distill.kl import (
    Direction,
    Reduction,
    check_direction,
    kl_div,
    kl_rows_from_log_probs,
    kl_rows_from_probs,
    mean_over_valid_queries,
)
from slimformer.errors import ConfigError

if TYPE_CHECKING:
    from slimformer.models.encoder import EncoderOutput

__all__ = [
    "LOSSES",
    "Logits",
    "attention_map_kl",
    "attention_output_mse",
    "attention_score_mse",
    "context_mse",
    "hidden_mse",
    "logits_kd",
    "logits_mse",
    "minilm_attention_kl",
    "minilm_value_relation_kl",
    "prediction_loss",
    "sdq_attention_kl",
    "soft_cross_entropy",
    "unified_attention_loss",
    "unified_attention_loss_from_outputs",
]

#: Classification logits ``(B, C)``, or span-QA logits as a ``(start, end)`` pair of ``(B, N)`` tensors.
Logits = Tensor | tuple[Tensor, Tensor]
Layers = Tensor | Sequence[Tensor]


def _span_mean(fn: Callable[[Tensor, Tensor], Tensor], student: Logits, teacher: Logits) -> Tensor:
    """Apply ``fn`` to a tensor pair, or average it over the (start, end) pairs of span QA."""
    if isinstance(student, Tensor) and isinstance(teacher, Tensor):
        return fn(student, teacher)
    if isinstance(student, Tensor) or isinstance(teacher, Tensor) or len(student) != 2 or len(teacher) != 2:
        raise ValueError("span-QA logits must be (start, end) pairs for both student and teacher")
    return 0.5 * (fn(student[0], teacher[0]) + fn(student[1], teacher[1]))


def _check_shapes(student: Tensor, teacher: Tensor, what: str) -> None:
    if student.shape != teacher.shape:
        raise ValueError(f"{what}: student shape {tuple(student.shape)} != teacher shape {tuple(teacher.shape)}")


def _layers(x: Layers) -> list[Tensor]:
    return [x] if isinstance(x, Tensor) else list(x)


def _pairs(student: Layers, teacher: Layers, layer_map: Mapping[int, int] | None, what: str):
    """``(student_layer, teacher_layer)`` tensor pairs, checking counts, map indices and shapes."""
    s, t = _layers(student), _layers(teacher)
    if layer_map is None:
        if len(s) != len(t):
            raise ConfigError(
                f"{what}: student has {len(s)} layers but teacher has {len(t)}; "
                "pass a layer_map {student_layer: teacher_layer} to distill models of different depth"
            )
        layer_map = {i: i for i in range(len(s))}
    if not layer_map:
        raise ConfigError(f"{what}: layer_map is empty")
    out = []
    for si, ti in layer_map.items():
        if not 0 <= si < len(s):
            raise ConfigError(f"{what}: layer_map student index {si} is outside the student's 0..{len(s) - 1}")
        if not 0 <= ti < len(t):
            raise ConfigError(f"{what}: layer_map teacher index {ti} is outside the teacher's 0..{len(t) - 1}")
        _check_shapes(s[si], t[ti], f"{what} (student layer {si}, teacher layer {ti})")
        out.append((s[si], t[ti].detach()))
    return out


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


def hidden_mse(student_hidden: Layers, teacher_hidden: Layers, *, layer_map: Mapping[int, int] | None = None) -> Tensor:
    """KD-QAT / TernaryBERT ``L_rep = Σ_l MSE(X_S^l, X_T^l)`` (METHODS.md §4(b)).

    ``MSE`` is the mean over all elements of a layer (``nn.MSELoss()`` default), summed over the mapped
    layers. With ``hidden_states`` from :class:`~slimformer.models.EncoderOutput` index 0 is the embedding
    output, so the default identity map gives the ``L + 1`` terms of the paper.

    Args:
        student_hidden: list of ``(B, n, D)`` tensors (or one tensor).
        teacher_hidden: list of ``(B, n, D)`` tensors; detached.
        layer_map: ``{student_index: teacher_index}``; ``None`` = identity, which needs equal counts.

    Returns:
        A scalar.

    Raises:
        ConfigError: layer counts differ without a ``layer_map`` (names both counts); a map index is outside
            either model (names the index); the map is empty.
        ValueError: a mapped pair has different shapes (e.g. different hidden sizes or lengths).
    """
    pairs = _pairs(student_hidden, teacher_hidden, layer_map, "hidden_mse")
    return torch.stack([F.mse_loss(s, t) for s, t in pairs]).sum()


def attention_score_mse(
    student_scores: Layers,
    teacher_scores: Layers,
    *,
    mask_threshold: float = -1e4,
    layer_map: Mapping[int, int] | None = None,
) -> Tensor:
    """TernaryBERT's ``L_score = Σ_l MSE(S̃_S^l, S̃_T^l)`` (METHODS.md §4(b)).

    ``S̃`` is the score tensor with masked entries replaced by 0, each tensor zeroed by its own values
    (``S ≤ mask_threshold → 0``). Pitfall §4(f).4: the original rule ``S ≤ −100`` assumed the
    ``−10000`` additive mask; our encoder adds ``finfo.min`` (≈ −3.4e38 in fp32), whose square would
    overflow the MSE if left in. Any threshold between the real scores and the mask value works; the
    default ``−1e4`` also catches the HF ``−10000`` mask. Real scores at or below it would be zeroed too.

    Args:
        student_scores: list of ``(B, H, n, n)`` scores ``QKᵀ/√d_h + mask``.
        teacher_scores: same; detached.
        mask_threshold: entries ``≤`` this value count as masked.
        layer_map: as in :func:`hidden_mse`.

    Returns:
        A scalar (MSE mean over all elements, summed over layers).

    Raises:
        ConfigError, ValueError: as in :func:`hidden_mse`.
    """
    pairs = _pairs(student_scores, teacher_scores, layer_map, "attention_score_mse")

    def zeroed(x: Tensor) -> Tensor:
        return torch.where(x <= mask_threshold, torch.zeros_like(x), x)

    return torch.stack([F.mse_loss(zeroed(s), zeroed(t)) for s, t in pairs]).sum()


def _check_mask(mask: Tensor | None, probs: Tensor, what: str) -> None:
    if mask is not None and (mask.dim() != 2 or mask.shape[0] != probs.shape[0] or mask.shape[1] != probs.shape[-1]):
        raise ValueError(f"{what}: attention_mask {tuple(mask.shape)} does not match (B, n) of {tuple(probs.shape)}")


def _map_kl_one(s: Tensor, t: Tensor, mask: Tensor | None, eps: float, what: str) -> Tensor:
    if s.dim() != 4:
        raise ValueError(f"{what}: expected (B, H, n, n) attention probabilities, got {tuple(s.shape)}")
    _check_mask(mask, s, what)
    key_mask = None if mask is None else mask[:, None, None, :]
    rows = kl_rows_from_probs(t, s, direction="teacher_student", key_mask=key_mask, eps=eps)
    return mean_over_valid_queries(rows, mask)


def attention_map_kl(
    student_probs: Layers,
    teacher_probs: Layers,
    attention_mask: Tensor | None = None,
    *,
    layer_map: Mapping[int, int] | None = None,
    eps: float = 1e-8,
    layer_reduction: str = "sum",
) -> Tensor:
    """KD-QAT ``L_map`` (Kim et al., EMNLP 2022; METHODS.md §4(b), pitfall §4(f).3).

    Per layer: ``mean_{b,h} (1/n_b) Σ_{q<n_b} Σ_{k<n_b} A_T[b,h,q,k] (log A_T − log A_S)`` with both maps
    clamped at ``eps`` and padded queries and keys excluded via ``attention_mask``; then summed over layers.
    Direction ``KL(A_T ‖ A_S)``.

    Args:
        student_probs: list of ``(B, H, n, n)`` attention probabilities (``EncoderOutput.attentions``).
        teacher_probs: same; detached.
        attention_mask: ``(B, n)`` 0/1 mask of real tokens (1 = real); ``None`` = no padding.
        layer_map: as in :func:`hidden_mse`.
        eps: clamp floor of both maps (1e-8 in the KD-QAT code).
        layer_reduction: ``"sum"`` (KD-QAT) or ``"mean"`` over layers (the SDQ reconstruction, §5(b)).

    Returns:
        A scalar.

    Raises:
        ConfigError: bad ``layer_reduction``; layer counts / map indices as in :func:`hidden_mse`.
        ValueError: shapes differ (including head counts), tensors are not 4-D, or the mask is not ``(B, n)``.
    """
    if layer_reduction not in ("sum", "mean"):
        raise ConfigError(f"layer_reduction must be 'sum' or 'mean', got {layer_reduction!r}")
    pairs = _pairs(student_probs, teacher_probs, layer_map, "attention_map_kl")
    per_layer = torch.stack([_map_kl_one(s, t, attention_mask, eps, "attention_map_kl") for s, t in pairs])
    return per_layer.sum() if layer_reduction == "sum" else per_layer.mean()


def sdq_attention_kl(
    student_probs: Layers, teacher_probs: Layers, attention_mask: Tensor | None = None, *, eps: float = 1e-8
) -> Tensor:
    """SDQ attention term, OUR RECONSTRUCTION (METHODS.md §5(b); exact equation NOT FOUND in the paper).

    ``(1/(L·H)) Σ_l Σ_h mean_{valid q} KL(A_T^{l,h}[q,:] ‖ A_S^{l,h}[q,:])``, also averaged over the batch:
    :func:`attention_map_kl` with ``layer_reduction="mean"``. Same shapes and errors.
    """
    return attention_map_kl(student_probs, teacher_probs, attention_mask, eps=eps, layer_reduction="mean")


def attention_output_mse(
    student_outs: Layers, teacher_outs: Layers, *, layer_map: Mapping[int, int] | None = None
) -> Tensor:
    """KD-QAT ``L_out = Σ_l MSE(O_S^l, O_T^l)`` (METHODS.md §4(b), pitfall §4(f).6).

    ``O^l`` is the attention sub-layer output *after* residual and LayerNorm
    (``EncoderOutput.attention_outputs``), ``(B, n, D)`` per layer; MSE mean over elements, summed over layers.

    Raises:
        ConfigError, ValueError: as in :func:`hidden_mse`.
    """
    pairs = _pairs(student_outs, teacher_outs, layer_map, "attention_output_mse")
    return torch.stack([F.mse_loss(s, t) for s, t in pairs]).sum()


def context_mse(
    student_contexts: Layers, teacher_contexts: Layers, *, layer_map: Mapping[int, int] | None = None
) -> Tensor:
    """MSE on per-head contexts ``C^l = A^l V^l`` (KD-QAT code option, off by default; METHODS.md §4(b)).

    ``(B, H, n, d_h)`` per layer (``EncoderOutput.contexts``); MSE mean over elements, summed over layers.

    Raises:
        ConfigError, ValueError: as in :func:`hidden_mse` (head counts and sizes must match).
    """
    pairs = _pairs(student_contexts, teacher_contexts, layer_map, "context_mse")
    return torch.stack([F.mse_loss(s, t) for s, t in pairs]).sum()


def unified_attention_loss(
    map_loss: Tensor, out_loss: Tensor, *, beta_map: float = 1.0, beta_out: float = 1.0
) -> Tensor:
    """KD-QAT unified attention term ``β_map · L_map + β_out · L_out`` (METHODS.md §4(b), default β = 1)."""
    return beta_map * map_loss + beta_out * out_loss


def unified_attention_loss_from_outputs(
    student: EncoderOutput,
    teacher: EncoderOutput,
    attention_mask: Tensor | None,
    *,
    beta_map: float = 1.0,
    beta_out: float = 1.0,
    layer_map: Mapping[int, int] | None = None,
) -> Tensor:
    """``β_map · L_map + β_out · L_out`` from two captured forwards (METHODS.md §4(b)).

    A term whose β is 0 is skipped (its capture is then not needed).

    Args:
        student: needs ``attentions`` (if ``beta_map != 0``) and ``attention_outputs`` (if ``beta_out != 0``).
        teacher: same captures; detached.
        attention_mask: ``(B, n)`` 0/1 mask of real tokens for ``L_map``.
        beta_map, beta_out: the weights.
        layer_map: as in :func:`hidden_mse`.

    Raises:
        ValueError: a needed capture is ``None`` (names the :class:`~slimformer.models.Capture` field).
        ConfigError: as in :func:`attention_map_kl` / :func:`attention_output_mse`.
    """
    total: Tensor | None = None
    for beta, field, fn in (
        (beta_map, "attentions", lambda s, t: attention_map_kl(s, t, attention_mask, layer_map=layer_map)),
        (beta_out, "attention_outputs", lambda s, t: attention_output_mse(s, t, layer_map=layer_map)),
    ):
        if beta == 0:
            continue
        s, t = getattr(student, field), getattr(teacher, field)
        if s is None or t is None:
            raise ValueError(f"unified_attention_loss needs Capture({field}=True) for student and teacher")
        term = beta * fn(s, t)
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return total


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


#: Name → loss function, for recipes.
LOSSES: dict[str, Callable[..., Tensor]] = {
    "kl_div": kl_div,
    "logits_kd": logits_kd,
    "soft_cross_entropy": soft_cross_entropy,
    "logits_mse": logits_mse,
    "prediction": prediction_loss,
    "hidden_mse": hidden_mse,
    "attention_score_mse": attention_score_mse,
    "attention_map_kl": attention_map_kl,
    "sdq_attention_kl": sdq_attention_kl,
    "attention_output_mse": attention_output_mse,
    "context_mse": context_mse,
    "unified_attention": unified_attention_loss,
    "unified_attention_from_outputs": unified_attention_loss_from_outputs,
    "minilm_attention_kl": minilm_attention_kl,
    "minilm_value_relation_kl": minilm_value_relation_kl,
}
