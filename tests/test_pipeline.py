"""A whole recipe (finetune -> evaluate -> export -> quantize -> benchmark) on a tiny model and tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import SST2_ROWS, write_sst2
from slimformer.cli import main

pytest.importorskip("onnxruntime")


def _recipe(tmp_path: Path, model: Path, data: Path, quantize: dict | None = None) -> Path:
    stages = [
        {"finetune": {"max_steps": 2, "batch_size": 8, "save_steps": 1, "logging_steps": 1}},
        {"evaluate": {}},
        {"export": {}},
        {"quantize": quantize or {"mode": "dynamic"}},
        {"benchmark": {"batch_sizes": [1, 4], "seq_len": 16, "warmup": 1, "iters": 2}},
    ]
    recipe = {"name": "tiny", "task": "sst2", "model": str(model), "data": str(data), "stages": stages}
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return p


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_recipe_end_to_end(tmp_path: Path, tiny_model_dir: Path, capsys, mode: str) -> None:
    data = write_sst2(tmp_path, SST2_ROWS)
    run = tmp_path / "run"
    recipe = _recipe(tmp_path, tiny_model_dir, data, {"mode": mode, "calibration_examples": 8})
    assert main(["compress", str(recipe), "--run-dir", str(run)]) == 0, capsys.readouterr().err
    state = json.loads((run / "state.json").read_text())
    assert [s["name"] for s in state["stages"]] == ["finetune", "evaluate", "export", "quantize", "benchmark"]
    assert (run / "recipe.resolved.yaml").is_file()
    export_dir = run / "export"
    for name in ("model.onnx", "model.int8.onnx", "tokenizer.json", "slimformer.json"):
        assert (export_dir / name).is_file(), name
    applied = [a["stage"] for a in json.loads((export_dir / "slimformer.json").read_text())["applied"]]
    assert applied == ["finetune", "export", "quantize"]
    exported = state["stages"][2]["outputs"]
    assert exported["max_abs_diff"] <= 1e-4
    report = json.loads((run / "report.json").read_text())
    runtimes = [r["runtime"] for r in report["rows"]]
    assert runtimes == ["pytorch-fp32", "onnxruntime-fp32", "onnxruntime-int8"]
    for row in report["rows"]:
        assert 0.0 <= row["metric_value"] <= 1.0 and row["latency_ms_bs1"] > 0 and row["throughput_bs32"] > 0
        assert row["seq_len"] == 16 and row["size_mb"] > 0
    fp32, ort32, int8 = report["rows"]
    assert fp32["metric_value"] == pytest.approx(ort32["metric_value"])  # same fp32 numerics, same predictions
    assert int8["size_mb"] < ort32["size_mb"]
    assert mode in int8["name"]
    md = (run / "report.md").read_text()
    assert all(r["name"] in md for r in report["rows"])
    # the int8 model evaluates through the CLI on the deployed artefact
    assert main(["evaluate", str(export_dir / "model.int8.onnx")]) == 0
    assert "accuracy=" in capsys.readouterr().out
    # a second run resumes: nothing reruns, report unchanged
    before = (run / "report.json").read_text()
    assert main(["compress", str(recipe), "--run-dir", str(run)]) == 0
    assert "skipped (resume)" in capsys.readouterr().out
    assert (run / "report.json").read_text() == before


def test_stage_without_its_input_is_a_config_error(tmp_path: Path, capsys) -> None:
    recipe = {"name": "x", "task": "sst2", "data": "d", "stages": [{"export": {}}]}
    p = tmp_path / "x.yaml"
    p.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert main(["compress", str(p), "--run-dir", str(tmp_path / "run")]) == 2
    assert "stages[0].export: needs model_dir from an earlier" in capsys.readouterr().err


def test_export_and_benchmark_commands(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    data = write_sst2(tmp_path, SST2_ROWS)
    model = tmp_path / "m"
    assert (
        main(
            [
                "finetune",
                "--model",
                str(tiny_model_dir),
                "--task",
                "sst2",
                "--data",
                str(data),
                "--out",
                str(model),
                "--max-steps",
                "1",
                "--batch-size",
                "4",
            ]
        )
        == 0
    )
    assert main(["export", str(model), "--int8", "dynamic"]) == 0
    assert (model / "onnx" / "model.onnx").is_file() and (model / "onnx" / "model.int8.onnx").is_file()
    capsys.readouterr()
    assert (
        main(["benchmark", str(model), "--batch-sizes", "1", "2", "--seq-len", "12", "--iters", "2", "--warmup", "0"])
        == 0
    )
    assert "onnxruntime-int8" in capsys.readouterr().out
    assert json.loads((model / "report.json").read_text())["rows"][0]["seq_len"] == 12
