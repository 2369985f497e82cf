"""Results files: ``report.json`` + ``report.md`` in a run folder, rows in the results-file convention.

A row (see ``DESIGN.md``, "Results files") has at least ``name``, ``runtime`` (``pytorch-fp32`` |
``onnxruntime-fp32`` | ``onnxruntime-int8`` | ...), ``metric_value``, ``latency_ms_bs1`` (median ms),
``throughput_bs32`` (sequences/s), ``size_mb`` (10^6 bytes), ``seq_len`` and ``notes``; more keys are kept.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from slimformer._faults import kill_point
from slimformer.bench.latency import RuntimeTiming
from slimformer.io import atomic_write_text

__all__ = [
    "ROW_KEYS",
    "RUNTIMES",
    "make_row",
    "render_markdown_table",
    "render_report_markdown",
    "write_report",
]

#: Keys every row has.
ROW_KEYS = (
    "name",
    "runtime",
    "metric_value",
    "latency_ms_bs1",
    "throughput_bs32",
    "size_mb",
    "seq_len",
    "notes",
)
#: The usual runtime labels (others are allowed).
RUNTIMES = ("pytorch-fp32", "onnxruntime-fp32", "onnxruntime-int8")


def make_row(
    name: str,
    runtime: str,
    *,
    metric_value: float | None,
    timing: RuntimeTiming | None,
    size_mb: float | None,
    seq_len: int | None = None,
    notes: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """One results row from a :class:`~slimformer.bench.latency.RuntimeTiming` (``None`` stays ``None``).

    ``extra`` keys (method, bits, threads, length_config, ...) are appended after the standard ones.
    """
    return {
        "name": name,
        "runtime": runtime,
        "metric_value": metric_value,
        "latency_ms_bs1": None if timing is None else round(timing.latency_ms_bs1, 3),
        "throughput_bs32": None if timing is None else round(timing.throughput_bs32, 2),
        "size_mb": None if size_mb is None else round(size_mb, 2),
        "seq_len": seq_len if seq_len is not None else (timing.seq_len if timing is not None else None),
        "notes": notes,
        **extra,
    }


def _check_rows(rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        raise ValueError("a report needs at least one row")
    for i, row in enumerate(rows):
        missing = [k for k in ROW_KEYS if k not in row]
        if missing:
            raise ValueError(f"row {i} ({row.get('name', '?')!r}) lacks key(s) {missing}; rows need {list(ROW_KEYS)}")


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)


def _fmt_metric(value: Any) -> str:
    """Fractions (accuracy 0.912) with 4 decimals, points (F1 88.53) with 2."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.4f}" if abs(value) < 1.5 else f"{value:.2f}"
    return _fmt(value, "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _speedup(row: Mapping[str, Any], first: Mapping[str, Any]) -> str:
    """Throughput ratio vs the first row; the batch-1 latency ratio when a throughput is missing."""
    if row.get("throughput_bs32") and first.get("throughput_bs32"):
        return f"{row['throughput_bs32'] / first['throughput_bs32']:.2f}x"
    if row.get("latency_ms_bs1") and first.get("latency_ms_bs1"):
        return f"{first['latency_ms_bs1'] / row['latency_ms_bs1']:.2f}x (bs1)"
    return "–"


def render_markdown_table(rows: Sequence[Mapping[str, Any]], metric_name: str) -> str:
    """A GitHub-markdown table of results rows (one line per row, in order).

    Columns: name, runtime, ``metric_name``, latency bs1 (ms), throughput bs32 (seq/s), speed-up vs the first
    row (bs32 throughput ratio), size (MB), seq_len. Metric values below 1.5 (fractions) get 4 decimals,
    others (points) 2; missing values show as "–".

    Raises:
        ValueError: no rows, or a row lacks one of :data:`ROW_KEYS`.
    """
    _check_rows(rows)
    header = [
        "name",
        "runtime",
        metric_name,
        "latency bs1 (ms)",
        "throughput bs32 (seq/s)",
        f"speed-up vs {rows[0]['name']}",
        "size (MB)",
        "seq_len",
    ]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            str(row["name"]),
            str(row["runtime"]),
            _fmt_metric(row["metric_value"]),
            _fmt(row["latency_ms_bs1"], ".2f"),
            _fmt(row["throughput_bs32"], ".1f"),
            _speedup(row, rows[0]),
            _fmt(row["size_mb"], ".1f"),
            _fmt(row["seq_len"], "d"),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def render_report_markdown(report: Mapping[str, Any]) -> str:
    """``report.md``: title, command, task/metric, machine, the table, then each row's notes."""
    rows = report.get("rows") or []
    metric = str(report.get("metric", "metric"))
    parts = [f"# {report.get('benchmark', 'benchmark')}\n"]
    if report.get("command"):
        parts.append(f"Regenerate with:\n\n```\n{report['command']}\n```\n")
    if report.get("task"):
        parts.append(f"Task: {report['task']} (metric: {metric}).\n")
    machine = report.get("machine")
    if machine:
        keys = ("cpu", "threads", "torch", "onnxruntime")
        parts.append("Machine: " + ", ".join(f"{k} {machine[k]}" for k in keys if k in machine) + ".\n")
    parts.append(render_markdown_table(rows, metric))
    notes = [f"- **{_cell(str(r['name']))}**: {_cell(str(r['notes']))}" for r in rows if r.get("notes")]
    if notes:
        parts.append("Notes:\n\n" + "\n".join(notes) + "\n")
    batching = _batching_lines(rows)
    if batching:
        parts.append(batching)
    parts.append(
        "Latency: median ms per batch-1 call. Throughput: 32 / median seconds per batch-32 call. MB = 10^6 bytes.\n"
    )
    return "\n".join(parts)


def _batching_lines(rows: Sequence[Mapping[str, Any]]) -> str:
    """The "Metric batching" section: each row's ``batching_text``, its ``batching_spread`` and ``advice``."""
    lines = []
    for r in rows:
        if not r.get("batching_text"):
            continue
        line = f"- **{_cell(str(r['name']))}**: {_cell(str(r['batching_text']))}"
        if r.get("dynamic_activations"):
            line += " (dynamic activation scales: the figure depends on batching)"
        spread = r.get("batching_spread")
        if spread:
            each = ", ".join(
                f"bs {b['batching']['batch_size']} {_fmt_metric(b['metrics']['main'])}" for b in spread["rows"]
            )
            line += f"; across batchings: {each} (spread {_fmt_metric(spread['spread'])})"
        if r.get("advice"):
            line += f". {_cell(str(r['advice']))}"
        lines.append(line)
    if not lines:
        return ""
    return "Metric batching (how each row's inputs were batched for its metric):\n\n" + "\n".join(lines) + "\n"


def write_report(run_dir: str | os.PathLike[str], report: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``run_dir/report.json`` and ``run_dir/report.md``.

    Both texts are rendered before anything is written and each file is replaced atomically
    (:mod:`slimformer.io`), so an invalid report leaves earlier files untouched.

    Args:
        run_dir: the run's output folder (created if needed).
        report: ``{"benchmark", "command", "machine", "task", "metric", "rows": [...], ...}``.

    Returns:
        ``(json_path, md_path)``.

    Raises:
        ValueError: no rows, or a row lacks one of :data:`ROW_KEYS`.
        TypeError: the report holds a value JSON cannot encode.
    """
    _check_rows(report.get("rows") or [])
    json_text = json.dumps(report, indent=2) + "\n"
    md_text = render_report_markdown(report)
    run_dir = Path(run_dir)
    js = atomic_write_text(run_dir / "report.json", json_text)
    kill_point("report:after-json")  # kill-and-resume tests: one file of the report written, not the other
    return js, atomic_write_text(run_dir / "report.md", md_text)
