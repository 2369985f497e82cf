"""Stateless quantization primitives: uniform k-bit, ternary (TWN), binary (BWN), LSQ and Quant-Noise.

Everything here is a plain function of tensors (``nn.Module`` s only hold state and call these). Straight-through
estimators (STE) are ``torch.autograd.Function`` s; statistics (scales, thresholds) are computed on detached values
and get no gradient, except the learnable LSQ step.

Conventions (see METHODS.md §4(b), §5(b)):

* Supported uniform bit widths: :data:`SUPPORTED_BITS` = ``(2, 3, 4, 8)``. 1 bit is :func:`binarize`; ternary
  ("2-bit" in TernaryBERT) is :func:`ternarize`. Widths above 8 are not supported because codes are stored
  as ``int8`` / ``uint8``.
* Symmetric = signed, zero point 0, **narrow** range ``[-(2^(b-1)-1), 2^(b-1)-1]`` (int8: -127..127, so at most
  255 distinct values; the TernaryBERT / KD-QAT ``SymQuantizer``). Asymmetric = unsigned ``[0, 2^b-1]`` with an
  integer zero point; the float range always includes 0 so that 0 is exactly representable.
* Rounding is ``torch.round`` (half to even).
* Clipped STE: the gradient passes unchanged where ``|x| < clip`` and is 0 where ``|x| >= clip``
  (KD-QAT ``utils_quant.py``); without a clip the dynamic range covers every element, so the gradient is identity.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from slimformer.errors import ConfigError
from slimformer.quant.granularity import Granularity, PerGroup, PerTensor, group_layout, to_groups

__all__ = [
    "SUPPORTED_BITS",
    "quant_range",
    "choose_qparams",
    "quantize",
    "dequantize",
    "fake_quantize",
    "ternary_codes",
    "ternarize",
    "binarize",
    "lsq_quantize",
    "quant_noise",
]

SUPPORTED_BITS: tuple[int, ...] = (2, 3, 4, 8)
"""Bit widths of the uniform quantizers (``choose_qparams`` ... ``lsq_quantize``, ``quant_noise``)."""


# --------------------------------------------------------------------------------------------- validation


def _check_bits(bits: Any) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in SUPPORTED_BITS:
        supported = ", ".join(str(b) for b in SUPPORTED_BITS)
        raise ConfigError(f"bits must be one of {supported} for uniform quantization, got {bits!r}")
    return bits


def _check_positive(name: str, value: Any) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    if not ok:
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def quant_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer range ``(qmin, qmax)`` of a ``bits``-bit quantizer.

    Args:
        bits: Bit width, one of :data:`SUPPORTED_BITS`.
        symmetric: Signed narrow range ``(-(2^(b-1)-1), 2^(b-1)-1)`` if True, unsigned ``(0, 2^b-1)`` if False.

    Returns:
        ``(qmin, qmax)``, e.g. ``(-127, 127)`` for symmetric 8-bit, ``(0, 15)`` for asymmetric 4-bit.

    Raises:
        ConfigError: ``bits`` is not supported.
    """
    bits = _check_bits(bits)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        return -qmax, qmax
    return 0, 2**bits - 1


# --------------------------------------------------------------------------------------------- uniform


def choose_qparams(
    x: torch.Tensor,
    bits: int,
    *,
    symmetric: bool = True,
    granularity: Granularity = PerTensor(),
    eps: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of min/max (dynamic) uniform quantization.

    Symmetric: ``scale = max|x| / qmax``, ``zero_point = 0``. Asymmetric: ``lo = min(min x, 0)``,
    ``hi = max(max x, 0)``, ``scale = (hi - lo) / (qmax - qmin)``, ``zero_point = clamp(qmin - round(lo / scale))``.
    Statistics are taken per group of ``granularity`` on ``x.detach()``.

    Args:
        x: Float tensor, any shape accepted by ``granularity`` (e.g. ``(out, in)`` weight, ``(batch, seq, hidden)``
            activation).
        bits: Bit width (bits), one of :data:`SUPPORTED_BITS`.
        symmetric: Signed narrow range with zero point 0, or unsigned range with a zero point.
        granularity: Which elements share a scale (:mod:`slimformer.quant.granularity`).
        eps: Lower bound on the scale (avoids dividing by 0 on an all-zero group); default
            ``torch.finfo(x.dtype).eps``.

    Returns:
        ``(scale, zero_point)``, both of shape ``group_layout(x.shape, granularity).scale_shape`` (e.g. ``(1, 1)``
        per tensor, ``(out, 1)`` per row, ``(out, in // n, 1)`` per group of ``n``); scale has ``x``'s dtype,
        zero_point is ``int32``.

    Raises:
        ConfigError: Unsupported ``bits``, non-positive ``eps``, or a granularity that does not fit ``x``.
    """
    qmin, qmax = quant_range(bits, symmetric)
    eps = torch.finfo(x.dtype).eps if eps is None else _check_positive("eps", eps)
    view, layout = to_groups(x.detach(), granularity)
    dims = layout.reduce_dims
    if symmetric:
        amax = view.abs().amax(dim=dims, keepdim=True)
        scale = (amax / qmax).clamp_min(eps)
        zero_point = torch.zeros(scale.shape, dtype=torch.int32, device=x.device)
        return scale, zero_point
    lo = view.amin(dim=dims, keepdim=True).clamp(max=0)
    hi = view.amax(dim=dims, keepdim=True).clamp(min=0)
    scale = ((hi - lo) / (qmax - qmin)).clamp_min(eps)
    zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax).to(torch.int32)
    return scale, zero_point


def quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | int,
    bits: int,
    *,
    symmetric: bool = True,
    granularity: Granularity = PerTensor(),
) -> torch.Tensor:
    """Map floats to integer codes: ``q = clamp(round(x / scale) + zero_point, qmin, qmax)``.

    Args:
        x: Float tensor, any shape accepted by ``granularity``.
        scale: Positive scales broadcastable to the group view of ``x`` (as returned by :func:`choose_qparams`).
        zero_point: Integer zero point(s), same broadcasting as ``scale`` (0 for symmetric).
        bits: Bit width (bits), one of :data:`SUPPORTED_BITS`.
        symmetric: Signed narrow range (codes ``int8``) or unsigned range (codes ``uint8``).
        granularity: Granularity ``scale`` was computed with (only :class:`PerGroup` changes the view).

    Returns:
        Integer codes of ``x.shape``: ``torch.int8`` if symmetric, ``torch.uint8`` otherwise.

    Raises:
        ConfigError: Unsupported ``bits`` or a granularity that does not fit ``x``.
    """
    qmin, qmax = quant_range(bits, symmetric)
    view, _ = to_groups(x, granularity)
    q = (torch.round(view / scale) + zero_point).clamp(qmin, qmax)
    return q.to(torch.int8 if symmetric else torch.uint8).reshape(x.shape)


def dequantize(
    q: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | int,
    *,
    granularity: Granularity = PerTensor(),
) -> torch.Tensor:
    """Map integer codes back to floats: ``(q - zero_point) * scale``.

    Args:
        q: Integer codes, any shape accepted by ``granularity``.
        scale: Scales broadcastable to the group view of ``q``.
        zero_point: Integer zero point(s), same broadcasting as ``scale``.
        granularity: Granularity ``scale`` was computed with.

    Returns:
        Tensor of ``q.shape`` and ``scale.dtype``.

    Raises:
        ConfigError: A granularity that does not fit ``q``.
    """
    view, _ = to_groups(q, granularity)
    zp = zero_point.to(torch.int32) if isinstance(zero_point, torch.Tensor) else zero_point
    return ((view.to(torch.int32) - zp).to(scale.dtype) * scale).reshape(q.shape)


class _ClippedSTE(torch.autograd.Function):
    """Forward: a precomputed quantized value. Backward: identity where ``|x| < clip`` (all of x if no clip)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, x_hat: torch.Tensor, clip: float | None) -> torch.Tensor:
        ctx.clip = clip
        if clip is not None:
            ctx.save_for_backward(x)
        return x_hat

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        if ctx.clip is None:
            return grad, None, None
        (x,) = ctx.saved_tensors
        return grad * (x.abs() < ctx.clip).to(grad.dtype), None, None


def fake_quantize(
    x: torch.Tensor,
    bits: int,
    *,
    symmetric: bool = True,
    granularity: Granularity = PerTensor(),
    clip: float | None = None,
) -> torch.Tensor:
    """Quantize-dequantize with dynamic min/max qparams and a (clipped) straight-through estimator.

    Forward (METHODS §4(b), 8-bit activations): ``x_c = clip(x, -c, c)``; qparams from ``x_c`` per group;
    ``x_hat = dequantize(quantize(x_c))``. Backward: ``dL/dx = dL/dx_hat`` where ``|x| < c``, 0 where ``|x| >= c``;
    without ``clip`` the gradient is the identity (the dynamic range represents every element).

    Args:
        x: Float tensor, any shape accepted by ``granularity`` (e.g. ``(batch, seq, hidden)``).
        bits: Bit width (bits), one of :data:`SUPPORTED_BITS`.
        symmetric: Signed narrow range (int8: 255 levels) or unsigned range with zero point.
        granularity: Which elements share a scale.
        clip: Optional positive clip value ``c`` (same units as ``x``; KD-QAT uses 2.5).

    Returns:
        Tensor of ``x.shape`` and dtype with at most ``qmax - qmin + 1`` distinct values per group.

    Raises:
        ConfigError: Unsupported ``bits``, non-positive ``clip``, or a granularity that does not fit ``x``.
    """
    if clip is not None:
        clip = _check_positive("clip", clip)
    with torch.no_grad():
        x_c = x if clip is None else x.clamp(-clip, clip)
        scale, zero_point = choose_qparams(x_c, bits, symmetric=symmetric, granularity=granularity)
        q = quantize(x_c, scale, zero_point, bits, symmetric=symmetric, granularity=granularity)
        x_hat = dequantize(q, scale, zero_point, granularity=granularity)
    return _ClippedSTE.apply(x, x_hat, clip)


# --------------------------------------------------------------------------------------------- ternary / binary


def ternary_codes(
    w: torch.Tensor,
    *,
    granularity: Granularity = PerTensor(),
    threshold_factor: float = 0.7,
    clip: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ternary Weight Network codes and scale (Li et al. 2016, arXiv:1605.04711, eq. 5-6; METHODS §4(b)).

    Per group: ``W_c = clip(W, -c, c)``, ``Δ = threshold_factor · mean|W_c|``, ``M = 1[|W_c| > Δ]``,
    ``α = Σ|W_c|·M / ΣM`` (0 if no element exceeds ``Δ``), codes ``1[W_c > Δ] - 1[W_c < -Δ]``.

    Args:
        w: Float weight, e.g. ``(out, in)`` (``PerTensor`` for Linear weights, ``PerRow`` for a
            ``(vocab, hidden)`` word-embedding table as in TernaryBERT).
        granularity: Which elements share ``Δ`` and ``α``.
        threshold_factor: Positive factor of ``Δ``; 0.7 is TWN's approximation of the optimal threshold.
        clip: Optional positive clip value ``c`` applied before the statistics (KD-QAT: 2.5).

    Returns:
        ``(codes, alpha)``: ``torch.int8`` codes in ``{-1, 0, 1}`` of ``w.shape``, and ``alpha`` (``w.dtype``) of
        shape ``group_layout(w.shape, granularity).scale_shape`` (``(1, 1)`` per tensor, ``(out, 1)`` per row).

    Raises:
        ConfigError: Non-positive ``threshold_factor`` or ``clip``, or a granularity that does not fit ``w``.
    """
    factor = _check_positive("threshold_factor", threshold_factor)
    if clip is not None:
        clip = _check_positive("clip", clip)
    with torch.no_grad():
        w_c = w.detach() if clip is None else w.detach().clamp(-clip, clip)
        view, layout = to_groups(w_c, granularity)
        dims = layout.reduce_dims
        absv = view.abs()
        delta = factor * absv.mean(dim=dims, keepdim=True)
        mask = absv > delta
        count = mask.sum(dim=dims, keepdim=True).clamp_min(1)
        alpha = (absv * mask).sum(dim=dims, keepdim=True) / count
        codes = (view > delta).to(torch.int8) - (view < -delta).to(torch.int8)
    return codes.reshape(w.shape), alpha


def ternarize(
    w: torch.Tensor,
    *,
    granularity: Granularity = PerTensor(),
    threshold_factor: float = 0.7,
    clip: float | None = None,
) -> torch.Tensor:
    """TWN ternary fake-quantization ``Ŵ = α · codes`` with a (clipped) straight-through estimator.

    Forward as :func:`ternary_codes`, values in ``{-α, 0, +α}`` per group. Backward (METHODS §4(b)):
    ``dL/dW = dL/dŴ``, zeroed where ``|W| >= clip`` when a clip is given; ``Δ`` and ``α`` get no gradient.

    Args:
        w: Float weight, e.g. ``(out, in)``.
        granularity: Which elements share ``Δ`` and ``α``.
        threshold_factor: Positive factor of ``Δ`` (TWN: 0.7).
        clip: Optional positive clip value ``c`` (KD-QAT: 2.5).

    Returns:
        Tensor of ``w.shape`` and dtype with three distinct values per group (fewer only in degenerate groups).

    Raises:
        ConfigError: As :func:`ternary_codes`.
    """
    codes, alpha = ternary_codes(w, granularity=granularity, threshold_factor=threshold_factor, clip=clip)
    view, _ = to_groups(codes, granularity)
    w_hat = (view.to(alpha.dtype) * alpha).reshape(w.shape)
    return _ClippedSTE.apply(w, w_hat, None if clip is None else float(clip))


def binarize(w: torch.Tensor, granularity: Granularity = PerTensor(), *, clip: float | None = 1.0) -> torch.Tensor:
    """Binary Weight Network fake-quantization ``Ŵ = α · sign(W)`` with a clipped straight-through estimator.

    ``α = mean|W|`` per group (Rastegari et al. 2016, XNOR-Net, arXiv:1603.05279, eq. 4), ``sign(0) = +1``.
    Backward: ``dL/dW = dL/dŴ · 1[|W| < clip]`` with ``clip = 1`` by default — the BinaryConnect / XNOR-Net STE
    ``1[|W| <= 1]`` with the strict inequality used by BinaryBERT's code and by :func:`ternarize` (they differ only
    at ``|W| = 1`` exactly). ``clip=None`` gives the plain identity STE. ``α`` gets no gradient.

    Args:
        w: Float weight, e.g. ``(out, in)``.
        granularity: Which elements share ``α``.
        clip: Positive STE clip value, or None for no clipping.

    Returns:
        Tensor of ``w.shape`` and dtype with values ``±α`` per group.

    Raises:
        ConfigError: Non-positive ``clip`` or a granularity that does not fit ``w``.
    """
    if clip is not None:
        clip = _check_positive("clip", clip)
    with torch.no_grad():
        view, layout = to_groups(w.detach(), granularity)
        alpha = view.abs().mean(dim=layout.reduce_dims, keepdim=True)
        sign = torch.where(view >= 0, 1.0, -1.0).to(w.dtype)
        w_hat = (sign * alpha).reshape(w.shape)
    return _ClippedSTE.apply(w, w_hat, clip)


# --------------------------------------------------------------------------------------------- LSQ


class _LSQ(torch.autograd.Function):
    """LSQ forward/backward (Esser et al. 2020, eq. 1-5) with the step-gradient scale ``g``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, step: torch.Tensor, qn: int, qp: int, g: float) -> torch.Tensor:
        v = x / step
        inside = (v > -qn) & (v < qp)
        v_bar = torch.round(v.clamp(-qn, qp))
        ctx.save_for_backward(v, v_bar, inside)
        ctx.step_shape, ctx.g = step.shape, g
        return v_bar * step

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None, None]:
        v, v_bar, inside = ctx.saved_tensors
        grad_x = grad * inside.to(grad.dtype)  # eq. 5
        # eq. 3: -v/s + round(v/s) inside, -Q_N / Q_P outside (v_bar is already clamped to those there)
        d_step = torch.where(inside, v_bar - v, v_bar)
        grad_step = (grad * d_step).sum_to_size(ctx.step_shape) * ctx.g
        return grad_x, grad_step, None, None, None


def lsq_quantize(x: torch.Tensor, step: torch.Tensor, bits: int, *, symmetric: bool = True) -> torch.Tensor:
    """Learned Step Size Quantization (Esser et al. 2020, arXiv:1902.08153, eq. 1-5).

    Forward: ``x_hat = round(clip(x / s, -Q_N, Q_P)) · s`` (eq. 1-2). Backward: ``dx_hat/dx = 1[-Q_N < x/s < Q_P]``
    (eq. 5); ``dx_hat/ds = round(x/s) - x/s`` inside, ``-Q_N`` below, ``Q_P`` above (eq. 3), summed over the
    elements sharing a step and multiplied by the gradient scale ``g = 1 / sqrt(N · Q_P)`` (§2.2), where ``N`` is
    the number of elements per step (``x.numel()`` for a per-tensor step).

    Range: symmetric = signed **narrow** range ``Q_N = Q_P = 2^(b-1) - 1`` (consistent with :func:`quantize`;
    the paper uses ``Q_N = 2^(b-1)``); ``symmetric=False`` = unsigned ``Q_N = 0, Q_P = 2^b - 1`` (paper's
    activations after ReLU). There is no zero point.

    Args:
        x: Float tensor, any shape (e.g. ``(out, in)`` weight).
        step: Positive learnable step size ``s``, broadcastable to ``x``: shape ``()`` / ``(1,)`` per tensor, or
            e.g. ``(out, 1)`` per row. Positivity is not checked (that would sync a GPU each call).
        bits: Bit width (bits), one of :data:`SUPPORTED_BITS`.
        symmetric: Signed narrow range or unsigned range.

    Returns:
        Tensor of ``x.shape``: integer multiples of ``step``.

    Raises:
        ConfigError: Unsupported ``bits``.
    """
    qmin, qmax = quant_range(bits, symmetric)
    step = torch.as_tensor(step, dtype=x.dtype, device=x.device)
    per_step = x.numel() / max(step.numel(), 1)
    g = 1.0 / math.sqrt(per_step * qmax)
    return _LSQ.apply(x, step, -qmin, qmax, g)


# --------------------------------------------------------------------------------------------- Quant-Noise


def quant_noise(
    w: torch.Tensor,
    p: float,
    *,
    bits: int = 8,
    symmetric: bool = True,
    granularity: Granularity = PerTensor(),
    block_size: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Quant-Noise: fake-quantize a random fraction ``p`` of blocks, keep the rest in full precision.

    Fan et al. 2020 (arXiv:2004.07320), scalar-quantization variant; METHODS §5(b). Blocks are runs of
    ``block_size`` consecutive elements along the last axis (1 = single weights, ``in`` = rows of an ``(out, in)``
    weight); each block is quantized independently with probability ``p``. Scales are those of
    :func:`fake_quantize` over the whole tensor per ``granularity`` (not per block). Gradient: identity
    everywhere (STE; the dynamic range represents every element). Use ``p = 1`` at evaluation.

    Args:
        w: Float weight, e.g. ``(out, in)``.
        p: Probability of quantizing a block, in ``[0, 1]``.
        bits: Bit width (bits), one of :data:`SUPPORTED_BITS`.
        symmetric: Signed narrow range or unsigned range with zero point.
        granularity: Which elements share a scale.
        block_size: Positive block length dividing the last dimension.
        generator: Optional RNG for the block mask.

    Returns:
        Tensor of ``w.shape``: quantized values on the chosen blocks, ``w`` elsewhere.

    Raises:
        ConfigError: ``p`` outside ``[0, 1]``, bad ``block_size``, unsupported ``bits``, or a granularity that
            does not fit ``w``.
    """
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ConfigError(f"quant_noise p must be a number in [0, 1], got {p!r}")
    layout = group_layout(w.shape, PerGroup(block_size))
    with torch.no_grad():
        w_hat = fake_quantize(w.detach(), bits, symmetric=symmetric, granularity=granularity)
        # one draw per block: (..., in // block_size, 1), broadcast over the block
        draw = torch.rand(layout.scale_shape, generator=generator, device=w.device)
        mask = (draw < p).expand(layout.view_shape).reshape(w.shape)
    return torch.where(mask, _ClippedSTE.apply(w, w_hat, None), w)
