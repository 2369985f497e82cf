"""Sandwich loss with in-place distillation, LengthDropTrainer, and the ``length`` recipe stage end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml

from conftest import SST2_ROWS, make_tiny_model, resume_callbacks, write_sst2
from slimformer.checkpoint import load_model
from slimformer.errors import ConfigError
from slimformer.length import LengthConfig, SubModel, forward_with_config, load_length_config, sandwich
from slimformer.length.trainer import LengthDropTrainer, sandwich_loss
from slimformer.recipe import parse_recipe, run_recipe

SUBS = [
    SubModel("full", None, None),
    SubModel("smallest", LengthConfig.from_ratios([8 / 12, 6 / 12, 4 / 12]), None),
    SubModel("random", LengthConfig.from_lengths((10, 7, 7)), (0, 2)),  # any LengthConfig form is accepted
]


def _batch(head: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 150, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 8:] = 0
    batch = {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask, "token_type_ids": 0 * ids}
    if head == "qa":
        batch["start_positions"] = torch.tensor([1, 3, 2, 5])
        batch["end_positions"] = torch.tensor([2, 6, 2, 9])
    else:
        batch["labels"] = torch.tensor([0, 1, 2, 1])
    return batch


def _kl(p_log, q_log):  # KL(p || q) per row, from log-probabilities
    return (p_log.exp() * (p_log - q_log)).sum(-1)


def _task_ce(out, batch, qa: bool):  # the full pass's task loss, by hand (QA: mean of start and end CE)
    if qa:
        return (
            F.cross_entropy(out.start_logits, batch["start_positions"])
            + F.cross_entropy(out.end_logits, batch["end_positions"])
        ) / 2
    return F.cross_entropy(out.logits, batch["labels"])


def _expected(model, batch, direction):
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    full = model(**inputs)
    qa = model.head.value == "qa"
    teacher = (full.start_logits, full.end_logits) if qa else (full.logits,)
    total = _task_ce(full, batch, qa)
    for sub in SUBS[1:]:
        out = forward_with_config(model, **inputs, config=sub.config, layers=sub.layers)
        student = (out.start_logits, out.end_logits) if qa else (out.logits,)
        terms = []
        for t, s in zip(teacher, student):
            lt, ls = F.log_softmax(t.detach(), -1), F.log_softmax(s, -1)
            terms.append((_kl(lt, ls) if direction == "teacher_student" else _kl(ls, lt)).mean())
        total = total + sum(terms) / len(terms)
    return total / len(SUBS)


@pytest.mark.parametrize("head", ["classification", "qa"])
@pytest.mark.parametrize("direction", ["teacher_student", "student_teacher"])
def test_sandwich_loss_matches_hand_computation(head, direction):
    model = make_tiny_model(head, "bert", num_labels=3 if head == "classification" else 2, num_hidden_layers=3)
    batch = _batch(head)
    loss, logs = sandwich_loss(model, batch, SUBS, kl_direction=direction)
    expected = _expected(model, batch, direction)
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=1e-6)
    assert set(logs) == {"loss_full", "loss_kd"}
    # gradients equal those of the hand-written loss (so the teacher logits really are detached)
    params = [p for p in model.parameters() if p.requires_grad]
    got = torch.autograd.grad(loss, params, allow_unused=True)
    ref = torch.autograd.grad(_expected(model, batch, direction), params, allow_unused=True)
    for a, b in zip(got, ref):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_directions_differ_and_regression_uses_mse():
    model = make_tiny_model("classification", "bert", num_labels=3, num_hidden_layers=3)
    with torch.no_grad():
        model.hf.classifier.weight *= 200  # peaky distributions: the two KL directions differ visibly
    batch = _batch("classification")
    _, a = sandwich_loss(model, batch, SUBS, kl_direction="teacher_student")
    _, b = sandwich_loss(model, batch, SUBS, kl_direction="student_teacher")
    assert a["loss_full"] == b["loss_full"] and abs(a["loss_kd"] - b["loss_kd"]) > 1e-3 * a["loss_kd"] > 0
    reg = make_tiny_model("classification", "bert", num_labels=1, num_hidden_layers=3)
    batch["labels"] = torch.tensor([0.5, 1.0, -1.0, 2.0])
    loss, _ = sandwich_loss(reg, batch, SUBS[:2])
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    full = reg(**inputs).logits
    small = forward_with_config(reg, **inputs, config=SUBS[1].config).logits
    expected = (F.mse_loss(full.squeeze(-1), batch["labels"]) + F.mse_loss(small, full.detach())) / 2
    torch.testing.assert_close(loss, expected)


def test_sandwich_loss_input_errors():
    model = make_tiny_model("classification", "bert", num_labels=3, num_hidden_layers=3)
    batch = _batch("classification")
    with pytest.raises(ValueError, match="first sub-model of a sandwich must be the full model"):
        sandwich_loss(model, batch, SUBS[1:])
    with pytest.raises(ConfigError, match="unknown KL direction 'forward'"):
        sandwich_loss(model, batch, SUBS, kl_direction="forward")
    del batch["labels"]
    with pytest.raises(ValueError, match="needs task labels"):
        sandwich_loss(model, batch, SUBS)


def test_trainer_compute_loss_runs_the_sampled_sandwich(tmp_path):
    from transformers import TrainingArguments

    model = make_tiny_model("qa", "bert", num_hidden_layers=3)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to="none",
        max_steps=2,
        per_device_train_batch_size=4,
        save_strategy="no",
        learning_rate=1e-3,
    )
    rows = [{k: v[i] for k, v in _batch("qa").items()} for i in range(4)]
    trainer = LengthDropTrainer(model=model, args=args, train_dataset=rows, seq_len=16, num_sandwich=3, length_seed=1)
    assert trainer.layer_drop_prob == 0.0  # 3 layers: LayerDrop off by default
    model.train()
    loss = trainer.compute_loss(model, _batch("qa"))
    subs = trainer.last_sandwich
    assert [s.kind for s in subs] == ["full", "smallest", "random", "random", "random"]
    # the grid is seq_len = 16, not the batch's 12 tokens: ceil(12.8) = 13, ceil(10.4) = 11, ceil(8.8) = 9
    assert subs[1].gene == (13, 11, 9) and subs[1].config == LengthConfig.from_ratios([13 / 16, 11 / 16, 9 / 16])
    assert all(s.layers is None for s in subs)
    torch.testing.assert_close(loss, sandwich_loss(model, _batch("qa"), subs)[0])
    before = [p.detach().clone() for p in model.parameters()]
    result = trainer.train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def _finetune_length_recipe(model_dir: Path, data: Path, **length) -> dict:
    """A tiny SST-2 recipe: 1 finetune step (16 tokens), then 2 LengthDrop steps with ``length`` options."""
    return {
        "name": "lat",
        "task": "sst2",
        "model": str(model_dir),
        "data": str(data),
        "stages": [
            {"finetune": {"max_steps": 1, "batch_size": 8, "max_seq_length": 16, "logging_steps": 1}},
            {"length": {"max_steps": 2, "batch_size": 8, "num_sandwich": 1, "logging_steps": 1, **length}},
        ],
    }


def test_length_stage_end_to_end(tmp_path: Path, tiny_model_dir: Path):
    data = write_sst2(tmp_path, SST2_ROWS)
    raw = _finetune_length_recipe(tiny_model_dir, data)
    recipe = parse_recipe(yaml.safe_load(yaml.safe_dump(raw)))
    cfg = recipe.stages[1][1]
    assert (cfg.task, cfg.seed, cfg.length_drop_ratio_bound, cfg.kl_direction) == ("sst2", 42, 0.2, "teacher_student")
    ctx = run_recipe(recipe, run_dir=tmp_path / "run", log=lambda s: None)
    out = ctx.outputs["1-length"]
    assert out["steps"] == 2 and 0.0 <= out["metrics"]["accuracy"] <= 1.0
    model_dir = Path(out["model_dir"])
    assert load_length_config(model_dir) == LengthConfig.full(2)
    loaded = load_model(model_dir)
    assert [a["stage"] for a in loaded.meta.applied] == ["finetune", "length"]
    assert loaded.meta.max_seq_length == 16
    record = loaded.meta.applied[-1]  # LayerDrop by depth: the 2-layer model trained without it, and says so
    assert (record["layer_drop_prob"], record["layer_drop_prob_by_depth"]) == (0.0, True)
    assert record["sub_models"] == {"form": "ratios", "seq_len": 16}
    finetuned = load_model(ctx.outputs["0-finetune"]["model_dir"]).model
    assert any(not torch.equal(a, b) for a, b in zip(finetuned.parameters(), loaded.model.parameters()))
    assert json.loads((model_dir / "eval_results.json").read_text())["steps"] == 2


def test_length_stage_config_errors(tmp_path: Path):
    base = {"name": "lat", "task": "sst2", "data": "x"}
    with pytest.raises(ConfigError, match=r"length.layer_drop_prob"):
        parse_recipe({**base, "stages": [{"length": {"layer_drop_prob": 1.0}}]})
    with pytest.raises(ConfigError, match=r"length.kl_direction"):
        parse_recipe({**base, "stages": [{"length": {"kl_direction": "forward"}}]})
    with pytest.raises(ConfigError, match=r"length.num_sandwhich: unknown key"):
        parse_recipe({**base, "stages": [{"length": {"num_sandwhich": 2}}]})
    recipe = parse_recipe({**base, "stages": [{"length": {}}]})
    with pytest.raises(ConfigError, match=r"stages\[0\]\.length: needs model_dir from an earlier"):
        run_recipe(recipe, run_dir=tmp_path, log=lambda s: None)


def _tiny_sst2_finetuned(tmp_path: Path, tiny_model_dir: Path) -> tuple[Path, Any]:
    """SST2_ROWS written under ``tmp_path`` and the tiny model fine-tuned on them for one step: ``(data, result)``."""
    from slimformer.stages.finetune import FinetuneConfig, finetune

    data = write_sst2(tmp_path, SST2_ROWS)
    ft = finetune(
        FinetuneConfig(model=str(tiny_model_dir), task="sst2", data=str(data), max_steps=1, max_seq_length=16),
        tmp_path / "ft",
    )
    return data, ft


def test_length_stage_resumes_an_interrupted_run(tmp_path: Path, tiny_model_dir: Path):
    """Interrupted after the step-2 checkpoint and started again: the same model as an uninterrupted run."""
    from slimformer.stages.length import LengthStageConfig, train_length_adaptive
    from slimformer.train.checkpoints import checkpoint_dir

    data, ft = _tiny_sst2_finetuned(tmp_path, tiny_model_dir)
    cfg = LengthStageConfig(
        task="sst2", data=str(data), max_steps=4, batch_size=4, num_sandwich=2, save_steps=2, logging_steps=1,
        learning_rate=5e-3, length_drop_ratio_bound=0.5,
    )  # fmt: skip
    ref = train_length_adaptive(cfg, ft.model_dir, tmp_path / "ref")

    Interrupt, StepCounter = resume_callbacks()
    count = StepCounter()
    with pytest.raises(KeyboardInterrupt):
        train_length_adaptive(cfg, ft.model_dir, tmp_path / "run", callbacks=[Interrupt()])
    assert (checkpoint_dir(tmp_path / "run") / "checkpoint-2").is_dir()
    assert not (tmp_path / "run").exists()
    resumed = train_length_adaptive(cfg, ft.model_dir, tmp_path / "run", callbacks=[count])
    assert count.steps == 2  # steps 3 and 4 only
    assert resumed["steps"] == ref["steps"] == 4
    assert not checkpoint_dir(tmp_path / "run").exists()
    a, b = load_model(ref["model_dir"]).model, load_model(resumed["model_dir"]).model
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7, msg=name)
    # another config does not resume the other run's checkpoints
    cfg2 = cfg.model_copy(update={"learning_rate": 1e-2})
    with pytest.raises(KeyboardInterrupt):
        train_length_adaptive(cfg2, ft.model_dir, tmp_path / "other", callbacks=[Interrupt()])
    count = StepCounter()
    cfg3 = cfg.model_copy(update={"learning_rate": 2e-2})
    other = train_length_adaptive(cfg3, ft.model_dir, tmp_path / "other", callbacks=[count])
    assert other["steps"] == 4 and count.steps == 4


def test_checkpoint_cadence_does_not_invalidate_a_finished_length_stage():
    from slimformer.recipe import _config_hash

    def stage_hash(**opts):
        recipe = parse_recipe({"name": "lat", "task": "sst2", "data": "x", "stages": [{"length": opts}]})
        return _config_hash("length", recipe.stages[0][1])

    assert stage_hash(save_steps=50, save_total_limit=5) == stage_hash()
    assert stage_hash(learning_rate=1e-4) != stage_hash()


@pytest.mark.parametrize("head", ["classification", "qa"])
def test_sandwich_loss_with_a_teacher_for_the_full_pass(head):
    """(1-α)·CE + α·τ²·KL(p_T/τ ‖ p_full/τ) replaces the full pass's CE; the sub-model terms are unchanged."""
    model = make_tiny_model(head, "bert", num_labels=3 if head == "classification" else 2, num_hidden_layers=3)
    teacher = make_tiny_model(head, "bert", num_labels=3 if head == "classification" else 2, num_hidden_layers=2)
    batch = _batch(head)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        t_out = teacher(**inputs)
    t_logits = (t_out.start_logits, t_out.end_logits) if head == "qa" else t_out.logits
    alpha, tau = 0.7, 2.0
    loss, logs = sandwich_loss(model, batch, SUBS, teacher_logits=t_logits, teacher_weight=alpha, temperature=tau)

    full = model(**inputs)
    pairs = [(t_out.start_logits, full.start_logits), (t_out.end_logits, full.end_logits)] if head == "qa" else []
    pairs = pairs or [(t_out.logits, full.logits)]
    kd = sum(_kl(F.log_softmax(t / tau, -1), F.log_softmax(s / tau, -1)).mean() for t, s in pairs) / len(pairs)
    ce = _task_ce(full, batch, head == "qa")
    lat = _expected(model, batch, "teacher_student")  # (CE + Σ L_sub) / (m + 2)
    expected = lat + (-ce + (1 - alpha) * ce + alpha * tau**2 * kd) / len(SUBS)
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=1e-6)
    assert set(logs) == {"loss_full", "loss_kd", "loss_ce", "loss_teacher"}
    assert logs["loss_teacher"] == pytest.approx(float(tau**2 * kd.detach()), rel=1e-5)
    # α = 0 is LAT exactly, whatever teacher logits are passed
    torch.testing.assert_close(sandwich_loss(model, batch, SUBS, teacher_logits=t_logits)[0], lat)


def test_sandwich_loss_teacher_errors():
    model = make_tiny_model("classification", "bert", num_labels=3, num_hidden_layers=3)
    batch = _batch("classification")
    with pytest.raises(ValueError, match="teacher_weight > 0 needs teacher_logits"):
        sandwich_loss(model, batch, SUBS, teacher_weight=0.5)
    with pytest.raises(ConfigError, match="teacher_weight 1.5 is outside"):
        sandwich_loss(model, batch, SUBS, teacher_weight=1.5, teacher_logits=torch.zeros(4, 3))
    with pytest.raises(ConfigError, match="teacher_weight > 0 needs a teacher model"):
        LengthDropTrainer(model=model, seq_len=16, teacher_weight=0.5)


def test_trainer_feeds_the_frozen_teacher_to_the_full_pass(tmp_path):
    from transformers import TrainingArguments

    model = make_tiny_model("classification", "bert", num_labels=3, num_hidden_layers=3)
    teacher = make_tiny_model("classification", "bert", num_labels=3, num_hidden_layers=2)
    teacher.train()
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", max_steps=1)
    trainer = LengthDropTrainer(
        model=model, args=args, seq_len=16, teacher=teacher, teacher_weight=0.6, teacher_temperature=1.5,
        length_seed=3,
    )  # fmt: skip
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    model.train()
    batch = _batch("classification")
    torch.manual_seed(0)
    loss = trainer.compute_loss(model, batch)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    expected, _ = sandwich_loss(
        model, batch, trainer.last_sandwich, teacher_logits=teacher(**inputs).logits, teacher_weight=0.6,
        temperature=1.5,
    )  # fmt: skip
    torch.testing.assert_close(loss, expected)


def test_length_stage_with_a_teacher(tmp_path: Path, tiny_model_dir: Path):
    """The recipe's finetune model is the default teacher; it is recorded and changes the trained weights."""
    data = write_sst2(tmp_path, SST2_ROWS)

    def run(name: str, **length):
        raw = _finetune_length_recipe(tiny_model_dir, data, learning_rate=1e-3, **length)
        return run_recipe(parse_recipe(raw), run_dir=tmp_path / name, log=lambda s: None)

    ctx = run("kd", teacher_weight=0.5, teacher_temperature=2.0)
    applied = load_model(ctx.outputs["1-length"]["model_dir"]).meta.applied[-1]
    assert applied["teacher"] == ctx.outputs["0-finetune"]["model_dir"] and applied["teacher_weight"] == 0.5
    plain = run("plain")
    assert load_model(plain.outputs["1-length"]["model_dir"]).meta.applied[-1]["teacher_weight"] == 0.0
    a = load_model(ctx.outputs["1-length"]["model_dir"]).model
    b = load_model(plain.outputs["1-length"]["model_dir"]).model
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    # no earlier stage to take a teacher from
    recipe = parse_recipe({"name": "lat", "task": "sst2", "data": "x", "stages": [{"length": {"teacher_weight": 0.5}}]})
    from slimformer.stages import RunContext
    from slimformer.stages.length import _recipe_teacher

    with pytest.raises(ConfigError, match="teacher_weight > 0 needs teacher"):
        _recipe_teacher(RunContext(run_dir=tmp_path, recipe=recipe, data_root=None))


def test_later_fields_keep_the_identity_of_earlier_length_runs():
    """Fields added later (identity-when-set) leave the hash of a config that does not set them unchanged."""
    import hashlib

    from slimformer.config import run_control_fields
    from slimformer.recipe import _config_hash

    cfg = parse_recipe({"name": "lat", "task": "sst2", "data": "x", "stages": [{"length": {}}]}).stages[0][1]
    new = {"teacher_weight", "teacher", "teacher_temperature", "hold_out", "hold_out_min_words", "hold_out_context"}
    before = cfg.model_dump(mode="json", exclude=run_control_fields(cfg) | new)  # the dump before the fields existed
    old_hash = hashlib.sha256(json.dumps(["length", before], sort_keys=True).encode()).hexdigest()[:16]
    assert _config_hash("length", cfg) == old_hash
    assert _config_hash("length", cfg.model_copy(update={"teacher_weight": 0.5})) != old_hash
    assert _config_hash("length", cfg.model_copy(update={"teacher_temperature": 3.0})) != old_hash
    assert _config_hash("length", cfg.model_copy(update={"hold_out": 2000})) != old_hash


@pytest.mark.parametrize(("layers", "given", "used"), [(3, None, 0.0), (6, None, 0.2), (3, 0.1, 0.1), (6, 0.0, 0.0)])
def test_trainer_layer_drop_default_by_depth(tmp_path, layers, given, used):
    """``layer_drop_prob: None`` is off for a 3-layer model and LAT's 0.2 for a 6-layer one; a value set wins."""
    from transformers import TrainingArguments

    model = make_tiny_model("classification", "bert", num_labels=3, num_hidden_layers=layers)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", max_steps=1)
    trainer = LengthDropTrainer(model=model, args=args, seq_len=16, layer_drop_prob=given)
    assert trainer.layer_drop_prob == trainer.sandwich_kwargs["layer_drop_prob"] == used
    model.train()
    trainer.compute_loss(model, _batch("classification"))  # what a step samples with
    rng = random.Random(0)
    draws = [sandwich(16, layers, rng, **trainer.sandwich_kwargs) for _ in range(40)]
    drops = {s.layers is not None for subs in draws for s in subs[1:]}
    assert drops == ({False, True} if used > 0 else {False})


def test_length_stage_records_an_explicit_layer_drop(tmp_path: Path, tiny_model_dir: Path):
    data = write_sst2(tmp_path, SST2_ROWS)
    raw = _finetune_length_recipe(tiny_model_dir, data, layer_drop_prob=0.3)
    ctx = run_recipe(parse_recipe(raw), run_dir=tmp_path / "run", log=lambda s: None)
    record = load_model(ctx.outputs["1-length"]["model_dir"]).meta.applied[-1]
    assert (record["layer_drop_prob"], record["layer_drop_prob_by_depth"]) == (0.3, False)


def test_length_stage_hold_out_trains_on_the_rest_and_records_what_the_search_will_score(
    tmp_path: Path, tiny_model_dir: Path, tiny_tokenizer
):
    """``hold_out``: the stage trains on every example but the search split, records it, and the search lands on it."""
    from slimformer.length.search_split import load_search_split
    from slimformer.stages import training_stages
    from slimformer.stages.length import LengthStageConfig, train_length_adaptive

    data, ft = _tiny_sst2_finetuned(tmp_path, tiny_model_dir)
    cfg = LengthStageConfig(
        task="sst2", data=str(data), max_steps=1, batch_size=4, hold_out=5, hold_out_min_words=3, seed=7,
        eval_each_epoch=False,
    )  # fmt: skip
    out = train_length_adaptive(cfg, ft.model_dir, tmp_path / "lat")
    record = load_model(out["model_dir"]).meta.stage("length")
    held = record["held_out"]
    assert len(held) == 5 and record["train_examples"] == len(SST2_ROWS) - 5
    assert all(len(SST2_ROWS[i].split("\t")[0].split()) >= 3 for i in held)  # hold_out_min_words
    meta = load_model(out["model_dir"]).meta
    split = load_search_split(
        "sst2", data, tiny_tokenizer, records=meta.applied, training_stages=training_stages(), num_examples=5,
        seed=0, max_seq_length=16, min_words=3,
    )  # fmt: skip
    assert split.indices == held and split.overlaps == ["finetune"]  # the teacher (uncapped) saw them; the student not


def test_length_stage_hold_out_context_leaves_the_held_out_phrases_contexts_out_too(
    tmp_path: Path, tiny_model_dir: Path, tiny_tokenizer
):
    """``hold_out_context``: the phrases inside or around a held-out one are not trained on either; the stage records
    how many (and their digest), and the search still lands on the held-out examples alone."""
    from slimformer.length.search_split import indices_digest, load_search_split
    from slimformer.stages import training_stages
    from slimformer.stages.finetune import FinetuneConfig, finetune
    from slimformer.stages.length import LengthStageConfig, train_length_adaptive

    rows = ["the movie was good fun\t1", "movie was good\t1", "was good\t1", "a terrible boring film\t0"]
    rows += ["terrible boring\t0", "boring film\t0", "a lot of great fun\t1", "great fun\t1", "very dull\t0"]
    data = write_sst2(tmp_path, rows)
    ft = finetune(
        FinetuneConfig(model=str(tiny_model_dir), task="sst2", data=str(data), max_steps=1, max_seq_length=16),
        tmp_path / "ft",
    )
    cfg = LengthStageConfig(
        task="sst2", data=str(data), max_steps=1, batch_size=4, hold_out=2, hold_out_min_words=4,
        hold_out_context=True, seed=3, eval_each_epoch=False,
    )  # fmt: skip
    out = train_length_adaptive(cfg, ft.model_dir, tmp_path / "lat")
    meta = load_model(out["model_dir"]).meta
    record = meta.stage("length")
    held = record["held_out"]
    texts = [r.split("\t")[0].split() for r in rows]

    def inside(a: list[str], b: list[str]) -> bool:  # a is a contiguous run of b's words
        return any(b[i : i + len(a)] == a for i in range(len(b) - len(a) + 1))

    related = [
        i
        for i in range(len(rows))
        if i not in held and any(inside(texts[i], texts[h]) or inside(texts[h], texts[i]) for h in held)
    ]
    assert len(held) == 2 and related  # the fixture's 4-word rows all have sub-phrases among the rows
    assert record["held_out_context"] == {"examples": len(related), "sha256": indices_digest(related)}
    assert record["train_examples"] == len(rows) - 2 - len(related)
    split = load_search_split(
        "sst2", data, tiny_tokenizer, records=meta.applied, training_stages=training_stages(), num_examples=2,
        seed=0, max_seq_length=16, min_words=4,
    )  # fmt: skip
    assert split.indices == held
