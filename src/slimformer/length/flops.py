"""Analytic compute cost of a length configuration (multiply-accumulates, MACs; FLOPs = 2 · MACs).

METHODS.md §1(b) "FLOPs model" (OUR CHOICE). Per sequence (batch 1), hidden size ``D``, FFN size ``D_ff``,
layer ``i`` entered by ``n_in = k_{i-1}`` rows (``k_0 = N``) and left by ``n_out = k_i`` rows::

    MACs_i = 3·n_in·D²        Q, K, V projections (on every row entering the layer)
           + 2·n_in²·D        scores Q·Kᵀ and context A·V (H heads × n_in² × d_h each, H·d_h = D)
           + n_in·D²          attention output projection W_o
           + 2·n_out·D·D_ff   feed-forward block, only on the kept rows (LAT drops between attention and FFN)

Optional head (``include_head=True``): classification ``D² + D·C`` (BERT pooler dense + classifier, or the
RoBERTa head's dense + out_proj, both on one row), span QA ``2·N·D`` (``qa_outputs`` on every row, the
Drop-and-Restore buffer has full length). Only the encoder's matrix products are counted: embeddings
(look-ups), biases, softmax, LayerNorm, GELU, residual adds and the token selection are left out, as in
``torchprofile`` / ``torch.utils.flop_counter`` (the test checks ``2 · MACs`` against ``FlopCounterMode`` on a
tiny encoder). The selection's significance score is one ``H·n_in²``-MAC product per layer (``H/(2D)`` of the
attention products, 1.6% for MiniLM), also left out, as LAT's FLOPs leave it out.

Cost is a function of the *input length*: LAT reports MACs at the padded length (``N = 384`` for SQuAD,
128 for GLUE; METHODS.md §1(d), pitfall §1(f).6); pass that ``seq_len`` to compare with the paper.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from slimformer.length.config import LengthConfig

__all__ = ["EncoderDims", "layer_macs", "config_macs", "config_flops", "cost_fn"]


@dataclass(frozen=True)
class EncoderDims:
    """The sizes the cost depends on.

    Attributes:
        hidden: ``D``; intermediate: ``D_ff``; num_layers: ``L``.
        head: ``"classification"``, ``"qa"`` or ``"none"``; num_labels: ``C`` (classification).
    """

    hidden: int
    intermediate: int
    num_layers: int
    head: str = "none"
    num_labels: int = 0

    @classmethod
    def from_model(cls, model: Any) -> EncoderDims:
        """From a :class:`~slimformer.models.SlimModel` (its HF config and head)."""
        cfg = model.config
        return cls(
            hidden=int(cfg.hidden_size),
            intermediate=int(cfg.intermediate_size),
            num_layers=int(cfg.num_hidden_layers),
            head=model.head.value,
            num_labels=int(getattr(cfg, "num_labels", 0) or 0),
        )


def layer_macs(n_in: int, n_out: int, dims: EncoderDims) -> int:
    """MACs of one encoder layer entered by ``n_in`` rows and left by ``n_out`` rows (see module notes)."""
    d, d_ff = dims.hidden, dims.intermediate
    return 4 * n_in * d * d + 2 * n_in * n_in * d + 2 * n_out * d * d_ff


def _head_macs(seq_len: int, dims: EncoderDims) -> int:
    if dims.head == "classification":
        return dims.hidden * dims.hidden + dims.hidden * dims.num_labels
    if dims.head == "qa":
        return 2 * seq_len * dims.hidden
    return 0


def config_macs(
    config: LengthConfig | Sequence[int] | None, seq_len: int, dims: EncoderDims, *, include_head: bool = False
) -> int:
    """MACs of one sequence of ``seq_len`` tokens under a length configuration.

    Args:
        config: a :class:`LengthConfig`, a tuple of absolute per-layer lengths (a search gene), or ``None``
            (the full model).
        seq_len: input length ``N`` (tokens).
        dims: the model sizes.
        include_head: add the task head's MACs.

    Returns:
        MACs (multiply-accumulates) as an int.

    Raises:
        ConfigError: an invalid configuration, or one whose layer count is not ``dims.num_layers``.
    """
    if config is None:
        config = LengthConfig.full(dims.num_layers)
    elif not isinstance(config, LengthConfig):
        config = LengthConfig.from_lengths(config)
    kept = config.check_layers(dims.num_layers).lengths_for(seq_len)
    total, n_in = 0, seq_len
    for n_out in kept:
        total += layer_macs(n_in, n_out, dims)
        n_in = n_out
    return total + (_head_macs(seq_len, dims) if include_head else 0)


def config_flops(
    config: LengthConfig | Sequence[int] | None, seq_len: int, dims: EncoderDims, *, include_head: bool = False
) -> int:
    """FLOPs ``= 2 · MACs`` of :func:`config_macs` (a multiply and an add per MAC)."""
    return 2 * config_macs(config, seq_len, dims, include_head=include_head)


def cost_fn(
    model: Any, seq_len: int, *, unit: Literal["macs", "flops"] = "macs", include_head: bool = False
) -> Callable[[Sequence[int]], int]:
    """A cost callable over search genes (tuples of absolute per-layer lengths), for the evolutionary search.

    Args:
        model: a :class:`~slimformer.models.SlimModel` (only its sizes are read).
        seq_len: the input length the cost refers to (LAT: the padded length, e.g. 384 for SQuAD).
        unit: ``"macs"`` or ``"flops"`` (``2 · MACs``).
        include_head: add the task head's cost.

    Returns:
        ``gene -> int``; raises :class:`~slimformer.errors.ConfigError` for an invalid gene.
    """
    dims = EncoderDims.from_model(model)
    fn = config_flops if unit == "flops" else config_macs

    def cost(gene: Sequence[int]) -> int:
        return fn(tuple(gene), seq_len, dims, include_head=include_head)

    return cost
