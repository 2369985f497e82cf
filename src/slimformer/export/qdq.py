"""ONNX export of QAT-converted Linears as QuantizeLinear / DequantizeLinear (QDQ) graphs with int8 weights.

Each :class:`~slimformer.quant.QuantizedLinear` ``y = x̂ Ŵᵀ + b`` becomes, in the exported graph::

    x ─[Clip(-c, c)]─┬─ Abs ─ ReduceMax ─ Div(qmax) ─ Max(eps) ─ s_x          (dynamic, per tensor)
                     └─ QuantizeLinear(x, s_x, int8 0) ─ DequantizeLinear ─┐
    W_codes int8 (in, out) ─ DequantizeLinear(s_w, axis=1) ────────────────┴─ MatMul ─ Add(b) ─ y

which is exactly :class:`~slimformer.quant.ActivationQuantizer` (symmetric narrow range, scale
``max|x_c| / (2^(b-1) - 1)`` clamped at ``finfo.eps``, round half to even) followed by the stored codes and
scales: ternary / binary codes are stored unpacked as int8 ``{-1, 0, 1}`` / ``{-1, 1}`` (ONNX has no 2-bit
type), uniform 2–8-bit codes as int8. Weight-only Linears (``act_q is None``) get no activation Q/DQ.

ONNX Runtime (CPU, graph optimizations ``basic`` or higher) fuses each ``DQ(x), DQ(W) -> MatMul`` group into a
``MatMulIntegerToFloat`` kernel: int8 x int8 products accumulated in int32, then scaled by ``s_x · s_w``.
This differs from PyTorch's fp32 matmul of the dequantized values only by float rounding (see
``docs/quantization.md`` for measured differences and latencies). The swap happens inside
:func:`qdq_export_modules`, a context manager that restores the model's own modules on exit (STYLE.md §12).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimformer.errors import ExportError
from slimformer.quant.granularity import PerRow, PerTensor
from slimformer.quant.modules import QuantizedLinear
from slimformer.quant.primitives import fake_quantize
from slimformer.quant.serialize import nominal_bits, scheme_name
from slimformer.quant.storage import quantized_modules

__all__ = ["qdq_export_modules", "quantization_summary", "summary_json"]

_EPS = float(torch.finfo(torch.float32).eps)


class _QDQLinear(torch.autograd.Function):
    """Traced as the QDQ subgraph above; its forward (used only while tracing) is QuantizedLinear's math."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, codes_t: Tensor, w_scale: Tensor, bias: Tensor | None, bits: int, clip: float | None
    ) -> Tensor:
        x_hat = x if bits == 0 else fake_quantize(x, bits, clip=clip)
        w = (codes_t.to(w_scale.dtype) * w_scale).t()  # (in, out) * (out,) -> (out, in)
        return F.linear(x_hat, w, bias)

    @staticmethod
    def symbolic(g: Any, x: Any, codes_t: Any, w_scale: Any, bias: Any, bits: int, clip: float | None) -> Any:
        def const(value: float) -> Any:
            return g.op("Constant", value_t=torch.tensor(value, dtype=torch.float32))

        if bits:  # dynamic symmetric per-tensor activation quantization
            zero = g.op("Constant", value_t=torch.tensor(0, dtype=torch.int8))
            if clip is not None:
                x = g.op("Clip", x, const(-clip), const(clip))
            amax = g.op("ReduceMax", g.op("Abs", x), keepdims_i=0)
            scale = g.op("Max", g.op("Div", amax, const(float(2 ** (bits - 1) - 1))), const(_EPS))
            x = g.op("DequantizeLinear", g.op("QuantizeLinear", x, scale, zero), scale, zero)
        w = g.op("DequantizeLinear", codes_t, w_scale, axis_i=1)  # (in, out) float
        y = g.op("MatMul", x, w)
        return y if bias is None or _is_none(bias) else g.op("Add", y, bias)


def _is_none(value: Any) -> bool:
    return hasattr(value, "node") and value.node().mustBeNone()


class _OnnxQuantizedLinear(nn.Module):
    """Export-time stand-in for a :class:`QuantizedLinear`: transposed int8 codes, 1-D / scalar weight scale."""

    def __init__(self, module: QuantizedLinear, fqn: str) -> None:
        super().__init__()
        g = module.weight_q.granularity
        if not isinstance(g, (PerTensor, PerRow)):
            raise ExportError(
                f"{fqn}: ONNX export supports per-tensor and per-row weight scales, not {g!r} "
                "(a per-group scale cannot be factored out of the int8 matmul)"
            )
        self.inner = module
        self.register_buffer("codes_t", module.weight_codes.t().contiguous())  # (in, out) int8
        shape = () if isinstance(g, PerTensor) else (module.out_features,)
        self.register_buffer("w_scale", module.weight_scale.reshape(shape).float())
        self.bits = 0 if module.act_q is None else module.act_q.bits
        self.clip = None if module.act_q is None else module.act_q.clip

    def forward(self, x: Tensor) -> Tensor:
        """``(..., in)`` -> ``(..., out)``."""
        return _QDQLinear.apply(x, self.codes_t, self.w_scale, self.inner.bias, self.bits, self.clip)


def _swap(root: nn.Module, fqn: str, new: nn.Module) -> None:
    parent, _, child = fqn.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


@contextmanager
def qdq_export_modules(model: nn.Module) -> Iterator[nn.Module]:
    """Swap every :class:`QuantizedLinear` of ``model`` for its QDQ export form; restore them on exit.

    A model without quantized Linears is yielded unchanged. :class:`~slimformer.quant.QuantizedEmbedding`
    needs no swap: its forward traces to ``Gather`` (int8 codes) -> ``Cast`` -> ``Mul`` (gathered scales).

    Raises:
        ExportError: a quantized Linear uses per-group weight scales (not expressible as one int8 matmul).
    """
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, QuantizedLinear)]
    stand_ins = [(fqn, _OnnxQuantizedLinear(m, fqn)) for fqn, m in found]  # all checked before any swap
    for fqn, new in stand_ins:
        _swap(model, fqn, new)
    try:
        yield model
    finally:
        for fqn, module in found:
            _swap(model, fqn, module)


def quantization_summary(model: nn.Module) -> dict[str, Any] | None:
    """What the exported graph quantizes (for its metadata and results rows), or None for an fp32 model.

    Returns:
        ``{"mode": "qat", "weights": {"ternary": 12, ...}, "activation_bits": [8],
        "embedding": "int8" | None, "label": "W2A8 ternary"}`` — counts of Linears per scheme.
    """
    modules = quantized_modules(model)
    if not modules:
        return None
    linears = {n: m for n, m in modules.items() if isinstance(m, QuantizedLinear)}
    schemes: dict[str, int] = {}
    for m in linears.values():
        schemes[scheme_name(m.weight_q)] = schemes.get(scheme_name(m.weight_q), 0) + 1
    act_bits = sorted({m.act_q.bits for m in linears.values() if m.act_q is not None})
    emb = [scheme_name(m.weight_q) for m in modules.values() if not isinstance(m, QuantizedLinear)]
    w_bits = sorted({nominal_bits(m.weight_q) for m in linears.values()})
    label = ""
    if linears:
        w = "/".join(str(b) for b in w_bits)
        label = f"W{w}A{'/'.join(map(str, act_bits)) or '32'} {'+'.join(sorted(schemes))}"
    if emb:
        label = (label + " " if label else "") + f"emb-{emb[0]}"
    return {
        "mode": "qat",
        "weights": schemes,
        "activation_bits": act_bits,
        "embedding": emb[0] if emb else None,
        "label": label,
    }


def summary_json(model: nn.Module) -> str | None:
    """:func:`quantization_summary` as a JSON string (ONNX metadata value), or None."""
    summary = quantization_summary(model)
    return None if summary is None else json.dumps(summary)
