"""CLI: every bad input is a one-line ``error:`` on stderr with exit status 2 and no traceback; nothing is lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import SST2_ROWS, write_sst2
from slimformer.cli import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def _assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


def _finetune_args(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "finetune",
        "--model",
        str(model),
        "--task",
        "sst2",
        "--data",
        str(data),
        "--out",
        str(out),
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--logging-steps",
        "1",
        "--save-steps",
        "1",
        *extra,
    ]


def test_finetune_evaluate_end_to_end(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    data = write_sst2(tmp_path, SST2_ROWS)
    out = tmp_path / "run" / "model"
    code, err = _run(capsys, *_finetune_args(tiny_model_dir, data, out))
    assert code == 0, err
    for name in ("config.json", "model.safetensors", "tokenizer.json", "slimformer.json", "eval_results.json"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "slimformer.json").read_text())
    assert meta["task"] == "sst2" and meta["head"] == "classification" and meta["labels"] == ["0", "1"]
    assert meta["applied"][0]["stage"] == "finetune" and meta["applied"][0]["max_steps"] == 2
    assert not (tmp_path / "run" / "model.checkpoints").exists()  # checkpoints cleaned after a good save
    code = main(["evaluate", str(out)])  # task and data come from slimformer.json
    printed = capsys.readouterr().out
    assert code == 0 and "accuracy=" in printed


@pytest.mark.parametrize(
    "train_lines, needles",
    [
        (["the movie was good\t1\textra"], ["train.tsv:2", "column"]),
        (["the movie was good\t7"], ["train.tsv:2", "label"]),
        (["the movie was good\t1", "", "bad\t0"], ["train.tsv:3"]),
    ],
    ids=["column-count", "label-outside-set", "empty-line"],
)
def test_bad_data_files(tmp_path: Path, tiny_model_dir: Path, capsys, train_lines, needles) -> None:
    data = write_sst2(tmp_path, train_lines)
    code, err = _run(capsys, *_finetune_args(tiny_model_dir, data, tmp_path / "out"))
    _assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "out").exists()


def test_non_utf8_and_missing_file(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    data = write_sst2(tmp_path, SST2_ROWS)
    (data / "train.tsv").write_bytes(b"sentence\tlabel\nfine\t1\nbad \xff\xfe bytes\t0\n")
    code, err = _run(capsys, *_finetune_args(tiny_model_dir, data, tmp_path / "out"))
    _assert_one_line_error(code, err, "train.tsv:3")
    code, err = _run(capsys, *_finetune_args(tiny_model_dir, tmp_path / "nowhere", tmp_path / "out"))
    _assert_one_line_error(code, err, "nowhere")


def test_failed_finetune_keeps_previous_output(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier result", encoding="utf-8")
    data = write_sst2(tmp_path, ["broken line without tab"])
    code, err = _run(capsys, *_finetune_args(tiny_model_dir, data, out))
    assert code == 2
    assert (out / "keep.txt").read_text(encoding="utf-8") == "earlier result"


def test_unknown_task_and_model(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    data = write_sst2(tmp_path, SST2_ROWS)
    args = _finetune_args(tiny_model_dir, data, tmp_path / "out")
    args[args.index("sst2")] = "sst3"
    _assert_one_line_error(*_run(capsys, *args), "sst3")
    args = _finetune_args(Path("no-such-alias"), data, tmp_path / "out")
    _assert_one_line_error(*_run(capsys, *args), "no-such-alias", "alias")


def test_bad_checkpoints(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    empty = tmp_path / "noweights"
    empty.mkdir()
    (empty / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    _assert_one_line_error(
        *_run(capsys, "evaluate", str(empty), "--task", "sst2", "--data", "x"), "noweights", "weights"
    )
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    _assert_one_line_error(
        *_run(capsys, "evaluate", str(pickled), "--task", "sst2", "--data", "x"), "pickle", "safetensors"
    )
    _assert_one_line_error(*_run(capsys, "evaluate", str(tmp_path / "missing")), "missing")


def test_bad_option_value(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    data = write_sst2(tmp_path, SST2_ROWS)
    args = _finetune_args(tiny_model_dir, data, tmp_path / "out", "--learning-rate", "-1")
    _assert_one_line_error(*_run(capsys, *args), "--learning-rate")


def test_bad_recipes(tmp_path: Path, capsys) -> None:
    base = {"name": "r", "task": "sst2", "data": "x", "stages": [{"finetune": {}}]}
    for stages, needle in (
        ([{"distil": {}}], "unknown stage 'distil'"),
        ([{"finetune": {"epoch": 1}}], "epoch: unknown key"),
    ):
        p = tmp_path / "r.yaml"
        p.write_text(yaml.safe_dump({**base, "stages": stages}), encoding="utf-8")
        _assert_one_line_error(*_run(capsys, "compress", str(p), "--run-dir", str(tmp_path / "run")), "r.yaml", needle)
    assert not (tmp_path / "run").exists()  # validation happens before anything is written


def _interrupted_finetune(model: Path, data: Path, out: Path, monkeypatch, *extra: str) -> None:
    """Run a fine-tune that is interrupted after training (before the model is saved): checkpoints remain."""
    import slimformer.stages.finetune as ft

    def crash(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ft, "save_model", crash)
    assert main(_finetune_args(model, data, out, *extra)) == 130
    assert (out.parent / f"{out.name}.checkpoints" / "checkpoint-2").is_dir() and not out.exists()
    monkeypatch.undo()


def _spy_resume(monkeypatch) -> dict[str, object]:
    """Record the ``resume_from_checkpoint`` the Trainer is called with (training still runs)."""
    from transformers import Trainer

    seen: dict[str, object] = {}
    original = Trainer.train

    def spy(self, resume_from_checkpoint=None, **kw):
        seen["resume"] = resume_from_checkpoint
        return original(self, resume_from_checkpoint=resume_from_checkpoint, **kw)

    monkeypatch.setattr(Trainer, "train", spy)
    return seen


def test_resume_uses_last_checkpoint(tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> None:
    """An interrupted fine-tune keeps its Trainer checkpoints; --resume continues from the last one."""
    data = write_sst2(tmp_path, SST2_ROWS)
    out = tmp_path / "m"
    _interrupted_finetune(tiny_model_dir, data, out, monkeypatch)
    seen = _spy_resume(monkeypatch)
    assert main(_finetune_args(tiny_model_dir, data, out, "--resume")) == 0
    assert str(seen["resume"]).endswith("checkpoint-2")
    assert (out / "model.safetensors").is_file()


def test_resume_ignores_checkpoints_of_another_config(tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> None:
    """Checkpoints of an interrupted run with other hyper-parameters are not resumed (they are removed)."""
    data = write_sst2(tmp_path, SST2_ROWS)
    out = tmp_path / "m"
    _interrupted_finetune(tiny_model_dir, data, out, monkeypatch, "--resume")
    seen = _spy_resume(monkeypatch)
    assert main(_finetune_args(tiny_model_dir, data, out, "--resume", "--learning-rate", "1e-3")) == 0
    assert seen["resume"] is None
    assert (out / "model.safetensors").is_file()
