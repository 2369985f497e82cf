"""LengthDrop, LayerDrop and the sandwich rule: which sub-models one training step runs.

Paper: Kim & Cho, *Length-Adaptive Transformer*, ACL 2021 (https://arxiv.org/abs/2010.07003), §2-3; LayerDrop
(Fan et al. 2019); sandwich rule (Yu & Huang 2019). Sampling as in the official code (METHODS.md §1(b)), with one
meaning of a length configuration from training to deployment:

* **Genes on the search's grid.** A sub-model's length configuration is a *gene* ``(g_1, ..., g_L)``, tokens kept
  after each layer on a ``seq_len``-token input (``N``: the search's ``seq_len``, by default the model's
  ``max_seq_length``), applied as **per-row keep ratios** ``g_i / N``
  (:func:`~slimformer.length.config.gene_config` with ``form="ratios"``): a row of ``n`` real tokens keeps
  ``ceil(g_i · n / N − 0.001)`` of them, in float32, whatever the batch's padding or its other rows. That is the
  configuration form, the selector (:class:`~slimformer.length.selector.LengthSelector`) and the rounding the
  search scores and the exported ONNX graph runs. (The LAT code samples absolute lengths from each batch's padded
  length and caps every row with them: a short sentence in a batch with a long one lost nothing, so training
  and deployment meant different things by one configuration.)
* **LengthDrop** (ratio bound ``p``): with ``g_0 = N``, ``g_i ~ UniformInteger[max(ceil((1 − p)·g_{i−1}),
  min_length), g_{i−1}]`` (both ends inclusive; rounding: :func:`~slimformer.length.genes.shrink`). Each layer
  keeps at least the fraction ``1 − p`` of the tokens entering it, and the lengths never increase.
* **Smallest model**: the deterministic lower end at every layer,
  :func:`~slimformer.length.genes.constant_ratio_gene` ``(p)``: exactly the smallest gene of the search (its
  lower cost bound), so the cheapest configuration the search may return is the one trained at every step.
* **LayerDrop** (prob ``p_layer``): layer ``i`` runs iff ``U(0, 1) ≥ p_layer``, independently per layer; if that
  drops every layer, one layer drawn uniformly runs (a sub-model is never the empty network). The length
  configuration does not depend on which layers run (LAT recomputes lengths after a skipped layer): a skipped
  layer selects nothing, and each layer that runs keeps what the configuration says for it, as it will in the
  deployed model.
* **Default LayerDrop by depth** (:func:`default_layer_drop_prob`): LAT's 0.2 for models of more than 4 layers;
  off for shallower ones, where skipping one layer in five removes a large part of the network (a 3-layer student
  runs 2 layers or fewer in half of its sub-models).
* **Sandwich**: per step the full model (no length drop), the smallest model, and ``m`` random models.

Plain functions of a ``random.Random``: no global state, reproducible from a seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from slimformer.errors import ConfigError
from slimformer.length.config import LengthConfig, gene_config
from slimformer.length.genes import constant_ratio_gene, shrink

__all__ = [
    "SubModel",
    "LAYER_DROP_PROB",
    "SHALLOW_LAYERS",
    "default_layer_drop_prob",
    "sample_layers",
    "sample_gene",
    "smallest_gene",
    "sandwich",
]

#: LayerDrop probability of LAT (METHODS.md §1(c)), the default for models deeper than :data:`SHALLOW_LAYERS`.
LAYER_DROP_PROB = 0.2
#: Models with at most this many layers default to no LayerDrop.
SHALLOW_LAYERS = 4


def _check(ratio_bound: float, layer_drop_prob: float = 0.0) -> None:
    if not 0 <= ratio_bound < 1:
        raise ConfigError(f"length_drop_ratio_bound {ratio_bound} is outside [0, 1)")
    if not 0 <= layer_drop_prob < 1:
        raise ConfigError(f"layer_drop_prob {layer_drop_prob} is outside [0, 1)")


def default_layer_drop_prob(num_layers: int, layer_drop_prob: float | None = None) -> float:
    """The LayerDrop probability to train with: ``layer_drop_prob`` if given, else by depth.

    ``None`` gives 0 (off) for ``num_layers ≤ 4`` and LAT's 0.2 for deeper models (see the module notes).

    Raises:
        ConfigError: ``layer_drop_prob`` outside ``[0, 1)``, or ``num_layers < 1``.
    """
    if num_layers < 1:
        raise ConfigError(f"a model of {num_layers} layers cannot be trained with LayerDrop")
    if layer_drop_prob is None:
        return 0.0 if num_layers <= SHALLOW_LAYERS else LAYER_DROP_PROB
    _check(0.0, layer_drop_prob)
    return float(layer_drop_prob)


@dataclass(frozen=True)
class SubModel:
    """One pass of a sandwich step.

    Attributes:
        kind: ``"full"``, ``"smallest"`` or ``"random"``.
        config: the length configuration the pass runs with, or ``None`` for the full model (no token dropping).
            :func:`sandwich` gives per-row keep ratios (:func:`~slimformer.length.config.gene_config`).
        layers: indices of the layers that run (LayerDrop), or ``None`` for all; never empty.
        gene: the gene ``config`` was made from (tokens kept on the ``seq_len`` grid), for logs and tests.
    """

    kind: str
    config: LengthConfig | None
    layers: tuple[int, ...] | None
    gene: tuple[int, ...] | None = None


def sample_layers(num_layers: int, layer_drop_prob: float, rng: random.Random) -> tuple[bool, ...]:
    """LayerDrop: ``True`` for each layer that runs (``U(0,1) ≥ p_layer``); at least one layer always runs.

    When every draw drops its layer, one layer chosen uniformly (one more draw) runs instead.

    Raises:
        ConfigError: ``layer_drop_prob`` outside ``[0, 1)``.
    """
    _check(0.0, layer_drop_prob)
    if layer_drop_prob == 0:
        return (True,) * num_layers
    runs = [rng.random() >= layer_drop_prob for _ in range(num_layers)]
    if num_layers and not any(runs):
        runs[rng.randrange(num_layers)] = True
    return tuple(runs)


def sample_gene(
    seq_len: int, num_layers: int, ratio_bound: float, rng: random.Random, *, min_length: int = 2
) -> tuple[int, ...]:
    """LengthDrop: a random gene on the ``seq_len`` grid (non-increasing, never below :func:`smallest_gene`).

    ``g_i ~ UniformInteger[min(shrink(g_{i−1}), g_{i−1}), g_{i−1}]`` with ``g_0 = seq_len`` and
    ``shrink(g) = max(ceil((1 − p)·g), min_length)`` (:func:`~slimformer.length.genes.shrink`).

    Args:
        seq_len: ``N``, the grid: the search's ``seq_len``.
        num_layers: ``L``.
        ratio_bound: ``p`` in ``[0, 1)``: at most this fraction of the tokens entering a layer is dropped.
        rng: the random source.
        min_length: floor of every gene entry (the search's ``min_length``; 2 in LAT), never above ``g_{i−1}``.

    Raises:
        ConfigError: ``ratio_bound`` outside ``[0, 1)``.
    """
    _check(ratio_bound)
    out, prev = [], seq_len
    for _ in range(num_layers):
        prev = rng.randint(min(shrink(prev, ratio_bound, min_length), prev), prev)
        out.append(prev)
    return tuple(out)


def smallest_gene(seq_len: int, num_layers: int, ratio_bound: float, *, min_length: int = 2) -> tuple[int, ...]:
    """The lower end of LengthDrop, ``g_i = max(ceil((1 − p)·g_{i−1}), min_length)``: the search's smallest gene.

    Raises:
        ConfigError: ``ratio_bound`` outside ``[0, 1)``.
    """
    _check(ratio_bound)
    return constant_ratio_gene(ratio_bound, num_layers=num_layers, max_length=seq_len, min_length=min_length)


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
        seq_len: ``N``, the grid of the genes: the search's ``seq_len`` (the model's ``max_seq_length``), never
            the batch's length. Every sub-model is applied as per-row ratios ``g_i / N``.
        num_layers: ``L``.
        rng: the random source.
        num_sandwich: ``m ≥ 0`` random sub-models (LAT: 2).
        ratio_bound: LengthDrop bound ``p`` (LAT: 0.2); the search's ``length_drop_ratio`` must be the same for
            the smallest sub-model to be the search's smallest gene.
        layer_drop_prob: LayerDrop probability, sampled independently for each sub-model (resolve a depth-based
            default with :func:`default_layer_drop_prob` first).
        layer_drop_full: LayerDrop the full model too. The LAT code does (pitfall §1(f).2), which makes the
            in-place teacher a random-depth model; the default ``False`` keeps the teacher whole, as the
            code's own arguments intended.
        min_length: floor of every gene entry (the search's ``min_length``).

    Returns:
        ``m + 2`` :class:`SubModel` entries, the full model first.

    Raises:
        ConfigError: a probability or bound outside ``[0, 1)``, ``num_sandwich < 0`` or ``seq_len < 1``.
    """
    _check(ratio_bound, layer_drop_prob)
    if num_sandwich < 0:
        raise ConfigError(f"num_sandwich {num_sandwich} must be ≥ 0")
    if seq_len < 1:
        raise ConfigError(f"seq_len {seq_len} (the grid of the length configurations) must be ≥ 1")

    def layers(runs: tuple[bool, ...]) -> tuple[int, ...] | None:
        return None if all(runs) else tuple(i for i, r in enumerate(runs) if r)

    def sub(kind: str, gene: tuple[int, ...]) -> SubModel:
        runs = sample_layers(num_layers, layer_drop_prob, rng)
        return SubModel(kind, gene_config(gene, "ratios", seq_len), layers(runs), gene)

    full_runs = sample_layers(num_layers, layer_drop_prob if layer_drop_full else 0.0, rng)
    out = [SubModel("full", None, layers(full_runs))]
    out.append(sub("smallest", smallest_gene(seq_len, num_layers, ratio_bound, min_length=min_length)))
    for _ in range(num_sandwich):
        out.append(sub("random", sample_gene(seq_len, num_layers, ratio_bound, rng, min_length=min_length)))
    return out
