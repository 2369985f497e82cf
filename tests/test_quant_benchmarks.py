"""The low-bit QAT benchmark scripts end to end on a tiny fine-tuned model: the SDQ matrix, then its ONNX Runtime rows.

Checks the plumbing the real runs rely on (row fields, budget bookkeeping across tasks and seeds, the deploy rows
and their timings), with 1-step trainings; the figures themselves come from the real runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import SST2_ROWS, write_sst2
from slimformer.io import read_json

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.fixture
def teacher(tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> Path:
    from slimformer.stages.finetune import FinetuneConfig, finetune

    pytest.importorskip("onnxruntime")
    write_sst2(tmp_path / "data" / "glue_data", SST2_ROWS * 2, SST2_ROWS * 2)  # 32 dev rows: a bs-32 timing batch
    monkeypatch.setenv("SLIMFORMER_DATA", str(tmp_path / "data"))
    cfg = FinetuneConfig(model=str(tiny_model_dir), task="sst2", data="glue_data/SST-2", max_steps=1, max_seq_length=16)
    return finetune(cfg, tmp_path / "teacher", data_root=str(tmp_path / "data")).model_dir


def test_sdq_matrix_then_onnx_runtime_rows(tmp_path: Path, teacher: Path):
    import quant_deploy
    import quant_results

    out = tmp_path / "sdq.json"
    common = ["--task", "sst2", "--teacher", str(teacher), "--run-dir", str(tmp_path / "runs"), "--out", str(out)]
    budget = ["--max-steps", "1", "--max-train-examples", "8", "--batch-size", "4", "--seq-len", "16"]
    assert quant_results.main(["sdq", *common, *budget, "--skip", "(no"]) == 0
    res = read_json(out)
    names = [r["name"] for r in res["rows"]]
    assert names[0] == "teacher fp32" and len(names) == 1 + 6  # 8 matrix rows, the two "(no noise)" skipped
    assert not any("(no noise)" in n for n in names)
    assert res["max_seq_length"] == {"sst2": 16} and "max_seq_length" not in res["budget"]
    trained = [r for r in res["rows"] if r["method"] != "teacher"]
    assert {r["bits"]["weight"] for r in trained} == {8, 4}
    assert all(r["seed"] == 42 and (tmp_path / "runs").resolve() in Path(r["model_dir"]).resolve().parents
               for r in trained)  # fmt: skip
    # another seed with the same budget adds rows; the teacher row stays single
    assert quant_results.main(["sdq", *common, *budget, "--skip", "(no", "--skip", "W4", "--seed", "43"]) == 0
    res = read_json(out)
    assert sum(r["method"] == "teacher" for r in res["rows"]) == 1
    assert sorted({r["seed"] for r in res["rows"] if r["method"] != "teacher"}) == [42, 43]

    deploy = ["sdq", "--task", "sst2", "--run-dir", str(tmp_path / "runs"), "--out", str(out)]
    fast = ["--iters", "2", "--min-time-s", "0", "--calibration-examples", "8", "--threads", "1"]
    assert quant_deploy.main([*deploy, *fast]) == 0
    res = read_json(out)
    ort = [r for r in res["rows"] if r["runtime"] == "onnxruntime-int8"]
    assert [r["method"] for r in ort[:2]] == ["ort-ptq-dynamic", "ort-ptq-static"]
    assert len(ort) == 2 + 6  # the two teacher PTQ graphs + every seed-42 matrix row exported as QDQ
    for r in ort:
        assert 0.0 <= r["metric_value"] <= 1.0 and r["latency_ms_bs1"] > 0 and r["throughput_bs32"] > 0
        assert r["task"] == "sst2" and r["seed"] == 42 and Path(r["onnx"]).is_file()
    qdq = [r for r in ort if r["method"] != "ort-ptq-dynamic" and r["method"] != "ort-ptq-static"]
    assert all(r["name"].endswith("-> ONNX Runtime") and "pytorch_metric" in r for r in qdq)
    teacher_row = next(r for r in res["rows"] if r["method"] == "teacher")
    assert teacher_row["latency_ms_bs1"] > 0
    # a second deploy run replaces its rows instead of adding more
    assert quant_deploy.main([*deploy, *fast]) == 0
    assert len([r for r in read_json(out)["rows"] if r["runtime"] == "onnxruntime-int8"]) == len(ort)
    # rerunning the matrix of another seed keeps the seed-42 ONNX Runtime rows and their command
    assert quant_results.main(["sdq", *common, *budget, "--skip", "(no", "--skip", "W4", "--seed", "43"]) == 0
    res = read_json(out)
    assert len([r for r in res["rows"] if r["runtime"] == "onnxruntime-int8"]) == len(ort)
    assert list(res["deploy_commands"]) == ["sst2 seed 42"]
