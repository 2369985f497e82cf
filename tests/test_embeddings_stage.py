"""The `embeddings` stage in a recipe: AE embeddings -> fine-tune -> export -> int8, on tiny data; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import SST2_ROWS, write_sst2
from slimformer.cli import main
from slimformer.embeddings import RECORD_KEY

pytest.importorskip("onnxruntime")

MRPC = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n" + "\n".join(
    [
        "1\t1\t2\tthe movie was good\tthe film was good",
        "0\t3\t4\ta terrible film\tparis is a city in france",
        "1\t5\t6\tvery boring\tvery boring",
        "0\t7\t8\tgreat fun\twhat is the capital of france ?",
    ]
)


def _data(tmp_path: Path) -> Path:
    write_sst2(tmp_path / "data", SST2_ROWS)
    (tmp_path / "data" / "MRPC").mkdir()
    (tmp_path / "data" / "MRPC" / "dev.tsv").write_text(MRPC + "\n", encoding="utf-8")
    return tmp_path / "data"


def _write(tmp_path: Path, stages: list, model: Path) -> Path:
    recipe = {"name": "emb", "task": "sst2", "model": str(model), "data": "SST-2", "stages": stages}
    p = tmp_path / "emb.yaml"
    p.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return p


def test_ae_embeddings_then_finetune_then_int8(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    data = _data(tmp_path)
    emb = {"method": "ae", "rank": 8, "sentences": "SST-2", "pairs": "MRPC", "autoencoder": {"epochs": 2}}
    stages = [
        {"embeddings": emb},
        {"finetune": {"model": "previous", "max_steps": 2, "batch_size": 8, "save_steps": 1, "logging_steps": 1}},
        {"evaluate": {}},
        {"export": {}},
        {"quantize": {"mode": "dynamic"}},
    ]
    recipe, run = _write(tmp_path, stages, tiny_model_dir), tmp_path / "run"
    code = main(["compress", str(recipe), "--run-dir", str(run), "--data-root", str(data)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((run / "embeddings" / "embeddings_report.json").read_text())
    assert report["method"] == "ae" and report["rank"] == 8 and report["compression_ratio"] > 1
    assert 0 < report["fidelity"] <= 1 and 0 <= report["pair_auc"] <= 1 and report["pairs"] == 4
    assert 0 < report["reconstruction"]["mean_cosine_freq"] <= 1
    tuned = json.loads((run / "finetune" / "config.json").read_text())
    assert tuned[RECORD_KEY]["rank"] == 8 and tuned[RECORD_KEY]["trainable_table"] is False
    applied = [a["stage"] for a in json.loads((run / "finetune" / "slimformer.json").read_text())["applied"]]
    assert applied == ["embeddings", "finetune"]
    state = json.loads((run / "state.json").read_text())
    assert state["stages"][3]["outputs"]["max_abs_diff"] <= 1e-4  # export parity with the factorised table
    assert (run / "export" / "model.int8.onnx").is_file()


@pytest.mark.parametrize(
    "emb, message",
    [
        ({"method": "svd", "rank": 32}, "rank 32 is invalid for hidden size 32"),
        ({"method": "svd", "rank": 0}, "rank: Input should be greater than or equal to 1"),
        ({"method": "svd", "ratio": 1e6}, "compression ratio 1000000.0 cannot be met"),
        ({"method": "svd"}, "give exactly one of ratio or rank"),
        ({"method": "pca", "rank": 4}, "method"),
        ({"method": "ae", "rank": 4, "autoencoder": {"epoch": 3}}, "autoencoder.epoch: unknown key"),
    ],
)
def test_bad_embedding_options_are_one_line_errors(
    tmp_path: Path, tiny_model_dir: Path, capsys, emb: dict, message: str
) -> None:
    recipe = _write(tmp_path, [{"embeddings": {**emb, "sentences": None, "pairs": None}}], tiny_model_dir)
    assert main(["compress", str(recipe), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]  # (earlier lines: the weight-loading progress bar)
    assert last.startswith("error: ") and message in last and "Traceback" not in err
