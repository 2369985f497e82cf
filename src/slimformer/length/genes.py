"""Genes of the length-configuration search and the operators that breed them.

A *gene* is a length configuration as a plain tuple ``(l_1, ..., l_L)``: ``l_i`` tokens leave layer ``i``,
with ``max_length >= l_1 >= ... >= l_L >= min_length`` (Kim & Cho, ACL 2021, "Length-Adaptive Transformer",
https://arxiv.org/abs/2010.07003; METHODS.md §1(b)). Every operator here returns genes that satisfy these
bounds and the monotonicity whenever its inputs do; the tests check it on random draws.

- :func:`constant_ratio_gene`: drop the same fraction ``r`` of the tokens at every layer,
  ``l_i = max(ceil((1 - r) * l_{i-1}), min_length)`` with ``l_0 = max_length``; ``r = p`` (the LengthDrop
  ratio bound) gives the *smallest* gene of the sandwich rule.
- :func:`initial_population`: the full gene, the smallest gene and ``size`` constant-ratio genes whose mean
  relative length is evenly spaced in between (the ratios are found by bisection) [code: LAT evolution.py;
  METHODS.md §1(f) pitfall 5: ``L`` and ``N`` are arguments here, not hard-wired to 12 and 384].
- :func:`mutate`: LAT's monotone mutation; each layer is resampled with probability ``q`` from
  ``[parent.l_{i+1}, child.l_{i-1}]`` (``min_length`` / ``max_length`` at the ends), else copied. The lower
  bound is clamped to the upper bound (METHODS.md §1(f) pitfall 4).
- :func:`crossover`: LAT's crossover, the per-layer rounded-up midpoint ``ceil((a_i + b_i) / 2)``. The
  midpoint of two non-increasing sequences is non-increasing and stays within their bounds, so no repair
  step is needed (unlike a one-point crossover, which can break monotonicity at the cut).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from slimformer.errors import ConfigError

__all__ = [
    "Gene",
    "check_gene",
    "shrink",
    "constant_ratio_gene",
    "mean_relative_length",
    "initial_population",
    "mutate",
    "crossover",
]

Gene = tuple[int, ...]

_BISECTION_STEPS = 60


def check_gene(gene: Sequence[int], *, num_layers: int, min_length: int, max_length: int) -> Gene:
    """Validate a length configuration and return it as a tuple of ints.

    Raises:
        ConfigError: wrong number of layers, a length outside ``[min_length, max_length]``, or a length that
            increases from one layer to the next.
    """
    g = tuple(int(x) for x in gene)
    if len(g) != num_layers:
        raise ConfigError(f"length configuration {g} has {len(g)} entries; expected one per layer ({num_layers})")
    if any(not min_length <= x <= max_length for x in g):
        raise ConfigError(f"length configuration {g} has a length outside [{min_length}, {max_length}]")
    if any(b > a for a, b in zip(g, g[1:])):
        raise ConfigError(f"length configuration {g} is not non-increasing from one layer to the next")
    return g


def shrink(length: int, ratio: float, min_length: int) -> int:
    """``max(ceil((1 - ratio) * length), min_length)``: the fewest tokens a layer keeps of ``length`` when it drops at
    most the fraction ``ratio`` of them (the product is rounded to 9 decimals before the ceiling, so that
    ``0.8 * 100`` gives 80, not 81). The one rounding rule of the smallest gene, the search's first generation and
    the LengthDrop sub-models of training (:mod:`slimformer.length.lengthdrop`)."""
    return max(math.ceil(round((1.0 - ratio) * length, 9)), min_length)


def constant_ratio_gene(ratio: float, *, num_layers: int, max_length: int, min_length: int) -> Gene:
    """Drop the fraction ``ratio`` of the remaining tokens at every layer.

    ``l_i = max(ceil((1 - ratio) * l_{i-1}), min_length)``, ``l_0 = max_length`` (LengthDrop's deterministic
    lower end, METHODS.md §1(b); rounding: :func:`shrink`). ``ratio = p`` is the smallest gene of the search and
    the smallest sub-model of LengthDrop training.

    Raises:
        ConfigError: ``ratio`` outside ``[0, 1]``.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"length drop ratio must be in [0, 1], got {ratio}")
    lengths, prev = [], max_length
    for _ in range(num_layers):
        prev = shrink(prev, ratio, min_length)
        lengths.append(prev)
    return tuple(lengths)


def mean_relative_length(gene: Sequence[int], max_length: int) -> float:
    """``(1 / (L * N)) * sum_i l_i``: 1.0 for the full gene."""
    return sum(gene) / (len(gene) * max_length)


def initial_population(
    size: int, *, num_layers: int, max_length: int, min_length: int, length_drop_ratio: float
) -> list[Gene]:
    """The first generation: full gene, smallest gene, then ``size`` constant-ratio genes (duplicates removed).

    The ``k``-th constant-ratio gene targets the mean relative length ``linspace(m_min, 1, size + 2)[k]``
    (endpoints excluded), ``m_min`` being that of the smallest gene; its ratio is found by bisection on
    ``[0, length_drop_ratio]`` (the mean relative length does not increase with the ratio).

    Returns:
        Genes in the order full, smallest, then decreasing length.
    """

    def gene_of(r: float) -> Gene:
        return constant_ratio_gene(r, num_layers=num_layers, max_length=max_length, min_length=min_length)

    full = (max_length,) * num_layers
    smallest = gene_of(length_drop_ratio)
    m_min = mean_relative_length(smallest, max_length)
    genes = [full, smallest]
    for k in range(size, 0, -1):  # largest target first
        target = m_min + (1.0 - m_min) * k / (size + 1)
        lo, hi = 0.0, length_drop_ratio
        for _ in range(_BISECTION_STEPS):
            mid = (lo + hi) / 2
            if mean_relative_length(gene_of(mid), max_length) > target:
                lo = mid
            else:
                hi = mid
        a, b = gene_of(lo), gene_of(hi)
        da = abs(mean_relative_length(a, max_length) - target)
        db = abs(mean_relative_length(b, max_length) - target)
        genes.append(a if da <= db else b)
    return list(dict.fromkeys(genes))


def mutate(parent: Gene, rng: random.Random, *, mutation_prob: float, min_length: int, max_length: int) -> Gene:
    """LAT mutation: resample each layer with probability ``mutation_prob`` inside the monotone window.

    For layer ``i`` (0-based), when resampled: ``l_i ~ UniformInteger[lo, hi]`` with
    ``lo = parent[i + 1]`` (``min_length`` for the last layer) and ``hi = child[i - 1]`` (``max_length`` for the
    first), ``lo`` clamped to ``hi``; otherwise ``l_i = parent[i]``. Because a resampled length is never below
    the parent's next length, copying the parent's next length keeps the child non-increasing.

    Args:
        parent: a valid gene.
        rng: the search's random generator (two draws per resampled layer, one per copied layer).
        mutation_prob: per-layer resampling probability ``q`` (LAT default 0.5).
        min_length: smallest allowed length.
        max_length: largest allowed length (the padded sequence length ``N``).

    Returns:
        A valid gene (may equal ``parent``).
    """
    child: list[int] = []
    last = len(parent) - 1
    for i, length in enumerate(parent):
        if rng.random() < mutation_prob:
            hi = child[i - 1] if i > 0 else max_length
            lo = min(parent[i + 1] if i < last else min_length, hi)
            child.append(rng.randint(lo, hi))
        else:
            child.append(length)
    return tuple(child)


def crossover(a: Gene, b: Gene) -> Gene:
    """LAT crossover: the per-layer midpoint rounded up, ``(a_i + b_i + 1) // 2``.

    Raises:
        ConfigError: the genes have different numbers of layers.
    """
    if len(a) != len(b):
        raise ConfigError(f"cannot cross genes of {len(a)} and {len(b)} layers")
    return tuple((x + y + 1) // 2 for x, y in zip(a, b))
