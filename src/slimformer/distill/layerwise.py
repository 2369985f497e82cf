"""Layer-wise distillation losses over captured internals (METHODS §4(b), §5(b)).

Hidden states, attention scores / maps / outputs, contexts, and the unified map + output weighting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from slimformer.distill.kl import (
    kl_rows_from_probs,
    mean_over_valid_queries,
)
from slimformer.errors import ConfigError

if TYPE_CHECKING:
    from slimformer.models.encoder import EncoderOutput

from slimformer.distill._common import Layers, _pairs


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
