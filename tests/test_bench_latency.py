"""Timing bookkeeping (no speed targets), runtimes on tiny models, machine info, sizes, OrtModel feeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_tiny_model
from slimformer.bench import (
    TimingStats,
    benchmark_runtime,
    compare_runtimes,
    file_size_mb,
    machine_info,
    measure,
    pad_to_length,
    physical_cores,
    torch_threads,
)
from slimformer.export import DummyInputGenerator, OrtModel, export_onnx


def test_measure_counts_warmup_apart() -> None:
    calls = []
    stats = measure(lambda: calls.append(1), warmup=3, iters=5)
    assert len(calls) == 8 and stats.iters == 5


def test_measure_min_time_is_capped_by_max_iters() -> None:
    calls = []
    stats = measure(lambda: calls.append(1), warmup=0, iters=2, min_time_s=3600.0, max_iters=7)
    assert stats.iters == 7 == len(calls)


def test_measure_rejects_bad_counts() -> None:
    for kwargs in ({"iters": 0}, {"warmup": -1}, {"iters": 5, "max_iters": 4}):
        with pytest.raises(ValueError):
            measure(lambda: None, **kwargs)


def test_timing_stats_from_samples() -> None:
    s = TimingStats.from_samples([4.0, 1.0, 3.0, 2.0, 100.0])
    assert (s.median_ms, s.mean_ms, s.min_ms, s.iters) == (3.0, 22.0, 1.0, 5)
    assert s.p90_ms == pytest.approx(np.percentile([1, 2, 3, 4, 100], 90))
    assert set(s.to_dict()) == {"median_ms", "p90_ms", "mean_ms", "min_ms", "iters"}


def test_torch_threads_restored() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_pad_to_length() -> None:
    batch = {"input_ids": np.array([[5, 6, 7]]), "attention_mask": np.ones((1, 3), dtype=np.int64)}
    padded = pad_to_length(batch, 5, pad_token_id=1)
    assert padded["input_ids"].tolist() == [[5, 6, 7, 1, 1]] and padded["attention_mask"].tolist() == [[1, 1, 1, 0, 0]]
    assert pad_to_length(batch, 2)["input_ids"].tolist() == [[5, 6]]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    pytest.importorskip("onnxruntime")
    model = make_tiny_model("classification", "roberta")
    path = export_onnx(model, tmp_path_factory.mktemp("bench") / "m.onnx")
    batch = DummyInputGenerator(model.config, seed=0).generate(("input_ids", "attention_mask"), 32, 16)
    return {"model": model, "path": path, "batch": {k: v.numpy() for k, v in batch.items()}}


def test_benchmark_runtime_torch_and_ort(tiny: dict) -> None:
    fast = {"rounds": 1, "warmup": 1, "iters_bs1": 3, "iters_bs32": 2, "min_time_s": 0.0}
    session = OrtModel(tiny["path"], intra_op_num_threads=1)
    timings = compare_runtimes({"pt": tiny["model"], "ort": session}, tiny["batch"], seq_len=16, threads=1, **fast)
    assert list(timings) == ["pt", "ort"]
    for t in timings.values():
        assert (t.seq_len, t.threads, t.bs1.iters, t.bs32.iters) == (16, 1, 3, 2)
        assert t.latency_ms_bs1 == t.bs1.median_ms > 0
        assert t.throughput_bs32 == pytest.approx(32 / (t.bs32.median_ms / 1e3))
    one = benchmark_runtime(session, tiny["batch"], seq_len=16, **fast)
    assert one.threads == 1 and one.to_dict()["bs32"]["iters"] == 2


def test_benchmark_runtime_input_checks(tiny: dict) -> None:
    with pytest.raises(ValueError, match="at least 32"):
        benchmark_runtime(tiny["model"], {k: v[:8] for k, v in tiny["batch"].items()}, seq_len=16)
    with pytest.raises(ValueError, match="pad_to_length"):
        benchmark_runtime(tiny["model"], tiny["batch"], seq_len=128)
    with pytest.raises(ValueError, match="threads"):
        benchmark_runtime(OrtModel(tiny["path"], intra_op_num_threads=1), tiny["batch"], seq_len=16, threads=2)


def test_ort_model_feeds_only_declared_inputs(tiny: dict) -> None:
    session = OrtModel(tiny["path"], intra_op_num_threads=1)
    assert session.input_names == ("input_ids", "attention_mask")  # RoBERTa: no token_type_ids
    batch = {k: torch.from_numpy(v[:2]).int() for k, v in tiny["batch"].items()}
    batch.update(token_type_ids=torch.zeros(2, 16, dtype=torch.long), labels=torch.tensor([0, 1]))
    feeds = session.feeds(batch)
    assert list(feeds) == ["input_ids", "attention_mask"] and all(v.dtype == np.int64 for v in feeds.values())
    assert session(batch)["logits"].shape == (2, 2)
    with pytest.raises(KeyError, match="attention_mask"):
        session({"input_ids": batch["input_ids"]})
    assert session.settings() == {
        "intra_op_num_threads": 1,
        "inter_op_num_threads": 1,
        "graph_optimization_level": "all",
    }
    assert session.file_size_mb == pytest.approx(tiny["path"].stat().st_size / 1e6)


def test_ort_model_fills_missing_token_type_ids(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    model = make_tiny_model("classification", "bert")
    session = OrtModel(export_onnx(model, tmp_path / "b.onnx"))
    assert "token_type_ids" in session.input_names
    ids = np.array([[2, 7, 8, 3]])
    out = session({"input_ids": ids, "attention_mask": np.ones_like(ids)})["logits"]
    ref = session({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
    np.testing.assert_array_equal(out, ref["logits"])
    with pytest.raises(FileNotFoundError):
        OrtModel(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="graph_optimization_level"):
        OrtModel(tmp_path / "b.onnx", graph_optimization_level="max")  # type: ignore[arg-type]


def test_machine_info_and_sizes(tmp_path) -> None:
    info = machine_info(threads=2)
    assert info["threads"] == 2 and info["physical_cores"] == physical_cores() >= 1
    assert {"cpu", "torch", "onnxruntime", "cpu_flags"} <= set(info)
    assert set(info["cpu_flags"]) >= {"avx512f", "avx512_vnni"}
    (tmp_path / "model.safetensors").write_bytes(b"x" * 1_500_000)
    (tmp_path / "vocab.txt").write_bytes(b"x" * 500_000)
    assert file_size_mb(tmp_path / "vocab.txt") == 0.5
    assert file_size_mb(tmp_path) == 1.5
    assert file_size_mb(tmp_path, weights_only=False) == 2.0
    with pytest.raises(FileNotFoundError):
        file_size_mb(tmp_path / "nope")
