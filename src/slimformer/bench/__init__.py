"""Benchmarks: timing (warm-up, medians, pinned threads), machine description, results files."""

from slimformer.bench.latency import (
    RuntimeTiming,
    TimingStats,
    benchmark_runtime,
    compare_runtimes,
    measure,
    ort_runner,
    pad_to_length,
    torch_runner,
    torch_threads,
)
from slimformer.bench.machine import file_size_mb, machine_info, physical_cores
from slimformer.bench.report import ROW_KEYS, RUNTIMES, make_row, render_markdown_table, write_report

__all__ = [
    "RuntimeTiming",
    "TimingStats",
    "benchmark_runtime",
    "compare_runtimes",
    "measure",
    "ort_runner",
    "pad_to_length",
    "torch_runner",
    "torch_threads",
    "file_size_mb",
    "machine_info",
    "physical_cores",
    "ROW_KEYS",
    "RUNTIMES",
    "make_row",
    "render_markdown_table",
    "write_report",
]
