"""The ``distill`` stage: layer-selected students, students from a checkpoint, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import SST2_ROWS, make_tiny_model, resume_callbacks, write_sst2
from kd_helpers import save_teacher
from slimformer.checkpoint import load_model
from slimformer.distill.student import select_layers
from slimformer.errors import ConfigError
from slimformer.recipe import parse_recipe
from slimformer.stages.distill import DistillStageConfig, run_distill

BUDGET = {"max_steps": 2, "batch_size": 4, "logging_steps": 1, "learning_rate": 1e-3, "max_seq_length": 32}


def test_select_layers_copies_the_chosen_layers_embeddings_and_head() -> None:
    teacher = make_tiny_model("classification", num_labels=2, num_hidden_layers=3)
    student = select_layers(teacher, [0, 2])
    assert student.num_layers == 2 and student.config.num_hidden_layers == 2 and teacher.num_layers == 3
    t_sd, s_sd = teacher.state_dict(), student.state_dict()
    for key, value in s_sd.items():
        src = key.replace("encoder.layer.1.", "encoder.layer.2.")
        assert torch.equal(value, t_sd[src]), key
        assert value.data_ptr() != t_sd[src].data_ptr()  # copied, not shared with the teacher
    assert len(s_sd) < len(t_sd)
    assert student.base.encoder.layer[1].attention.self.layer_idx == 1


@pytest.mark.parametrize(
    ("layers", "match"),
    [
        ([0, 3], r"layer 3 is outside the teacher's layers 0..2"),
        ([-1], r"layer -1 is outside"),
        ([0, 1, 2, 2], r"has 4 layers but the teacher has only 3; a student cannot be deeper"),
        ([2, 1], r"strictly increasing"),
        ([1, 1], r"strictly increasing"),
        ([], r"student_layers is empty"),
    ],
)
def test_bad_student_layers(layers: list[int], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        select_layers(make_tiny_model("classification", num_labels=2, num_hidden_layers=3), layers)


def test_distill_by_layer_selection_end_to_end(tmp_path: Path, tiny_tokenizer) -> None:
    data = write_sst2(tmp_path, SST2_ROWS)
    teacher = save_teacher(tmp_path / "teacher", tiny_tokenizer, data, num_hidden_layers=3)
    cfg = DistillStageConfig(task="sst2", data=str(data), student_layers=[0, 2], **BUDGET)
    res = run_distill(cfg, tmp_path / "student", teacher=teacher)
    loaded = load_model(res["model_dir"])
    assert loaded.model.num_layers == 2 == res["num_layers"] and res["steps"] == 2
    rec = loaded.meta.applied[-1]
    assert [a["stage"] for a in loaded.meta.applied] == ["finetune", "distill"]
    assert rec["layer_map"] == {"0": 0, "1": 2} and rec["student_layers"] == [0, 2]
    assert rec["kd_losses"] == cfg.kd_losses and rec["teacher"] == str(teacher)
    assert 0.0 <= res["metrics"]["accuracy"] <= 1.0
    assert not (tmp_path / "student.trainer").exists()


def test_distill_hold_out_leaves_the_search_split_out_and_records_it(tmp_path: Path, tiny_tokenizer) -> None:
    """``hold_out``: the student trains on every example but the split the search will draw, which it records."""
    from slimformer.length.search_split import load_search_split
    from slimformer.stages import training_stages

    data = write_sst2(tmp_path, SST2_ROWS)
    teacher = save_teacher(tmp_path / "teacher", tiny_tokenizer, data, num_hidden_layers=3)
    cfg = DistillStageConfig(
        task="sst2", data=str(data), student_layers=[0, 2], hold_out=5, hold_out_min_words=3, seed=4, **BUDGET
    )
    res = run_distill(cfg, tmp_path / "student", teacher=teacher)
    meta = load_model(res["model_dir"]).meta
    rec = meta.applied[-1]
    assert len(rec["held_out"]) == 5 and rec["train_examples"] == res["train_examples"] == len(SST2_ROWS) - 5
    split = load_search_split(
        "sst2", data, tiny_tokenizer, records=meta.applied, training_stages=training_stages(), num_examples=5,
        seed=0, max_seq_length=16, min_words=3,
    )  # fmt: skip
    assert split.indices == rec["held_out"] and split.overlaps == ["finetune"]


def test_distill_into_a_checkpoint_needs_a_layer_map_across_depths(tmp_path: Path, tiny_tokenizer) -> None:
    data = write_sst2(tmp_path, SST2_ROWS)
    teacher = save_teacher(tmp_path / "teacher", tiny_tokenizer, data, num_hidden_layers=3)
    student = save_teacher(tmp_path / "small", tiny_tokenizer, data, seed=5, num_hidden_layers=1)
    cfg = DistillStageConfig(task="sst2", data=str(data), student=str(student), **BUDGET)
    with pytest.raises(ConfigError, match=r"student has 1 layers but teacher has 3; set layer_map"):
        run_distill(cfg, tmp_path / "out", teacher=teacher)
    cfg = DistillStageConfig(task="sst2", data=str(data), student=str(student), layer_map={0: 2}, **BUDGET)
    res = run_distill(cfg, tmp_path / "out", teacher=teacher)
    assert res["num_layers"] == 1
    meta = json.loads((Path(res["model_dir"]) / "slimformer.json").read_text())
    assert meta["applied"][-1]["student"] == str(student)


def test_student_deeper_than_teacher_is_refused(tmp_path: Path, tiny_tokenizer) -> None:
    data = write_sst2(tmp_path, SST2_ROWS)
    teacher = save_teacher(tmp_path / "teacher", tiny_tokenizer, data, num_hidden_layers=1)
    deep = save_teacher(tmp_path / "deep", tiny_tokenizer, data, num_hidden_layers=2)
    cfg = DistillStageConfig(task="sst2", data=str(data), student=str(deep), **BUDGET)
    with pytest.raises(ConfigError, match=r"has 2 layers, deeper than the teacher's 1"):
        run_distill(cfg, tmp_path / "out", teacher=teacher)


def test_distill_options_are_validated_in_the_recipe() -> None:
    def parse(options: dict) -> None:
        parse_recipe({"name": "x", "task": "sst2", "data": "d", "stages": [{"distill": options}]}, "r.yaml")

    with pytest.raises(ConfigError, match=r"exactly one of student_layers"):
        parse({})
    with pytest.raises(ConfigError, match=r"exactly one of student_layers"):
        parse({"student_layers": [0], "student": "x"})
    with pytest.raises(ConfigError, match=r"unknown loss 'minilm'"):
        parse({"student_layers": [0], "kd_losses": {"minilm": 1}})
    parse({"student_layers": [1, 3, 5], "kd_losses": {"logits_kd": 1, "hidden_mse": 0.5}, "gt_weight": 1})


def test_interrupted_distillation_resumes_from_its_checkpoint(tmp_path: Path, tiny_tokenizer) -> None:
    data = write_sst2(tmp_path, SST2_ROWS)
    teacher = save_teacher(tmp_path / "teacher", tiny_tokenizer, data, num_hidden_layers=3)
    cfg = DistillStageConfig(
        task="sst2", data=str(data), student_layers=[0, 2], save_steps=2, **{**BUDGET, "max_steps": 4}
    )
    ref = run_distill(cfg, tmp_path / "ref", teacher=teacher)

    Interrupt, StepCounter = resume_callbacks()
    count = StepCounter()
    with pytest.raises(KeyboardInterrupt):
        run_distill(cfg, tmp_path / "run", teacher=teacher, callbacks=[Interrupt()])
    assert (tmp_path / "run.trainer" / "checkpoint-2").is_dir()
    res = run_distill(cfg.model_copy(update={"save_steps": 3}), tmp_path / "run", teacher=teacher, callbacks=[count])
    assert count.steps == 2 and res["steps"] == 4  # resumed at step 2 (checkpoint cadence may change)
    assert not (tmp_path / "run.trainer").exists()
    a, b = load_model(ref["model_dir"]).model, load_model(res["model_dir"]).model
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7, msg=name)
