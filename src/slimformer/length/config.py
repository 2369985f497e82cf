"""``LengthConfig``: how many tokens leave each encoder layer (a *length configuration*, LAT §3).

Paper: Kim & Cho, *Length-Adaptive Transformer*, ACL 2021, https://arxiv.org/abs/2010.07003 (METHODS.md §1(b)).

Two forms, one per use:

* **absolute lengths** ``(l_1, ..., l_L)``, the genes of the evolutionary search: ``l_i`` is the largest number
  of tokens (``[CLS]`` included) that leave layer ``i``. On an input of ``N`` positions layer ``i`` keeps
  ``min(l_i, N)`` rows. Padding is dropped first (it receives no attention), so a row keeps
  ``min(l_i, its real length)`` real tokens whatever the batch is padded to: LAT's configs for ``N = 384``
  mean the same thing on shorter inputs.
* **keep ratios** ``(r_1, ..., r_L)``, fractions of the input length, for any input length:
  ``k_i = ceil(r_i · N − 0.001)`` evaluated in float32, clipped to ``1..N``, where ``N`` is the real length of
  each row (in a padded batch every row keeps what it keeps alone: :class:`~slimformer.length.LengthSelector`).
  The 0.001 slack makes ``0.3 × 10`` give 3 despite binary floating point; the float32 evaluation is what the
  ONNX graph does, so PyTorch and ONNX Runtime keep the same number of rows.

Both are validated on construction: non-increasing, no zero length, ratios in ``(0, 1]``; the layer count is
checked against a model with :meth:`LengthConfig.check_layers`. Saved next to the weights as
``length_config.json``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slimformer._version import __version__
from slimformer.errors import ConfigError
from slimformer.io import atomic_write_json

__all__ = [
    "LengthConfig",
    "LENGTH_CONFIG_FILE",
    "RATIO_SLACK",
    "GENE_FORMS",
    "gene_config",
    "save_length_config",
    "load_length_config",
]

#: File name of the default length configuration inside a model folder.
LENGTH_CONFIG_FILE = "length_config.json"
#: Subtracted from ``r · N`` before the ceiling (see the module notes).
RATIO_SLACK = 1e-3
_FORMAT_VERSION = 1


def _ratio_count(ratio: float, seq_len: int) -> int:
    """``clip(ceil(float32(r) · float32(N) − 0.001), 1, N)`` with float32 rounding, as the ONNX graph does."""
    prod = np.float32(ratio) * np.float32(seq_len) - np.float32(RATIO_SLACK)
    return int(min(max(math.ceil(float(np.float32(prod))), 1), seq_len))


@dataclass(frozen=True)
class LengthConfig:
    """A length configuration: per-layer absolute lengths *or* per-layer keep ratios (exactly one).

    Build with :meth:`from_lengths`, :meth:`from_ratios` or :meth:`full`.

    Attributes:
        lengths: ``(l_1, ..., l_L)`` tokens leaving each layer, ``l_1 ≥ ... ≥ l_L ≥ 1`` (``[CLS]`` counted).
        ratios: ``(r_1, ..., r_L)`` fractions of the input length, ``1 ≥ r_1 ≥ ... ≥ r_L > 0``.

    Raises:
        ConfigError: both or neither given, no layer, a length below 1 or not an integer, a ratio outside
            ``(0, 1]``, or an increase from one layer to the next (the message names the layer and values).
    """

    lengths: tuple[int, ...] | None = None
    ratios: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if (self.lengths is None) == (self.ratios is None):
            raise ConfigError("a length configuration needs exactly one of lengths or ratios")
        values = self.lengths if self.lengths is not None else self.ratios
        kind = "lengths" if self.lengths is not None else "ratios"
        if len(values) == 0:
            raise ConfigError(f"length configuration {kind} is empty; expected one value per encoder layer")
        for i, v in enumerate(values, start=1):
            if kind == "lengths" and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
                raise ConfigError(f"length configuration {values}: layer {i} length {v!r} is not an integer")
            if kind == "lengths" and v < 1:
                raise ConfigError(
                    f"length configuration {values}: layer {i} keeps {v} tokens; every layer keeps ≥ 1 ([CLS])"
                )
            if kind == "ratios" and not (isinstance(v, (int, float)) and 0 < v <= 1):
                raise ConfigError(f"length configuration ratios {values}: layer {i} ratio {v!r} is outside (0, 1]")
        for i in range(1, len(values)):
            if values[i] > values[i - 1]:
                raise ConfigError(
                    f"length configuration {kind} {values} increases at layer {i + 1} "
                    f"({values[i - 1]} -> {values[i]}); lengths must be non-increasing"
                )

    @classmethod
    def from_lengths(cls, lengths: Sequence[int]) -> LengthConfig:
        """Absolute per-layer lengths (tokens), e.g. a gene of the evolutionary search."""
        return cls(lengths=tuple(int(v) if isinstance(v, np.integer) else v for v in lengths))

    @classmethod
    def from_ratios(cls, ratios: Sequence[float]) -> LengthConfig:
        """Per-layer keep ratios (fractions of the input length)."""
        return cls(ratios=tuple(float(v) if isinstance(v, (int, np.floating)) else v for v in ratios))

    @classmethod
    def full(cls, num_layers: int) -> LengthConfig:
        """The full model: every layer keeps every token (ratios ``(1.0,) * L``)."""
        return cls.from_ratios([1.0] * num_layers)

    @property
    def num_layers(self) -> int:
        """Number of layers ``L`` the configuration describes."""
        return len(self.lengths if self.lengths is not None else self.ratios)

    @property
    def is_full(self) -> bool:
        """Whether no token is ever dropped (all ratios are 1; absolute lengths depend on the input)."""
        return self.ratios is not None and all(r == 1.0 for r in self.ratios)

    def selecting_layers(self) -> tuple[int, ...]:
        """Indices (0-based) of the layers at which this configuration can drop a token, on any input.

        Every other layer keeps exactly the rows that enter it, for every row of every batch
        (:class:`~slimformer.length.LengthSelector`: ``k_{b,i} = clip(min(ceil(r_i · n_b − 0.001), cap_i), 1,
        k_{b,i−1})``), so its selection ops can be left out of a graph that serves this configuration
        (:func:`~slimformer.export.length.export_length_onnx`, ``select_layers``):

        * ratios: layer ``i`` selects unless ``r_i = 1`` or ``r_i = r_{i−1}`` (then ``k_{b,i} = k_{b,i−1}``);
        * absolute lengths: layer ``i > 0`` selects unless ``l_i = l_{i−1}``; layer 0 always can (an input may
          be longer than ``l_1``).

        Returns:
            The selecting layers, increasing; ``()`` for the full model.
        """
        v = self.values
        if self.ratios is not None:
            return tuple(i for i, r in enumerate(v) if r < 1.0 and (i == 0 or r != v[i - 1]))
        return tuple(i for i in range(len(v)) if i == 0 or v[i] != v[i - 1])

    def check_layers(self, num_layers: int) -> LengthConfig:
        """Return ``self`` if it has one entry per layer of a ``num_layers``-layer model.

        Raises:
            ConfigError: the counts differ.
        """
        if self.num_layers != num_layers:
            raise ConfigError(
                f"length configuration {self.values} has {self.num_layers} layers; the model has {num_layers}"
            )
        return self

    @property
    def values(self) -> tuple[int, ...] | tuple[float, ...]:
        """The lengths or the ratios, whichever this configuration holds."""
        return self.lengths if self.lengths is not None else self.ratios

    def lengths_for(self, seq_len: int) -> tuple[int, ...]:
        """Rows kept after each layer for an input of ``seq_len`` tokens (``[CLS]`` counted).

        Absolute lengths: ``min(l_i, N)``. Ratios: ``clip(ceil(r_i · N − 0.001), 1, N)`` in float32 (see the
        module notes). The result is non-increasing and at least 1.

        Raises:
            ConfigError: ``seq_len < 1``.
        """
        if seq_len < 1:
            raise ConfigError(f"sequence length {seq_len} must be ≥ 1")
        if self.lengths is not None:
            return tuple(min(v, seq_len) for v in self.lengths)
        return tuple(_ratio_count(r, seq_len) for r in self.ratios)

    def to_ratios(self, seq_len: int) -> LengthConfig:
        """The ratio form relative to a reference length (``l_i / N``); ratios are returned unchanged.

        ``to_ratios(N).lengths_for(N) == lengths_for(N)``: at the reference length the same rows are kept.
        """
        if self.ratios is not None:
            return self
        return LengthConfig.from_ratios([min(v, seq_len) / seq_len for v in self.lengths])

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: ``{"lengths": [...]}`` or ``{"ratios": [...]}`` plus versions."""
        key = "lengths" if self.lengths is not None else "ratios"
        return {key: list(self.values), "format_version": _FORMAT_VERSION, "slimformer_version": __version__}

    @classmethod
    def from_dict(cls, d: Any, source: str = "length configuration") -> LengthConfig:
        """Inverse of :meth:`to_dict`.

        Raises:
            ConfigError: not a mapping, unknown keys, or an invalid configuration (names ``source``).
        """
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a mapping with 'lengths' or 'ratios', got {type(d).__name__}")
        known = {"lengths", "ratios", "format_version", "slimformer_version"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {unknown}; expected some of {sorted(known)}")
        has_lengths, has_ratios = "lengths" in d, "ratios" in d
        if has_lengths == has_ratios:
            raise ConfigError(f"{source}: expected exactly one of 'lengths' or 'ratios'")
        values = d["lengths" if has_lengths else "ratios"]
        if not isinstance(values, list):
            raise ConfigError(f"{source}: 'lengths'/'ratios' must be a list of numbers, got {values!r}")
        try:
            return cls.from_lengths(values) if has_lengths else cls.from_ratios(values)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str, source: str = "length configuration") -> LengthConfig:
        """Parse :meth:`to_json` output.

        Raises:
            ConfigError: invalid JSON or configuration.
        """
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{source}: not valid JSON ({e.msg} at line {e.lineno})") from None
        return cls.from_dict(raw, source)


#: How a search gene is applied: ``"ratios"`` (per-row keep ratios; the default of the search and of training) or
#: ``"lengths"`` (absolute caps, LAT).
GENE_FORMS = ("ratios", "lengths")


def gene_config(gene: Sequence[int], form: str, seq_len: int) -> LengthConfig:
    """The length configuration a gene stands for: what the search scores, the export ships and training samples.

    A *gene* ``(g_1, ..., g_L)`` is tokens kept after each layer on a ``seq_len``-token input (the search's grid).

    ``form="ratios"``: keep ratios ``g_i / seq_len``, so a row of ``n`` real tokens keeps
    ``clip(ceil(g_i · n / seq_len − 0.001), 1, n)`` (float32, :meth:`LengthConfig.lengths_for`): the gene's rows on a
    ``seq_len``-token input, proportionally fewer on shorter ones. ``form="lengths"`` (LAT): absolute per-layer
    lengths, ``g_i`` tokens at most on any input.

    Raises:
        ConfigError: an invalid gene or form.
    """
    if form == "lengths":
        return LengthConfig.from_lengths(gene)
    if form == "ratios":
        return LengthConfig.from_ratios([min(v, seq_len) / seq_len for v in gene])
    raise ConfigError(f"gene form must be 'lengths' or 'ratios', got {form!r}")


def save_length_config(config: LengthConfig, model_dir: str | os.PathLike[str]) -> Path:
    """Write ``config`` to ``<model_dir>/length_config.json`` (atomically) and return the path."""
    path = Path(model_dir) / LENGTH_CONFIG_FILE
    atomic_write_json(path, config.to_dict())
    return path


def load_length_config(model_dir: str | os.PathLike[str]) -> LengthConfig | None:
    """The length configuration saved in ``model_dir``, or ``None`` if the folder has none.

    Raises:
        ConfigError: the file exists but is not a valid length configuration (names the file).
    """
    path = Path(model_dir) / LENGTH_CONFIG_FILE
    if not path.is_file():
        return None
    return LengthConfig.from_json(path.read_text(encoding="utf-8"), str(path))
