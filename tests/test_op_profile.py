"""benchmarks/op_profile.py: ONNX Runtime profile events summed per op type, and the side-by-side table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import op_profile  # noqa: E402


def _node(op: str, ts: float, dur: float, kind: str = "kernel_time") -> dict:
    return {"cat": "Node", "name": f"/n/{op}_{ts}_{kind}", "ts": ts, "dur": dur, "args": {"op_name": op}}


def _run(ts: float, dur: float) -> dict:
    return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}


def test_op_times_sums_kernel_events_per_op_and_skips_warmup():
    events = [
        _run(0, 100),
        _node("MatMul", 10, 5000),  # warm-up run: left out
        _run(200, 100),
        _node("MatMul", 210, 3000),
        _node("MatMul", 220, 1000),
        _node("Add", 230, 500),
        _node("Add", 231, 999, kind="fence_before"),  # not a kernel time
        {"cat": "Session", "name": "SequentialExecutor::Execute", "ts": 200, "dur": 90},
        _run(400, 100),
        _node("MatMul", 410, 2000),
        _node("Softmax", 420, 1500),
    ]
    got = op_profile.op_times(events, reps=2, skip_runs=1)
    # (3000 + 1000 + 2000) us over 2 runs = 3 ms; Add 0.25 ms; Softmax 0.75 ms; largest first
    assert got == pytest.approx({"MatMul": 3.0, "Softmax": 0.75, "Add": 0.25})
    assert list(got) == ["MatMul", "Softmax", "Add"]
    assert op_profile.op_times(events, reps=3)["MatMul"] == pytest.approx(11.0 / 3)  # nothing skipped


@pytest.mark.parametrize(("reps", "skip"), [(0, 0), (1, -1), (3, 1)])
def test_op_times_rejects_bad_counts(reps, skip):
    events = [_run(0, 10), _run(20, 10), _run(40, 10)]
    with pytest.raises(ValueError, match="reps|model_run"):
        op_profile.op_times(events, reps=reps, skip_runs=skip)


def test_profile_rows_shares_other_and_total():
    teacher = {"DynamicQuantizeMatMul": 60.0, "Add": 20.0, "Gelu": 15.0, "Softmax": 5.0}
    pick = {"DynamicQuantizeMatMul": 15.0, "Add": 10.0, "TopK": 4.0, "Softmax": 1.0}
    rows = op_profile.profile_rows(teacher, pick, top=2)
    assert [r["op"] for r in rows] == ["DynamicQuantizeMatMul", "Add", "other", "total"]
    first, add, other, total = rows
    assert first["teacher_share"] == 60.0 and first["pick_share"] == 50.0 and first["ratio"] == 4.0
    assert add["ratio"] == 2.0
    assert other["teacher_ms"] == 20.0 and other["pick_ms"] == 5.0  # Gelu + Softmax; TopK + Softmax
    assert total["teacher_ms"] == 100.0 and total["pick_ms"] == 30.0 and total["ratio"] == pytest.approx(3.33)
    assert sum(r["teacher_share"] for r in rows[:-1]) == pytest.approx(100.0)
    only_teacher = op_profile.profile_rows({"SkipLayerNormalization": 3.0}, {"Add": 1.0})
    assert only_teacher[0]["op"] == "SkipLayerNormalization" and only_teacher[0]["ratio"] is None


def test_op_times_reads_a_real_onnxruntime_profile(tmp_path):
    """The event names and categories op_times relies on are the ones onnxruntime writes."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 8], np.eye(8, dtype=np.float32).ravel().tolist())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], "g", [x], [y], [w]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "p")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep MatMul and Relu apart
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    for _ in range(3):
        s.run(None, {"x": np.ones((4, 8), np.float32)})
    with open(s.end_profiling()) as f:
        got = op_profile.op_times(json.load(f), reps=2, skip_runs=1)
    assert set(got) == {"MatMul", "Relu"} and all(v > 0 for v in got.values())
