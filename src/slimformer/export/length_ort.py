"""ONNX Runtime sessions of a length-adaptive graph that run a *given* length configuration, and their timing.

A graph written by :func:`~slimformer.export.length.export_length_onnx` takes the configuration as two extra
inputs (``length_ratios``, ``length_caps``) whose defaults are the configuration given at export. A plain
:class:`~slimformer.export.ort.OrtModel` feeds only ids and mask, so it runs that default.
:class:`LengthOrtModel` feeds the configuration it was built with on every call, so evaluation
(:func:`~slimformer.evaluate.evaluate_predictor`) and timing (:func:`~slimformer.bench.latency.compare_runtimes`,
which calls :meth:`OrtModel.feeds`) both run exactly that configuration, whatever the graph's default.

Timing inputs (:func:`full_length_batch`): ``N`` real tokens per row (mask all ones, no padding), as the
FLOPs model and LAT's cost assume (a padded input would let every configuration drop the padding for free).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from slimformer.bench.latency import measure, ort_runner
from slimformer.export.length import LENGTH_INPUTS, graph_select_layers, length_feeds
from slimformer.export.ort import OrtModel
from slimformer.length.config import LengthConfig
from slimformer.length.selector import check_select_layers

__all__ = ["LengthOrtModel", "full_length_batch", "latency_ms"]


class LengthOrtModel(OrtModel):
    """An :class:`OrtModel` over a length-adaptive graph that always feeds ``config``.

    Args:
        path: the ``.onnx`` file (fp32 or int8) written by ``export_length_onnx``.
        config: the length configuration to run (``None``: the full model).
        **kwargs: thread counts and optimization level, as :class:`OrtModel`.

    Raises:
        ValueError: the graph has no length inputs (names the file). ConfigError: ``config`` does not match
            the graph's layer count.
    """

    def __init__(self, path: str | os.PathLike[str], config: LengthConfig | None, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        inits = {i.name for i in self.session.get_overridable_initializers()}
        declared = inits | set(self.input_names)
        if not set(LENGTH_INPUTS) <= declared:
            raise ValueError(f"{self.path.name} has no {list(LENGTH_INPUTS)} inputs; not a length-adaptive graph")
        self.num_layers = int(self.metadata.get("slimformer.num_hidden_layers", 0))
        #: the layers the graph selects tokens at (``None``: every layer; ``export_length_onnx``'s ``select_layers``)
        self.select_layers = graph_select_layers(self.metadata, self.path.name)
        self.set_config(config)

    def set_config(self, config: LengthConfig | None) -> None:
        """Run ``config`` from now on (no new session is built).

        Raises:
            ConfigError: ``config`` does not have one entry per layer of the graph, or drops tokens at a layer the
                graph has no selection ops for (a graph exported for one pick, ``select_layers``).
        """
        self._length_feeds = length_feeds(config, self.num_layers)
        check_select_layers(config, self.select_layers, f"{self.path.name} (exported for its pick)")
        self.config = config

    def feeds(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """:meth:`OrtModel.feeds` plus ``length_ratios`` ``(L,)`` float32 and ``length_caps`` ``(L,)`` int64."""
        return {**super().feeds(batch), **self._length_feeds}

    def __repr__(self) -> str:
        values = self.config.values if self.config is not None else "full"
        return f"LengthOrtModel({str(self.path)!r}, config={values}, threads={self.intra_op_num_threads})"


def full_length_batch(vocab_size: int, seq_len: int, rows: int, *, seed: int = 0) -> dict[str, np.ndarray]:
    """A timing batch of ``rows`` sequences with ``seq_len`` real tokens each (random ids, mask all ones).

    Token ids are drawn from ``[5, vocab_size)`` (past the usual special tokens); ``token_type_ids`` are 0
    (ONNX sessions drop inputs their graph does not declare).

    Returns:
        ``{"input_ids", "attention_mask", "token_type_ids"}``, each ``(rows, seq_len)`` int64.
    """
    rng = np.random.default_rng(seed)
    return {
        "input_ids": rng.integers(5, max(6, vocab_size), size=(rows, seq_len), dtype=np.int64),
        "attention_mask": np.ones((rows, seq_len), dtype=np.int64),
        "token_type_ids": np.zeros((rows, seq_len), dtype=np.int64),
    }


def latency_ms(session: OrtModel, batch: Mapping[str, np.ndarray], *, warmup: int = 3, iters: int = 20) -> float:
    """Median ms of one ``session`` call on ``batch`` (``warmup`` untimed calls first)."""
    return measure(ort_runner(session, batch), warmup=warmup, iters=iters).median_ms
