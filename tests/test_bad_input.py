"""Hostile input, interruptions and scale: every bad input is one ``error:`` line, exit status 2, nothing lost.

The table (``bad_input_cases.CASES``, also run by ``benchmarks/reliability.py``) runs the CLI in-process on hostile
recipes, model folders, ONNX files, data, budgets and paths; each case checks the exit status, that stdout/stderr
(at every level, native code included) hold exactly one stderr line starting with ``error:``, no traceback, and
that no file that existed before changed. The tests below it pin the behaviour behind some of the rows: overrides
after options, the remote-code guard, resumable records, partial checkpoints and temporaries of killed writers.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bad_input_cases import CASES, build_assets, run_case, runnable
from conftest import make_tiny_model
from slimformer.cli import build_parser, main

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_assets(tmp_path_factory.mktemp("bad-input-assets") / "assets")


def test_table_is_large_and_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 60
    groups = {c.group for c in CASES}
    assert {"recipe", "override", "model", "onnx", "data", "budget", "path"} <= groups


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, assets: Path, tmp_path: Path, capsys) -> None:
    if not runnable(case):
        pytest.skip("file permissions do not bind root")
    out = run_case(case, tmp_path, assets)
    assert out.exception is None, out.exception
    assert out.code == 2, (out.code, out.stderr)
    assert out.one_line, out.stderr
    assert not out.traceback, out.stderr + out.stdout
    assert out.names(case), (case.needles, out.error_lines[0])
    assert not out.changed, f"files changed: {out.changed}"
    assert not out.debris, f"temporaries left: {out.debris}"
    leaked = capsys.readouterr()
    assert leaked.err == "" and leaked.out == "", leaked  # the case's own capture saw everything


# -- 1: overrides after options -----------------------------------------------------------------------------------


def test_overrides_parse_before_between_and_after_options() -> None:
    from slimformer.cli import _parse

    args = _parse(build_parser(), ["compress", "r.yaml", "a=1", "--run-dir", "d", "seed=3", "--restart", "b.c=2"])
    assert args.overrides == ["a=1", "seed=3", "b.c=2"] and args.run_dir == "d" and args.restart
    args = _parse(build_parser(), ["compress", "--run-dir", "d", "r.yaml", "seed=3"])
    assert args.recipe == "r.yaml" and args.overrides == ["seed=3"]


def test_usage_errors_are_one_line(capsys) -> None:
    assert main(["compress", "r.yaml", "--run-dir", "d", "seed=3", "--bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--bogus" in err[0]
    assert main(["evaluate", "m", "--batch-size", "many"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--batch-size" in err[0] and "'many'" in err[0]
    assert main(["--version"]) == 0


# -- 2: no remote code --------------------------------------------------------------------------------------------


def test_every_from_pretrained_call_refuses_remote_code() -> None:
    """Every transformers ``from_pretrained`` call in the package says ``trust_remote_code=False`` itself."""
    missing = []
    for file in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "from_pretrained":
                owner = ast.unparse(node.func.value)
                if owner.startswith("nn."):  # torch.nn.Embedding.from_pretrained(tensor): not a checkpoint
                    continue
                kw = {k.arg: k.value for k in node.keywords}
                value = kw.get("trust_remote_code")
                if not (isinstance(value, ast.Constant) and value.value is False):
                    missing.append(f"{file.relative_to(SRC)}:{node.lineno} {owner}.from_pretrained")
    assert not missing, missing


def test_auto_map_is_refused_before_transformers_reads_the_folder(assets: Path, tmp_path: Path, monkeypatch) -> None:
    import transformers

    from slimformer.errors import ModelLoadError
    from slimformer.models.load import check_no_remote_code, load_tokenizer, read_config

    def never(*a, **k):
        raise AssertionError("transformers was asked to read a folder with auto_map")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", never)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", never)
    folder = tmp_path / "m"
    folder.mkdir()
    config = json.loads((assets / "model" / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoConfig": "evil.Config"}}))
    for call in (check_no_remote_code, lambda p: read_config(p, True), lambda p: load_tokenizer(p, True)):
        with pytest.raises(ModelLoadError, match="auto_map"):
            call(str(folder))


# -- 6: head / task ------------------------------------------------------------------------------------------------


def test_head_for_task() -> None:
    from slimformer.errors import ConfigError
    from slimformer.evaluate import check_head_for_task
    from slimformer.tasks import get_task

    check_head_for_task("classification", 2, get_task("sst2"), "m")
    check_head_for_task("classification", 1, get_task("stsb"), "m")
    check_head_for_task("classification", 3, get_task("mnli"), "m")
    check_head_for_task("qa", None, get_task("squad"), "m")
    for head, n, task, needle in (
        ("classification", 2, "stsb", "1 output"),
        ("classification", 1, "sst2", "2 labels"),
        ("classification", 2, "mnli", "3 labels"),
        ("qa", None, "sst2", "classification head"),
        ("none", None, "sst2", "none head"),
        ("classification", 2, "squad", "qa head"),
    ):
        with pytest.raises(ConfigError, match=needle):
            check_head_for_task(head, n, get_task(task), "m")


def test_teacher_head_must_fit_the_task(assets: Path, tmp_path: Path) -> None:
    """A teacher whose slimformer.json names no task is still checked against the task (head kind, labels)."""
    import shutil

    from slimformer.errors import ConfigError
    from slimformer.stages._kd import load_teacher

    teacher = tmp_path / "teacher"
    shutil.copytree(assets / "model", teacher)
    meta = json.loads((teacher / "slimformer.json").read_text())
    (teacher / "slimformer.json").write_text(json.dumps({**meta, "task": None}))
    assert load_teacher(teacher, "sst2").meta.task is None
    with pytest.raises(ConfigError, match="stsb"):
        load_teacher(teacher, "stsb")


# -- 7: records change only when a stage has finished ----------------------------------------------------------------


def test_refused_stage_keeps_records_and_a_finished_stage_writes_them(assets: Path, tmp_path: Path) -> None:
    from slimformer.errors import ConfigError
    from slimformer.recipe import parse_recipe, run_recipe
    from slimformer.stages import register_stage
    from slimformer.stages.evaluate import EvaluateConfig

    calls = []

    @register_stage("_test_refuses", EvaluateConfig)
    def _refuses(ctx, cfg):
        calls.append("refuses")
        raise ConfigError("impossible")

    @register_stage("_test_works", EvaluateConfig)
    def _works(ctx, cfg):
        calls.append("works")
        return {"ok": True}

    from slimformer.stages.base import STAGES

    try:
        raw = {"name": "r", "task": "sst2", "data": "x", "stages": [{"_test_works": {}}, {"_test_works": {}}]}
        run = tmp_path / "run"
        run_recipe(parse_recipe(raw), run_dir=run, log=lambda s: None)
        before = {p.name: p.read_bytes() for p in run.iterdir()}
        assert set(before) == {"recipe.resolved.yaml", "state.json"}
        raw2 = {**raw, "seed": 7, "stages": [{"_test_works": {}}, {"_test_refuses": {}}]}
        with pytest.raises(ConfigError, match="impossible"):
            run_recipe(parse_recipe(raw2), run_dir=run, log=lambda s: None)
        assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # the seed change is not recorded yet
        assert calls == ["works", "works", "refuses"]
        raw3 = {**raw, "seed": 7, "stages": [{"_test_works": {}}, {"_test_works": {"batch_size": 8}}]}
        run_recipe(parse_recipe(raw3), run_dir=run, log=lambda s: None)  # the second stage runs: records follow
        assert calls == ["works", "works", "refuses", "works"]
        resolved = yaml.safe_load((run / "recipe.resolved.yaml").read_text())
        assert resolved["seed"] == 7 and resolved["stages"][1]["_test_works"]["batch_size"] == 8
    finally:
        STAGES.pop("_test_refuses", None)
        STAGES.pop("_test_works", None)


# -- 8: finetune --out ------------------------------------------------------------------------------------------------


def test_finetune_out_rules(assets: Path, tmp_path: Path) -> None:
    from slimformer.errors import ConfigError
    from slimformer.stages.finetune import check_out_folder

    check_out_folder(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_out_folder(tmp_path / "empty")
    check_out_folder(assets / "model")  # written by finetune: replaced as a whole
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="--overwrite"):
        check_out_folder(tmp_path / "mine")
    check_out_folder(tmp_path / "mine", overwrite=True)
    with pytest.raises(ConfigError, match="is a file"):
        check_out_folder(tmp_path / "mine" / "notes.txt", overwrite=True)


def test_finetune_overwrite_replaces_a_foreign_folder(assets: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(assets / "SST-2", tmp_path / "SST-2")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("replace me")
    argv = ["finetune", "--model", str(assets / "model"), "--task", "sst2", "--data", str(tmp_path / "SST-2")]
    argv += ["--out", str(out), "--max-steps", "1", "--batch-size", "4", "--save-steps", "100", "--overwrite"]
    assert main(argv) == 0
    assert (out / "model.safetensors").is_file() and not (out / "notes.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_atomic_dir_never_hides_a_file(tmp_path: Path) -> None:
    from slimformer.errors import ConfigError
    from slimformer.io import atomic_dir

    target = tmp_path / "out"
    target.write_text("a file the user owns")
    with pytest.raises(ConfigError, match="is a file"):
        with atomic_dir(target) as tmp:
            (tmp / "x").write_text("new")
    assert target.read_text() == "a file the user owns"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# -- 10: partial checkpoints ----------------------------------------------------------------------------------------


def _checkpoint(folder: Path, *files: str) -> Path:
    folder.mkdir(parents=True)
    for f in files:
        (folder / f).write_text("{}")
    return folder


def test_resume_skips_and_deletes_partial_checkpoints(tmp_path: Path) -> None:
    from slimformer.train.checkpoints import CKPT_RECORD, last_checkpoint, prepare_checkpoints

    ckpt = tmp_path / "m.checkpoints"
    good = _checkpoint(ckpt / "checkpoint-2", "model.safetensors", "optimizer.pt", "trainer_state.json")
    no_state = _checkpoint(ckpt / "checkpoint-4", "model.safetensors", "optimizer.pt")  # killed before the state
    no_weights = _checkpoint(ckpt / "checkpoint-6", "trainer_state.json")
    empty = _checkpoint(ckpt / "checkpoint-10")
    assert last_checkpoint(ckpt) == good
    assert good.is_dir() and not no_state.exists() and not no_weights.exists() and not empty.exists()
    (ckpt / CKPT_RECORD).write_text(json.dumps({"a": 1}))
    _checkpoint(ckpt / "checkpoint-8", "model.safetensors")
    assert prepare_checkpoints(ckpt, {"a": 1}, resume=True) == good
    only_partial = tmp_path / "n.checkpoints"
    _checkpoint(only_partial / "checkpoint-1", "model.safetensors")
    assert last_checkpoint(only_partial) is None and not (only_partial / "checkpoint-1").exists()


def test_finetune_resume_after_a_kill_during_a_checkpoint_write(assets: Path, tmp_path: Path, monkeypatch) -> None:
    """An interrupted fine-tune left checkpoint-2; a kill then left checkpoint-3 half written: --resume uses 2."""
    import shutil

    from transformers import Trainer

    import slimformer.stages.finetune as ft

    shutil.copytree(assets / "SST-2", tmp_path / "SST-2")
    out = tmp_path / "m"
    argv = ["finetune", "--model", str(assets / "model"), "--task", "sst2", "--data", str(tmp_path / "SST-2")]
    argv += ["--out", str(out), "--max-steps", "2", "--batch-size", "4", "--save-steps", "1"]

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ft, "save_model", interrupted)
    assert main(argv) == 130
    monkeypatch.undo()
    ckpt = tmp_path / "m.checkpoints"
    assert (ckpt / "checkpoint-2" / "trainer_state.json").is_file()
    partial = ckpt / "checkpoint-3"
    partial.mkdir()
    (partial / "config.json").write_text("{}")  # the kill came before the weights and trainer_state.json
    seen = {}
    original = Trainer.train

    def spy(self, resume_from_checkpoint=None, **kw):
        seen["resume"] = resume_from_checkpoint
        return original(self, resume_from_checkpoint=resume_from_checkpoint, **kw)

    monkeypatch.setattr(Trainer, "train", spy)
    assert main([*argv, "--resume"]) == 0
    assert str(seen["resume"]).endswith("checkpoint-2") and (out / "model.safetensors").is_file()


# -- 11: temporaries of killed writers ------------------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_killed_writer_leaves_no_temp_forever(tmp_path: Path) -> None:
    """``kill -9`` inside ``atomic_dir``: the next write of that target removes the temporary folder."""
    from slimformer.io import atomic_dir

    target = tmp_path / "model"
    code = (
        "import os, signal, sys\n"
        "from slimformer.io import atomic_dir\n"
        f"with atomic_dir({str(target)!r}) as tmp:\n"
        "    (tmp / 'model.safetensors').write_bytes(b'half')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".model.slimtmp-"), left
    with atomic_dir(target) as tmp:
        (tmp / "model.safetensors").write_bytes(b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_stale_temporaries_of_onnx_and_text_writes_are_removed(tmp_path: Path) -> None:
    from slimformer.export._proto import atomic_output
    from slimformer.io import atomic_write_text

    dead, alive = _dead_pid(), os.getppid()
    stale_dir = tmp_path / f".model.onnx.slimtmp-{dead}-abc123"
    stale_dir.mkdir()
    (stale_dir / "model.onnx").write_bytes(b"half a graph")
    busy = tmp_path / f".model.onnx.slimtmp-{alive}-def456"  # a running process: left alone
    busy.mkdir()
    legacy = tmp_path / ".model.onnx.k2j4h5g6.tmp"  # pid-less name of an earlier release, an hour old
    legacy.mkdir()
    os.utime(legacy, (0, 0))
    other = tmp_path / ".other.onnx.slimtmp-1-x"  # another target's: not ours to clean
    other.mkdir()
    with atomic_output(tmp_path / "model.onnx") as tmp:
        tmp.write_bytes(b"graph")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([busy.name, other.name, "model.onnx"])
    (tmp_path / f".state.json.slimtmp-{dead}-q1w2e3").write_text("{")
    atomic_write_text(tmp_path / "state.json", "{}")
    assert not list(tmp_path.glob(".state.json.*"))


def test_folder_moved_aside_by_a_killed_writer_is_restored(tmp_path: Path) -> None:
    """Killed between the two renames of ``atomic_dir``: the previous folder is put back, not deleted."""
    from slimformer.io import clean_stale_temps

    dead = _dead_pid()
    moved = tmp_path / f".model.slimold-{dead}"
    moved.mkdir()
    (moved / "model.safetensors").write_bytes(b"previous")
    (tmp_path / f".model.slimtmp-{dead}-zz").mkdir()
    clean_stale_temps(tmp_path / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert (tmp_path / "model" / "model.safetensors").read_bytes() == b"previous"


# -- scale: the shape check reads headers only ----------------------------------------------------------------------


def test_shape_check_accepts_every_head_and_prefix(tmp_path: Path, tiny_tokenizer) -> None:
    """A bare encoder loads under a new head (no prefix in its keys), and a classifier as a bare encoder."""
    from slimformer.checkpoint import load_pretrained

    bare = tmp_path / "bare"
    make_tiny_model("none").hf.save_pretrained(bare)
    tiny_tokenizer.save_pretrained(bare)
    model, _ = load_pretrained(bare, "classification", num_labels=3, new_head=True)
    assert model.config.num_labels == 3
    clf = tmp_path / "clf"
    make_tiny_model("classification", num_labels=2).hf.save_pretrained(clf)
    tiny_tokenizer.save_pretrained(clf)
    load_pretrained(clf, "none")
    load_pretrained(clf, "qa", new_head=True)
