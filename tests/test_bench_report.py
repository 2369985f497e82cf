"""Results files: markdown table, report.json/report.md, atomic writes."""

from __future__ import annotations

import json

import pytest

from slimformer.bench import (
    ROW_KEYS,
    RuntimeTiming,
    TimingStats,
    make_row,
    render_markdown_table,
    write_report,
)


def _timing(bs1_ms: float, bs32_ms: float) -> RuntimeTiming:
    return RuntimeTiming(
        latency_ms_bs1=bs1_ms,
        throughput_bs32=32 / (bs32_ms / 1e3),
        seq_len=128,
        threads=2,
        throughput_batch_size=32,
        bs1=TimingStats(bs1_ms, bs1_ms, bs1_ms, bs1_ms, 10),
        bs32=TimingStats(bs32_ms, bs32_ms, bs32_ms, bs32_ms, 3),
    )


@pytest.fixture
def report() -> dict:
    rows = [
        make_row("teacher fp32", "pytorch-fp32", metric_value=0.912, timing=_timing(20.0, 640.0), size_mb=90.9),
        make_row(
            "teacher fp32 | ort",
            "onnxruntime-fp32",
            metric_value=0.912,
            timing=_timing(9.0, 320.0),
            size_mb=90.3,
        ),
        make_row(
            "int8 dynamic",
            "onnxruntime-int8",
            metric_value=0.905,
            timing=_timing(4.0, 160.0),
            size_mb=22.9,
            notes="per-channel",
            method="ptq",
        ),
        make_row("no timing yet", "onnxruntime-int8", metric_value=None, timing=None, size_mb=None, seq_len=128),
    ]
    return {
        "benchmark": "sst2-int8",
        "command": "python benchmarks/x.py",
        "task": "sst2",
        "metric": "accuracy",
        "machine": {"cpu": "AMD EPYC", "threads": 2},
        "rows": rows,
    }


def test_make_row_follows_convention(report: dict) -> None:
    row = report["rows"][2]
    assert list(row)[: len(ROW_KEYS)] == list(ROW_KEYS) and row["method"] == "ptq"
    assert row["throughput_bs32"] == 200.0 and row["latency_ms_bs1"] == 4.0 and row["seq_len"] == 128


def test_markdown_table_has_every_row(report: dict) -> None:
    table = render_markdown_table(report["rows"], "accuracy")
    lines = table.strip().splitlines()
    assert len(lines) == 2 + len(report["rows"])
    assert "accuracy" in lines[0] and "speed-up vs teacher fp32" in lines[0]
    assert "| teacher fp32 | pytorch-fp32 | 0.9120 | 20.00 | 50.0 | 1.00x | 90.9 | 128 |" in table
    assert "teacher fp32 \\| ort" in table  # pipes in names are escaped
    assert "| 4.00x |" in lines[4]
    assert lines[5].count("–") >= 4


def test_write_report(tmp_path, report: dict) -> None:
    json_path, md_path = write_report(tmp_path / "run", report)
    assert json.loads(json_path.read_text()) == report
    md = md_path.read_text()
    assert all(row["name"].replace("|", "\\|") in md for row in report["rows"])
    assert "python benchmarks/x.py" in md and "per-channel" in md


def test_invalid_report_does_not_clobber(tmp_path, report: dict) -> None:
    write_report(tmp_path, report)
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}
    bad = dict(report, rows=[{"name": "x", "runtime": "pytorch-fp32"}])
    with pytest.raises(ValueError, match="lacks"):
        write_report(tmp_path, bad)
    with pytest.raises(TypeError):
        write_report(tmp_path, dict(report, extra={1, 2}))
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before
    with pytest.raises(ValueError, match="at least one row"):
        render_markdown_table([], "accuracy")
