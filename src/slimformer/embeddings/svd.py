"""Truncated-SVD factorisation of a token-embedding table and the compression-ratio arithmetic.

Paper: Bałazy et al., "Direction is what you need: improving word embedding compression in large language
models" (https://arxiv.org/abs/2106.08181). The SVD baseline and the ratio formulas follow METHODS.md §3(b)
(official code: ``utils_funcs.py`` ``run_svd`` / ``get_lin_rec_latent_dim``, ``main.py``).

A table ``E`` of shape ``(V, d)`` (vocabulary size ``V``, hidden size ``d``) is stored as a code table
``Z`` ``(V, k)`` plus a decoder ``(k, d)``; its compression ratio counts parameters (no decoder bias)::

    CR = V·d / (V·k + k·d)              k = floor(V·d / (CR · (V + d)))

For BERT-base (``V = 30522``, ``d = 768``): CR 10 -> k = 74 (k = 75 gives CR ≈ 9.99), CR 5 -> k = 149,
CR 2.5 -> k = 299.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from slimformer.errors import ConfigError

__all__ = ["rank_for_ratio", "ratio_for_rank", "svd_factorize"]


def _check_shape(vocab: int, dim: int) -> None:
    if vocab < 1 or dim < 1:
        raise ConfigError(f"embedding table shape ({vocab}, {dim}) is invalid; vocab and dim must be >= 1")


def ratio_for_rank(vocab: int, dim: int, rank: int) -> float:
    """Compression ratio ``V·d / (V·k + k·d)`` of a rank-``k`` factorisation (parameter counts, no bias).

    Args:
        vocab: vocabulary size ``V`` (rows of the table).
        dim: hidden size ``d`` (columns of the table).
        rank: latent size ``k`` of the code table.

    Returns:
        The ratio of the dense parameter count to the factorised one (> 1 for every valid ``rank``).

    Raises:
        ConfigError: ``rank`` is not in ``[1, dim - 1]`` (rank ``>= dim`` compresses nothing).
    """
    _check_shape(vocab, dim)
    if not 0 < rank < dim:
        raise ConfigError(f"rank {rank} is invalid for hidden size {dim}; expected 1 <= rank < {dim}")
    return vocab * dim / (vocab * rank + rank * dim)


def rank_for_ratio(vocab: int, dim: int, ratio: float) -> int:
    """Largest latent size ``k = floor(V·d / (CR·(V + d)))`` whose compression ratio is at least ``ratio``.

    Args:
        vocab: vocabulary size ``V``.
        dim: hidden size ``d``.
        ratio: target compression ratio ``CR`` (dense / factorised parameter count), > 1.

    Returns:
        The rank ``k`` (``1 <= k < dim``).

    Raises:
        ConfigError: ``ratio`` is not a finite number > 1, or it needs a rank below 1.
    """
    _check_shape(vocab, dim)
    if not (math.isfinite(ratio) and ratio > 1):
        raise ConfigError(f"compression ratio {ratio} is invalid; expected a finite number > 1")
    rank = math.floor(vocab * dim / (ratio * (vocab + dim)))
    if rank < 1:
        best = ratio_for_rank(vocab, dim, 1) if dim > 1 else 1.0
        raise ConfigError(
            f"compression ratio {ratio} cannot be met for a ({vocab}, {dim}) table; rank 1 gives at most {best:.4g}"
        )
    return rank


def svd_factorize(weight: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """Best rank-``k`` approximation (Frobenius) of an embedding table, split as codes @ decoder.

    Exact, deterministic ``torch.linalg.svd`` on the raw (un-centred) table ``E = U Σ Vᵀ`` (METHODS §3(f)7:
    the paper's ``TruncatedSVD`` is randomised); computed in float64 and cast back to ``weight``'s dtype.
    The codes are ``U_k Σ_k`` and the decoder is ``V_kᵀ`` (no bias), as in the paper's ``run_svd``.

    Args:
        weight: the embedding table ``E``, shape ``(V, d)``.
        rank: latent size ``k``, ``1 <= k <= min(V, d)``; ``k = min(V, d)`` reproduces ``E`` to float
            rounding (a lossless reference, not a compression).

    Returns:
        ``(codes, decoder)`` of shapes ``(V, k)`` and ``(k, d)``, with ``codes @ decoder ≈ E``.

    Raises:
        ConfigError: ``weight`` is not 2-D or ``rank`` is out of range.
    """
    if weight.dim() != 2:
        raise ConfigError(f"embedding weight has shape {tuple(weight.shape)}; expected a 2-D (vocab, dim) table")
    vocab, dim = weight.shape
    if not 0 < rank <= min(vocab, dim):
        raise ConfigError(
            f"rank {rank} is invalid for a ({vocab}, {dim}) table; expected 1 <= rank <= {min(vocab, dim)}"
        )
    u, s, vh = torch.linalg.svd(weight.detach().to(torch.float64), full_matrices=False)  # (V, r), (r,), (r, d)
    codes = u[:, :rank] * s[:rank]  # (V, k) · (k,) -> (V, k)
    decoder = vh[:rank]  # (k, d)
    return codes.to(weight.dtype), decoder.to(weight.dtype)
