"""The one parity check of every exporter: ONNX Runtime outputs against PyTorch's, output by output."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from slimformer.errors import ExportError

__all__ = ["check_outputs"]


def check_outputs(
    onnx_path: str | os.PathLike[str],
    names: Sequence[str],
    got: Mapping[str, np.ndarray],
    expected: Mapping[str, np.ndarray],
    *,
    atol: float,
    where: str,
) -> float:
    """Largest absolute difference between ``got`` (ONNX Runtime) and ``expected`` (PyTorch) over ``names``.

    Every position is compared (padded ones included); NaN counts as an infinite difference.

    Args:
        onnx_path: the graph (named in errors). names: the outputs to compare.
        got, expected: ``{output name: array}`` of the same shapes.
        atol: largest allowed absolute difference. where: the inputs, for the error message (``batch 3, seq_len 7``).

    Raises:
        ExportError: a shape differs or a difference exceeds ``atol`` (names the output and ``where``).
    """
    worst = 0.0
    for name in names:
        ref = np.asarray(expected[name], dtype=np.float32)
        out = np.asarray(got[name])
        if out.shape != ref.shape:
            raise ExportError(f"{onnx_path}: output {name!r} has shape {out.shape}, PyTorch {ref.shape} ({where})")
        diff = float(np.nan_to_num(np.abs(out - ref), nan=np.inf).max(initial=0.0))
        if diff > atol:
            raise ExportError(
                f"{onnx_path}: output {name!r} differs from PyTorch by {diff:.3g} > atol {atol:g} ({where})"
            )
        worst = max(worst, diff)
    return worst
