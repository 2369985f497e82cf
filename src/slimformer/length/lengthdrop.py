"""LengthDrop, LayerDrop and the sandwich rule: which sub-models one training step runs.

Paper: Kim & Cho, *Length-Adaptive Transformer*, ACL 2021 (https://arxiv.org/abs/2010.07003), §2-3; LayerDrop
(Fan et al. 2019); sandwich rule (Yu & Huang 2019). Sampling as in the official code (METHODS.md §1(b)):

* **LayerDrop** (prob ``p_layer``): layer ``i`` runs iff ``U(0, 1) ≥ p_layer``, independently per layer.
* **LengthDrop** (ratio bound ``p``): with ``l_0 = N``, for each layer that runs,
  ``l_i ~ UniformInteger[ceil((1 − p)·l_{i−1}), l_{i−1}]`` (both ends inclusive), then ``l_i = max(l_i, 2)``
  (never above ``l_{i−1}``); a skipped layer keeps ``l_i = l_{i−1}``. So ``l_i ≥ (1 − p)·l_{i−1}``: each layer
  drops at most a fraction ``p`` of the tokens entering it, and the lengths never increase.
* **Smallest model**: the deterministic lower end ``l_i = max(ceil((1 − p)·l_{i−1}), 2)`` at every layer.
* **Sandwich**: per step the full model (no length drop), the smallest model, and ``m`` random models.

Plain functions of a ``random.Random``: no global state, reproducible from a seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from slimformer.errors import ConfigError

__all__ = [
    "SubModel",
    "sample_layers",
    "sample_lengths",
    "smallest_lengths",
    "sandwich",
]


def _check(ratio_bound: float, layer_drop_prob: float = 0.0) -> None:
    if not 0 <= ratio_bound < 1:
        raise ConfigError(f"length_drop_ratio_bound {ratio_bound} is outside [0, 1)")
    if not 0 <= layer_drop_prob < 1:
        raise ConfigError(f"layer_drop_prob {layer_drop_prob} is outside [0, 1)")


@dataclass(frozen=True)
class SubModel:
    """One pass of a sandwich step.

    Attributes:
        kind: ``"full"``, ``"smallest"`` or ``"random"``.
        lengths: absolute per-layer lengths ``(L,)`` (skipped layers repeat the previous length), or ``None``
            for the full model (no token dropping).
        layers: indices of the layers that run (LayerDrop), or ``None`` for all.
    """

    kind: str
    lengths: tuple[int, ...] | None
    layers: tuple[int, ...] | None


def sample_layers(num_layers: int, layer_drop_prob: float, rng: random.Random) -> tuple[bool, ...]:
    """LayerDrop: ``True`` for each layer that runs (``U(0,1) ≥ p_layer``).

    Raises:
        ConfigError: ``layer_drop_prob`` outside ``[0, 1)``.
    """
    _check(0.0, layer_drop_prob)
    if layer_drop_prob == 0:
        return (True,) * num_layers
    return tuple(rng.random() >= layer_drop_prob for _ in range(num_layers))


def _lengths(
    seq_len: int, runs: tuple[bool, ...], ratio_bound: float, rng: random.Random | None, min_length: int
) -> tuple[int, ...]:
    out, prev = [], seq_len
    for run in runs:
        if run:
            low = math.ceil((1 - ratio_bound) * prev)
            length = low if rng is None else rng.randint(low, prev)
            prev = min(max(length, min_length), prev)
        out.append(prev)
    return tuple(out)


def sample_lengths(
    seq_len: int,
    num_layers: int,
    ratio_bound: float,
    rng: random.Random,
    *,
    runs: tuple[bool, ...] | None = None,
    min_length: int = 2,
) -> tuple[int, ...]:
    """LengthDrop: a random length configuration (absolute lengths, non-increasing).

    Args:
        seq_len: ``N``, the input length (tokens).
        num_layers: ``L``.
        ratio_bound: ``p`` in ``[0, 1)``: at most this fraction of the tokens entering a layer is dropped.
        rng: the random source.
        runs: LayerDrop mask from :func:`sample_layers` (skipped layers keep the length); ``None`` = all run.
        min_length: floor of every length (2 in LAT: ``[CLS]`` and one more token), never above ``l_{i−1}``.

    Returns:
        ``(l_1, ..., l_L)``.

    Raises:
        ConfigError: ``ratio_bound`` outside ``[0, 1)``.
    """
    _check(ratio_bound)
    return _lengths(seq_len, runs or (True,) * num_layers, ratio_bound, rng, min_length)


def smallest_lengths(
    seq_len: int, num_layers: int, ratio_bound: float, *, runs: tuple[bool, ...] | None = None, min_length: int = 2
) -> tuple[int, ...]:
    """The lower bound of LengthDrop: ``l_i = max(ceil((1 − p)·l_{i−1}), min_length)`` at every layer that runs.

    Raises:
        ConfigError: ``ratio_bound`` outside ``[0, 1)``.
    """
    _check(ratio_bound)
    return _lengths(seq_len, runs or (True,) * num_layers, ratio_bound, None, min_length)


def sandwich(
    seq_len: int,
    num_layers: int,
    rng: random.Random,
    *,
    num_sandwich: int = 2,
    ratio_bound: float = 0.2,
    layer_drop_prob: float = 0.2,
    layer_drop_full: bool = False,
    min_length: int = 2,
) -> list[SubModel]:
    """The sub-models of one training step (sandwich rule): full, smallest, then ``num_sandwich`` random.

    Args:
        seq_len: ``N``, the input length (tokens) of the batch.
        num_layers: ``L``.
        rng: the random source.
        num_sandwich: ``m ≥ 0`` random sub-models (LAT: 2).
        ratio_bound: LengthDrop bound ``p`` (LAT: 0.2).
        layer_drop_prob: LayerDrop probability (LAT: 0.2), sampled independently for each sub-model.
        layer_drop_full: LayerDrop the full model too. The LAT code does (pitfall §1(f).2), which makes the
            in-place teacher a random-depth model; the default ``False`` keeps the teacher whole, as the
            code's own arguments intended.
        min_length: floor of every sampled length.

    Returns:
        ``m + 2`` :class:`SubModel` entries, the full model first.

    Raises:
        ConfigError: a probability or bound outside ``[0, 1)``, or ``num_sandwich < 0``.
    """
    _check(ratio_bound, layer_drop_prob)
    if num_sandwich < 0:
        raise ConfigError(f"num_sandwich {num_sandwich} must be ≥ 0")

    def layers(runs: tuple[bool, ...]) -> tuple[int, ...] | None:
        return None if all(runs) else tuple(i for i, r in enumerate(runs) if r)

    full_runs = sample_layers(num_layers, layer_drop_prob if layer_drop_full else 0.0, rng)
    out = [SubModel("full", None, layers(full_runs))]
    runs = sample_layers(num_layers, layer_drop_prob, rng)
    out.append(
        SubModel(
            "smallest",
            smallest_lengths(seq_len, num_layers, ratio_bound, runs=runs, min_length=min_length),
            layers(runs),
        )
    )
    for _ in range(num_sandwich):
        runs = sample_layers(num_layers, layer_drop_prob, rng)
        lengths = sample_lengths(seq_len, num_layers, ratio_bound, rng, runs=runs, min_length=min_length)
        out.append(SubModel("random", lengths, layers(runs)))
    return out
