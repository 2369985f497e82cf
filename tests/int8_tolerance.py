"""Tolerances for int8 numerics derived from the quantization step, not from one build's output.

ONNX Runtime's int8 kernels differ between CPUs (AVX-512 VNNI vs AVX2, whose u8s8 path saturates) and between
releases, so an absolute tolerance tuned on one machine fails on another. A b-bit symmetric quantizer of a tensor
with range ``max|x|`` has step ``max|x| / (2^(b-1) - 1)``; the tolerances here are a number of such steps of the
reference output, so they follow the model's scale and the bit width.
"""

from __future__ import annotations

import numpy as np

__all__ = ["quant_step", "int8_atol"]


def quant_step(reference: np.ndarray, bits: int = 8) -> float:
    """One quantization step of ``reference``'s range at ``bits`` bits: ``max|reference| / (2^(bits-1) - 1)``."""
    return float(np.abs(np.asarray(reference)).max()) / (2 ** (bits - 1) - 1)


def int8_atol(reference: np.ndarray, steps: float, bits: int = 8) -> float:
    """``steps`` quantization steps of ``reference`` (see :func:`quant_step`); never below float32 noise."""
    return max(steps * quant_step(reference, bits), 1e-6)
