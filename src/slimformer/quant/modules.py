"""Weight / activation quantizer specs and the Linear modules of low-bit QAT (METHODS.md §4(b)).

* Quantizers are frozen value objects: :class:`UniformWeight` (symmetric k-bit), :class:`TernaryWeight` (TWN,
  Li et al. 2016, arXiv:1605.04711), :class:`BinaryWeight` (BWN, Rastegari et al. 2016, arXiv:1603.05279) and
  :class:`ActivationQuantizer` (symmetric per-tensor dynamic max-abs, optional clip, KD-QAT / TernaryBERT).
  Each calls the stateless primitives; the weight quantizers also split a weight into ``int8`` codes + scale.
* :class:`FakeQuantLinear` (prepare phase) keeps the fp32 ``weight`` / ``bias`` and fake-quantizes the weight and
  the input in ``forward`` with straight-through estimators.
* :class:`QuantizedLinear` (convert phase) stores the integer codes and scales as buffers and dequantizes in
  ``forward``; its output equals the :class:`FakeQuantLinear` it came from exactly (same primitives, same order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimformer.errors import ConfigError
from slimformer.quant.granularity import Granularity, PerGroup, PerRow, PerTensor, to_groups
from slimformer.quant.primitives import (
    SUPPORTED_BITS,
    binarize,
    choose_qparams,
    dequantize,
    fake_quantize,
    quantize,
    ternarize,
    ternary_codes,
)

__all__ = [
    "UniformWeight",
    "TernaryWeight",
    "BinaryWeight",
    "WeightQuantizer",
    "ActivationQuantizer",
    "FakeQuantLinear",
    "QuantizedLinear",
    "has_dynamic_activation_quantizers",
]


def _check_bits(owner: str, bits: Any) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in SUPPORTED_BITS:
        raise ConfigError(
            f"{owner} bits must be one of {', '.join(map(str, SUPPORTED_BITS))}, got {bits!r} "
            "(1-bit weights: BinaryWeight, ternary weights: TernaryWeight)"
        )


def _check_clip(owner: str, clip: Any) -> None:
    ok = clip is None or (not isinstance(clip, bool) and isinstance(clip, (int, float)) and math.isfinite(clip))
    if not ok or (clip is not None and clip <= 0):
        raise ConfigError(f"{owner} clip must be None or a positive finite number, got {clip!r}")


def _check_granularity(owner: str, granularity: Any) -> None:
    if not isinstance(granularity, (PerTensor, PerRow, PerGroup)):
        raise ConfigError(f"{owner} granularity must be PerTensor(), PerRow() or PerGroup(n), got {granularity!r}")


def _repr(m: FakeQuantLinear | QuantizedLinear) -> str:
    return f"in_features={m.in_features}, out_features={m.out_features}, weight_q={m.weight_q}, act_q={m.act_q}"


def _scaled_codes(codes: Tensor, scale: Tensor, granularity: Granularity) -> Tensor:
    """``codes * scale`` per group, as :func:`ternarize` / :func:`binarize` compute it. Shape of ``codes``."""
    view, _ = to_groups(codes, granularity)
    return (view.to(scale.dtype) * scale).reshape(codes.shape)


@dataclass(frozen=True)
class UniformWeight:
    """Symmetric uniform ``bits``-bit weight quantizer (narrow range, e.g. int8 codes in -127..127).

    Args:
        bits: Bit width (bits), one of :data:`~slimformer.quant.primitives.SUPPORTED_BITS` (2, 3, 4, 8).
        granularity: Scale sharing; default per output channel (``PerRow``, scale ``(out, 1)``).
        clip: Optional weight pre-clip ``c`` before the max-abs statistics (KD-QAT: 2.5); None = no clip.

    Raises:
        ConfigError: Unsupported ``bits``, bad ``granularity`` or non-positive ``clip``.
    """

    bits: int = 8
    granularity: Granularity = field(default_factory=PerRow)
    clip: float | None = None

    def __post_init__(self) -> None:
        _check_bits("UniformWeight", self.bits)
        _check_granularity("UniformWeight", self.granularity)
        _check_clip("UniformWeight", self.clip)

    def fake_quantize(self, w: Tensor) -> Tensor:
        """Quantize-dequantize ``w`` ``(out, in)`` with the (clipped) STE of :func:`fake_quantize`."""
        return fake_quantize(w, self.bits, symmetric=True, granularity=self.granularity, clip=self.clip)

    def encode(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """``(codes int8 (out, in), scale)``: the integers :meth:`fake_quantize` dequantizes."""
        with torch.no_grad():
            w_c = w.detach() if self.clip is None else w.detach().clamp(-self.clip, self.clip)
            scale, _ = choose_qparams(w_c, self.bits, symmetric=True, granularity=self.granularity)
            return quantize(w_c, scale, 0, self.bits, symmetric=True, granularity=self.granularity), scale

    def decode(self, codes: Tensor, scale: Tensor) -> Tensor:
        """Dequantize ``codes`` ``(out, in)`` with ``scale`` (bitwise equal to :meth:`fake_quantize`)."""
        return dequantize(codes, scale, 0, granularity=self.granularity)


@dataclass(frozen=True)
class TernaryWeight:
    """TWN ternary weight quantizer: values ``{-α, 0, +α}`` per group, ``Δ = threshold_factor · mean|W_c|``.

    Args:
        granularity: Scale sharing; default per tensor (METHODS §4(b) "layerwise" Linear weights).
        clip: Optional clip ``c`` before the statistics and for the STE (KD-QAT / TernaryBERT: 2.5).
        threshold_factor: TWN threshold factor (0.7).

    Raises:
        ConfigError: Bad ``granularity``, non-positive ``clip`` or ``threshold_factor``.
    """

    granularity: Granularity = field(default_factory=PerTensor)
    clip: float | None = 2.5
    threshold_factor: float = 0.7

    def __post_init__(self) -> None:
        _check_granularity("TernaryWeight", self.granularity)
        _check_clip("TernaryWeight", self.clip)
        _check_clip("TernaryWeight threshold_factor", self.threshold_factor)

    def fake_quantize(self, w: Tensor) -> Tensor:
        """:func:`ternarize` ``w`` ``(out, in)`` (clipped STE)."""
        return ternarize(w, granularity=self.granularity, threshold_factor=self.threshold_factor, clip=self.clip)

    def encode(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """``(codes int8 in {-1, 0, 1} (out, in), alpha)`` from :func:`ternary_codes`."""
        return ternary_codes(w, granularity=self.granularity, threshold_factor=self.threshold_factor, clip=self.clip)

    def decode(self, codes: Tensor, scale: Tensor) -> Tensor:
        """``alpha · codes`` per group, shape of ``codes``."""
        return _scaled_codes(codes, scale, self.granularity)


@dataclass(frozen=True)
class BinaryWeight:
    """BWN binary weight quantizer: ``α · sign(W)`` with ``α = mean|W|`` per group, ``sign(0) = +1``.

    Args:
        granularity: Scale sharing; default per tensor.
        clip: STE clip (gradient zero where ``|W| >= clip``; BinaryConnect: 1.0); None = identity STE.

    Raises:
        ConfigError: Bad ``granularity`` or non-positive ``clip``.
    """

    granularity: Granularity = field(default_factory=PerTensor)
    clip: float | None = 1.0

    def __post_init__(self) -> None:
        _check_granularity("BinaryWeight", self.granularity)
        _check_clip("BinaryWeight", self.clip)

    def fake_quantize(self, w: Tensor) -> Tensor:
        """:func:`binarize` ``w`` ``(out, in)`` (clipped STE)."""
        return binarize(w, self.granularity, clip=self.clip)

    def encode(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """``(codes int8 in {-1, 1} (out, in), alpha)``; the same statistics as :func:`binarize`."""
        with torch.no_grad():
            view, layout = to_groups(w.detach(), self.granularity)
            alpha = view.abs().mean(dim=layout.reduce_dims, keepdim=True)
            codes = torch.where(view >= 0, 1, -1).to(torch.int8).reshape(w.shape)
        return codes, alpha

    def decode(self, codes: Tensor, scale: Tensor) -> Tensor:
        """``alpha · codes`` per group, shape of ``codes``."""
        return _scaled_codes(codes, scale, self.granularity)


WeightQuantizer = UniformWeight | TernaryWeight | BinaryWeight


@dataclass(frozen=True)
class ActivationQuantizer:
    """Symmetric per-tensor dynamic max-abs fake-quantizer of Linear inputs (METHODS §4(b), 8-bit).

    ``x_c = clip(x, -c, c)``, ``s = max|x_c| / (2^(b-1) - 1)`` recomputed every forward, ``x̂ = round(x_c / s) · s``;
    STE zeroed where ``|x| >= c``. Default ``clip=None`` (OUR CHOICE, METHODS §4(f) pitfall 1); 2.5 = KD-QAT.

    Args:
        bits: Bit width (bits), one of :data:`~slimformer.quant.primitives.SUPPORTED_BITS`; 8 in the papers.
        clip: Optional positive pre-clip ``c``.

    Raises:
        ConfigError: Unsupported ``bits`` or non-positive ``clip``.
    """

    bits: int = 8
    clip: float | None = None

    def __post_init__(self) -> None:
        _check_bits("ActivationQuantizer", self.bits)
        _check_clip("ActivationQuantizer", self.clip)

    def __call__(self, x: Tensor) -> Tensor:
        """Fake-quantize ``x`` ``(batch, seq, in)`` (any shape) with one scale for the whole tensor."""
        return fake_quantize(x, self.bits, symmetric=True, granularity=PerTensor(), clip=self.clip)


class FakeQuantLinear(nn.Module):
    """``y = x̂ Ŵᵀ + b``: an ``nn.Linear`` whose weight and input are fake-quantized (prepare phase of QAT).

    Holds fp32 ``weight`` ``(out, in)`` and ``bias`` ``(out,)`` under ``nn.Linear``'s names, so state dicts line
    up. Gradients reach ``weight`` through the quantizers' straight-through estimators; the bias is not quantized.

    Args:
        weight: ``(out, in)`` parameter (shared, not copied). bias: ``(out,)`` parameter or None.
        weight_q: Weight quantizer. act_q: Input quantizer, or None for weight-only quantization.
    """

    def __init__(
        self,
        weight: nn.Parameter,
        bias: nn.Parameter | None,
        weight_q: WeightQuantizer,
        act_q: ActivationQuantizer | None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.weight = weight
        self.bias = bias
        self.weight_q, self.act_q = weight_q, act_q

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, weight_q: WeightQuantizer, act_q: ActivationQuantizer | None = None
    ) -> FakeQuantLinear:
        """Wrap ``linear``'s own ``weight`` / ``bias`` parameters (no copy) with the given quantizers."""
        module = cls(linear.weight, linear.bias, weight_q, act_q)
        return module.train(linear.training)

    def to_linear(self) -> nn.Linear:
        """An ``nn.Linear`` holding this module's ``weight`` / ``bias`` parameters (inverse of ``from_linear``)."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        linear.weight, linear.bias = self.weight, self.bias
        return linear.train(self.training)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., in)`` -> ``(..., out)``."""
        x = x if self.act_q is None else self.act_q(x)
        return F.linear(x, self.weight_q.fake_quantize(self.weight), self.bias)

    def extra_repr(self) -> str:
        return _repr(self)


class QuantizedLinear(nn.Module):
    """Deployable low-bit Linear: ``int8`` weight codes + scale buffers, dequantized in ``forward`` (convert phase).

    Buffers: ``weight_codes`` ``(out, in)`` int8 (uniform: narrow signed range; ternary: {-1, 0, 1}; binary:
    {-1, 1}; one code per int8, not packed) and ``weight_scale`` (``(1, 1)`` per tensor, ``(out, 1)`` per row,
    ``(out, in // n, 1)`` per group). ``bias`` ``(out,)`` stays fp32. Inputs are fake-quantized with ``act_q``
    exactly as in :class:`FakeQuantLinear`, so both give bitwise-equal outputs.
    """

    def __init__(
        self,
        codes: Tensor,
        scale: Tensor,
        bias: Tensor | None,
        weight_q: WeightQuantizer,
        act_q: ActivationQuantizer | None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = codes.shape[1], codes.shape[0]
        self.register_buffer("weight_codes", codes)
        self.register_buffer("weight_scale", scale)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.weight_q, self.act_q = weight_q, act_q

    @classmethod
    def from_fake_quant(cls, module: FakeQuantLinear) -> QuantizedLinear:
        """Encode ``module``'s weight with its quantizer; keeps its bias, activation quantizer and mode."""
        codes, scale = module.weight_q.encode(module.weight)
        new = cls(codes, scale, module.bias, module.weight_q, module.act_q)
        return new.train(module.training)

    def dequantized_weight(self) -> Tensor:
        """The fp weight ``(out, in)`` the codes represent."""
        return self.weight_q.decode(self.weight_codes, self.weight_scale)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., in)`` -> ``(..., out)``."""
        x = x if self.act_q is None else self.act_q(x)
        return F.linear(x, self.dequantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return _repr(self)


def has_dynamic_activation_quantizers(model: nn.Module) -> bool:
    """Whether any Linear of ``model`` fake-quantizes its input with an :class:`ActivationQuantizer`.

    Its scale is the max-abs of the whole input tensor, recomputed every forward: a row's output then depends on
    the other rows of its batch (and their padding), so evaluation batching changes the figure.
    """
    return any(isinstance(m, (FakeQuantLinear, QuantizedLinear)) and m.act_q is not None for m in model.modules())
