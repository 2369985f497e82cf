"""Latency and throughput: warm-up, then timed calls; medians; intra-op threads pinned and recorded.

Protocol (nanoGPT ``bench.py`` style): ``warmup`` untimed calls, then timed calls until both ``iters`` calls
and ``min_time_s`` seconds are reached. CPU inference is synchronous, so wall-clock time per call is exact.
On a shared machine, other load inflates single timings: :func:`compare_runtimes` interleaves the runtimes in
rounds and pools the samples, so every runtime sees the same background and the ratios stay meaningful.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from slimformer.bench.machine import physical_cores

__all__ = [
    "TimingStats",
    "RuntimeTiming",
    "measure",
    "torch_threads",
    "torch_runner",
    "ort_runner",
    "pad_to_length",
    "benchmark_runtime",
    "compare_runtimes",
]


class OrtSession(Protocol):
    """What timing needs of an ONNX Runtime session wrapper (:class:`slimformer.export.OrtModel` is one): the
    wrapped ``session``, its ``output_names``, ``feeds(batch)`` (graph inputs as int64) and its thread count."""

    session: Any
    output_names: Sequence[str]
    intra_op_num_threads: int

    def feeds(self, batch: Mapping[str, Any]) -> dict[str, Any]: ...


_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class TimingStats:
    """Statistics of the timed calls (warm-up excluded), in milliseconds per call."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    iters: int

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> TimingStats:
        """Statistics of per-call times in ms (at least one)."""
        a = np.asarray(samples_ms, dtype=np.float64)
        return cls(float(np.median(a)), float(np.percentile(a, 90)), float(a.mean()), float(a.min()), len(a))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _samples(fn: Callable[[], object], warmup: int, iters: int, min_time_s: float, max_iters: int) -> list[float]:
    if warmup < 0 or iters < 1 or max_iters < iters:
        raise ValueError(f"need warmup >= 0 and 1 <= iters <= max_iters; got {warmup}, {iters}, {max_iters}")
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < iters or (time.perf_counter() - start < min_time_s and len(samples) < max_iters):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def measure(
    fn: Callable[[], object],
    *,
    warmup: int = 3,
    iters: int = 10,
    min_time_s: float = 0.0,
    max_iters: int = 10_000,
) -> TimingStats:
    """Time ``fn()``: ``warmup`` untimed calls, then ``iters`` or more timed calls lasting ``min_time_s`` s.

    Args:
        fn: the call to time (it must finish its work before returning).
        warmup: untimed calls first (caches, allocator, lazy initialization).
        iters: minimum number of timed calls.
        min_time_s: keep calling until this many seconds of timed calls (at most ``max_iters`` calls).
        max_iters: cap on timed calls when ``min_time_s`` is not yet reached.

    Returns:
        :class:`TimingStats` over the timed calls (ms per call).

    Raises:
        ValueError: ``warmup < 0``, ``iters < 1`` or ``max_iters < iters``.
    """
    return TimingStats.from_samples(_samples(fn, warmup, iters, min_time_s, max_iters))


@contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """Pin PyTorch's intra-op thread count for the ``with`` block, then restore the previous value."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(previous)


def torch_runner(model: nn.Module, batch: Mapping[str, Any]) -> Callable[[], object]:
    """A no-argument call of ``model`` (eager, ``torch.inference_mode``) on ``batch``, tensors made up front.

    Only ``input_ids``, ``attention_mask`` and ``token_type_ids`` are passed; the model is put in eval mode.
    """
    model.eval()
    tensors = {k: torch.as_tensor(np.asarray(v), dtype=torch.long) for k, v in batch.items() if k in _MODEL_INPUTS}

    def run() -> object:
        with torch.inference_mode():
            return model(**tensors)

    return run


def ort_runner(session: OrtSession, batch: Mapping[str, Any]) -> Callable[[], object]:
    """A no-argument ``session.run`` on ``batch``, with the feeds (graph inputs, int64) made up front."""
    feeds = session.feeds(batch)
    names = list(session.output_names)
    return lambda: session.session.run(names, feeds)


def pad_to_length(batch: Mapping[str, Any], seq_len: int, *, pad_token_id: int = 0) -> dict[str, np.ndarray]:
    """Right-pad or truncate ``(n, L)`` arrays to ``(n, seq_len)``: ids with ``pad_token_id``, others 0."""
    out = {}
    for name, value in batch.items():
        a = np.asarray(value)[:, :seq_len]
        fill = pad_token_id if name == "input_ids" else 0
        out[name] = np.pad(a, ((0, 0), (0, seq_len - a.shape[1])), constant_values=fill)
    return out


@dataclass(frozen=True)
class RuntimeTiming:
    """Latency at batch 1 and throughput at batch ``throughput_batch_size`` for one runtime.

    Attributes:
        latency_ms_bs1: median ms per batch-1 call.
        throughput_bs32: sequences per second at the throughput batch size (batch / median seconds).
    """

    latency_ms_bs1: float
    throughput_bs32: float
    seq_len: int
    threads: int
    throughput_batch_size: int
    bs1: TimingStats
    bs32: TimingStats

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bs1": self.bs1.to_dict(), "bs32": self.bs32.to_dict()}


def _prepare(
    model: nn.Module | OrtSession, batch: Mapping[str, Any], seq_len: int, batch_size: int, threads: int | None
) -> tuple[Callable[[], object], Callable[[], object], int]:
    rows = len(np.asarray(batch["input_ids"]))
    if rows < batch_size:
        raise ValueError(f"batch has {rows} rows; the throughput measurement needs at least {batch_size}")
    widths = {np.asarray(v).shape[1] for v in batch.values()}
    if widths != {seq_len}:
        raise ValueError(f"batch arrays have length(s) {sorted(widths)}, expected {seq_len}; use pad_to_length first")
    one = {k: np.asarray(v)[:1] for k, v in batch.items()}
    full = {k: np.asarray(v)[:batch_size] for k, v in batch.items()}
    if not isinstance(model, nn.Module):  # an ONNX Runtime session wrapper (OrtModel)
        if threads is not None and threads != model.intra_op_num_threads:
            raise ValueError(
                f"OrtModel uses {model.intra_op_num_threads} threads, not {threads}; set it when building it"
            )
        return ort_runner(model, one), ort_runner(model, full), model.intra_op_num_threads
    return torch_runner(model, one), torch_runner(model, full), threads or physical_cores()


def compare_runtimes(
    models: Mapping[str, nn.Module | OrtSession],
    batch: Mapping[str, Any],
    *,
    seq_len: int,
    threads: int | None = None,
    rounds: int = 3,
    warmup: int = 2,
    iters_bs1: int = 10,
    iters_bs32: int = 2,
    min_time_s: float = 0.5,
    throughput_batch_size: int = 32,
) -> dict[str, RuntimeTiming]:
    """Time several runtimes on the same real inputs, interleaved in ``rounds`` (samples pooled per runtime).

    Args:
        models: ``{name: SlimModel / nn.Module (PyTorch eager) or OrtModel}``.
        batch: real inputs ``{name: (n, seq_len) int array}``, ``n >= throughput_batch_size``; row 0 is the
            batch-1 input, rows ``0..throughput_batch_size-1`` the throughput batch.
        seq_len: tokens per sequence (checked against the arrays).
        threads: PyTorch intra-op threads (pinned during its timings, restored after); defaults to the
            physical core count. ``OrtModel`` threads are fixed when the session is built.
        rounds: each round times every runtime once per batch size (``warmup`` + ``iters`` / ``min_time_s``).
        throughput_batch_size: batch of the throughput measurement (32 in results files).

    Returns:
        ``{name: RuntimeTiming}`` in the order of ``models``.

    Raises:
        ValueError: too few rows, arrays not ``seq_len`` long, or an ``OrtModel`` with other threads.
    """
    runners = {name: _prepare(m, batch, seq_len, throughput_batch_size, threads) for name, m in models.items()}
    samples: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in models}
    for _ in range(rounds):
        for name, (run1, run32, n_threads) in runners.items():
            with torch_threads(n_threads):
                samples[name][0].extend(_samples(run1, warmup, iters_bs1, min_time_s, 10_000))
                samples[name][1].extend(_samples(run32, warmup, iters_bs32, min_time_s, 10_000))
    out = {}
    for name, (s1, s32) in samples.items():
        bs1, bs32 = TimingStats.from_samples(s1), TimingStats.from_samples(s32)
        out[name] = RuntimeTiming(
            latency_ms_bs1=bs1.median_ms,
            throughput_bs32=throughput_batch_size / (bs32.median_ms / 1e3),
            seq_len=seq_len,
            threads=runners[name][2],
            throughput_batch_size=throughput_batch_size,
            bs1=bs1,
            bs32=bs32,
        )
    return out


def benchmark_runtime(
    model: nn.Module | OrtSession,
    batch: Mapping[str, Any],
    *,
    seq_len: int,
    threads: int | None = None,
    **kwargs: Any,
) -> RuntimeTiming:
    """Latency (batch 1, median ms) and throughput (batch 32, seq/s) of one runtime.

    Same arguments as :func:`compare_runtimes`.
    """
    return compare_runtimes({"model": model}, batch, seq_len=seq_len, threads=threads, **kwargs)["model"]
