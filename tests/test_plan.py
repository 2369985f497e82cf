"""The whole recipe is checked before its first stage runs (``validate_plan``), and ``compress --dry-run`` shows it.

A stage that cannot work (a softmax KD loss on a regression head, a quantize with no fp32 graph to quantize, a
benchmark of a search that is not in the recipe, an unlabelled split, a missing data file) fails before the first
stage starts, naming the stage and the key; nothing is written to the run folder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import SST2_ROWS, make_tiny_model, write_sst2
from slimformer import api
from slimformer.cli import main
from slimformer.errors import ConfigError, DataError
from slimformer.recipe import parse_recipe, run_recipe, validate_plan
from slimformer.stages import STAGES

TRAIN = {"max_steps": 1, "batch_size": 8, "max_seq_length": 16}


@pytest.fixture
def stsb(tmp_path: Path) -> Path:
    d = tmp_path / "STS-B"
    d.mkdir()
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    rows = "".join(f"{i}\tg\tf\ty\t{i}\ts\ts\ta man plays\ta man plays music\t{i % 5}.0\n" for i in range(8))
    for name in ("train.tsv", "dev.tsv"):
        (d / name).write_text(head + rows, encoding="utf-8")
    return d


@pytest.fixture
def sst2(tmp_path: Path) -> Path:
    return write_sst2(tmp_path, SST2_ROWS)


def _recipe(task: str, data: Path, stages: list[dict[str, Any]], model: str = "minilm-l6") -> Any:
    return parse_recipe({"name": "plan", "task": task, "model": model, "data": str(data), "stages": stages})


@pytest.fixture
def never_run(monkeypatch) -> list[str]:
    """Every stage handler replaced by one that records its call: a plan error must come before any of them."""
    calls: list[str] = []
    for name, spec in list(STAGES.items()):
        fake = dataclasses.replace(spec, handler=lambda ctx, cfg, n=name: calls.append(n) or {})
        monkeypatch.setitem(STAGES, name, fake)
    return calls


def test_a_softmax_kd_loss_on_a_regression_head_fails_before_the_first_stage(
    stsb: Path, tmp_path: Path, never_run: list[str]
) -> None:
    recipe = _recipe(
        "stsb",
        stsb,
        [
            {"finetune": TRAIN},
            {"evaluate": {}},
            {"distill": {**TRAIN, "student_layers": [0], "kd_losses": {"logits_kd": 1}}},
        ],
    )
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"stages\[2\]\.distill: kd_losses\.logits_kd: a softmax over 1 output"):
        run_recipe(recipe, run_dir=run_dir, log=lambda _: None)
    assert never_run == []  # the fine-tune (stage 0) never started
    assert not run_dir.exists()  # nothing written, not even the run folder


def test_the_default_kd_losses_adapt_to_a_regression_head(stsb: Path, sst2: Path) -> None:
    reg = _recipe("stsb", stsb, [{"finetune": TRAIN}, {"distill": {**TRAIN, "student_layers": [0]}}])
    cls = _recipe("sst2", sst2, [{"finetune": TRAIN}, {"distill": {**TRAIN, "student_layers": [0]}}])
    reg_losses, cls_losses = reg.stages[1][1].kd_losses, cls.stages[1][1].kd_losses
    assert "logits_kd" in cls_losses and "logits_mse" not in cls_losses
    assert "logits_mse" in reg_losses and "logits_kd" not in reg_losses
    assert set(reg_losses) - {"logits_mse"} == set(cls_losses) - {"logits_kd"}  # the other terms are kept
    validate_plan(reg)  # and it passes the plan check


def test_quantize_after_a_quantized_model_names_the_stage_and_what_it_needs(sst2: Path, never_run) -> None:
    recipe = _recipe(
        "sst2",
        sst2,
        [
            {"finetune": TRAIN},
            {"qat": {**TRAIN, "weight_quantizer": "uniform", "weight_bits": 8}},
            {"export": {}},
            {"quantize": {}},
        ],
    )
    with pytest.raises(ConfigError, match=r"stages\[3\]\.quantize: needs onnx_fp32 .*'export'.*'qat' is quantized"):
        validate_plan(recipe)
    bad_ptq = _recipe(
        "sst2",
        sst2,
        [
            {"finetune": TRAIN},
            {"qat": {**TRAIN, "weight_bits": 8, "weight_quantizer": "uniform"}},
            {"export": {"int8": "dynamic"}},
        ],
    )
    with pytest.raises(ConfigError, match=r"stages\[2\]\.export: int8: dynamic .* already quantized"):
        validate_plan(bad_ptq)


@pytest.mark.parametrize(
    ("stages", "pattern"),
    [
        (
            [{"finetune": TRAIN}, {"length_benchmark": {}}],
            r"stages\[1\]\.length_benchmark: needs front_json .*'search'",
        ),
        ([{"quantize": {}}], r"stages\[0\]\.quantize: needs onnx_fp32 from an earlier 'export' stage"),
        ([{"finetune": TRAIN}, {"evaluate": {"split": "test"}}], r"stages\[1\]\.evaluate: split: 'test' .* no labels"),
        ([{"finetune": TRAIN}, {"evaluate": {"split": "nope"}}], r"stages\[1\]\.evaluate: .*no split 'nope'"),
        ([{"distill": {**TRAIN, "student_layers": [0]}}], r"stages\[0\]\.distill: teacher: no earlier stage"),
        ([{"finetune": {**TRAIN, "model": "previous"}}], r"stages\[0\]\.finetune: model: previous needs"),
        (
            [{"finetune": TRAIN}, {"length": {**TRAIN, "hold_out": 5}}, {"search": {"search_examples": 10}}],
            r"stages\[2\]\.search: search_examples=10 but the length stage holds out only 5 training examples",
        ),
    ],
)
def test_stages_that_cannot_work_fail_before_anything_runs(sst2: Path, stages, pattern, never_run) -> None:
    with pytest.raises(ConfigError, match=pattern):
        run_recipe(_recipe("sst2", sst2, stages), run_dir=sst2.parent / "run", log=lambda _: None)
    assert never_run == []


def test_a_missing_training_file_is_found_before_the_first_stage(tmp_path: Path, never_run) -> None:
    data = write_sst2(tmp_path, SST2_ROWS)
    (data / "train.tsv").unlink()
    recipe = _recipe("sst2", data, [{"finetune": TRAIN}, {"evaluate": {}}])
    with pytest.raises(DataError, match=r"stages\[0\]\.finetune: sst2 train file not found"):
        run_recipe(recipe, run_dir=tmp_path / "run", log=lambda _: None)
    assert never_run == []


def test_a_header_without_the_label_column_is_refused(tmp_path: Path, never_run) -> None:
    data = write_sst2(tmp_path, SST2_ROWS)
    (data / "train.tsv").write_text("sentence\tgold\nfine\t1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train.tsv: header has no column 'label'"):
        run_recipe(_recipe("sst2", data, [{"finetune": TRAIN}]), run_dir=tmp_path / "run", log=lambda _: None)
    assert never_run == []


def test_a_teacher_of_another_head_is_refused_by_the_plan(
    tmp_path: Path, sst2: Path, tiny_tokenizer, never_run
) -> None:
    folder = tmp_path / "qa-teacher"
    make_tiny_model("qa").hf.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    recipe = _recipe("sst2", sst2, [{"evaluate": {}}], model=str(folder))  # a teacher stage is put first
    assert recipe.stages[0][0] == "teacher"
    with pytest.raises(ConfigError, match=r"stages\[0\]\.teacher: "):
        run_recipe(recipe, run_dir=tmp_path / "run", log=lambda _: None)
    assert never_run == []


def test_resumed_stages_are_not_checked_again(sst2: Path, tmp_path: Path, never_run) -> None:
    """A stage done earlier keeps its outputs for the plan; its data may be gone since."""
    recipe = _recipe("sst2", sst2, [{"finetune": TRAIN}, {"export": {}}, {"quantize": {}}])
    run_recipe(recipe, run_dir=tmp_path / "run", log=lambda _: None)
    assert never_run == ["finetune", "export", "quantize"]
    (sst2 / "train.tsv").unlink()
    run_recipe(recipe, run_dir=tmp_path / "run", log=lambda _: None)  # all resumed: no check, nothing runs
    assert never_run == ["finetune", "export", "quantize"]


def test_dry_run_prints_the_checked_plan_and_runs_nothing(sst2: Path, tmp_path: Path, capsys, never_run) -> None:
    raw = {
        "name": "plan",
        "task": "sst2",
        "model": "minilm-l6",
        "data": str(sst2),
        "stages": [{"finetune": TRAIN}, {"export": {}}],
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    run_dir = tmp_path / "run"
    assert main(["compress", str(path), "--run-dir", str(run_dir), "--dry-run"]) == 0
    out = capsys.readouterr().out
    plan = yaml.safe_load(out)["plan"]
    assert [row["stage"] for row in plan] == ["0-finetune", "1-export"]
    assert all(row["action"] == "runs" for row in plan)
    assert plan[0]["config"]["max_steps"] == 1 and plan[0]["config"]["learning_rate"] > 0  # resolved defaults
    assert never_run == [] and not run_dir.exists()
    # after a run, the plan says what a rerun would skip
    api.compress(path, run_dir=run_dir)
    rows = api.plan(path, run_dir=run_dir)
    assert [r["action"] for r in rows] == ["done earlier: skipped (resume)"] * 2
    rows = api.plan(path, run_dir=run_dir, rerun_from="export")
    assert [r["action"] for r in rows] == ["done earlier: skipped (resume)", "runs"]


def test_dry_run_of_a_bad_recipe_is_a_one_line_error(stsb: Path, tmp_path: Path, capsys) -> None:
    raw = {
        "name": "plan",
        "task": "stsb",
        "model": "minilm-l6",
        "data": str(stsb),
        "stages": [
            {"finetune": TRAIN},
            {"distill": {**TRAIN, "student_layers": [0], "kd_losses": {"soft_cross_entropy": 1}}},
        ],
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert main(["compress", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and err[0].startswith("error: ") and "stages[1].distill: kd_losses.soft_cross_entropy" in err[0]
    )


def test_a_global_batch_that_processes_cannot_split_is_refused(sst2: Path, monkeypatch, never_run) -> None:
    monkeypatch.setenv("WORLD_SIZE", "3")  # the plan is checked before any process group is joined
    recipe = _recipe("sst2", sst2, [{"finetune": {**TRAIN, "batch_size": 8}}])
    with pytest.raises(ConfigError, match=r"stages\[0\]\.finetune: batch_size: 8 is not a multiple of the 3 processes"):
        validate_plan(recipe)
    monkeypatch.setenv("WORLD_SIZE", "2")
    validate_plan(recipe)  # 8 rows = 4 per process
    assert never_run == []


def test_a_search_split_the_student_trains_on_is_a_note_before_anything_runs(sst2: Path, never_run) -> None:
    """An uncapped ``length`` (or ``distill``) stage before a train-split search: a note in the plan and the log."""
    from slimformer.recipe import plan_recipe

    def notes(stages: list[dict[str, Any]]) -> list[tuple[int, str]]:
        return validate_plan(_recipe("sst2", sst2, stages)).notes

    search = {"search": {"search_examples": 4}}
    seen = notes([{"finetune": TRAIN}, {"length": TRAIN}, search])
    assert len(seen) == 1 and seen[0][0] == 2
    assert "'length' stage trains on all of it" in seen[0][1] and "length.hold_out: 4 keeps them out" in seen[0][1]
    assert notes([{"finetune": TRAIN}, {"length": {**TRAIN, "hold_out": 4}}, search]) == []
    assert notes([{"finetune": TRAIN}, {"length": {**TRAIN, "max_train_examples": 8}}, search]) == []
    assert notes([{"finetune": TRAIN}, {"length": TRAIN}, {"search": {"search_split": "eval"}}]) == []
    student = [{"distill": {**TRAIN, "student_layers": [0]}}]
    assert "distill.hold_out: 4 keeps them out" in notes([{"finetune": TRAIN}, *student, search])[0][1]
    held_student = [{"distill": {**TRAIN, "student_layers": [0], "hold_out": 4}}]
    assert notes([{"finetune": TRAIN}, *held_student, search]) == []
    with pytest.raises(ConfigError, match=r"search_examples=4 but the distill stage holds out only 3 training"):
        notes([{"finetune": TRAIN}, {"distill": {**TRAIN, "student_layers": [0], "hold_out": 3}}, search])

    recipe = _recipe("sst2", sst2, [{"finetune": TRAIN}, {"length": TRAIN}, search])
    rows = plan_recipe(recipe, run_dir=sst2.parent / "dry")
    assert [bool(r.get("notes")) for r in rows] == [False, False, True]
    lines: list[str] = []
    run_recipe(recipe, run_dir=sst2.parent / "run", log=lines.append)
    assert lines[0].startswith("note: stages[2].search: the search split is drawn from the training file")
    assert never_run == ["finetune", "length", "search"]
