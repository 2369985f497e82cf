"""DistillationTrainer / DistillationLoss on tiny random encoders: the loss is the hand-combined weighted sum,
the teacher stays frozen and out of the graph, and bad loss sets fail before training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import make_tiny_model
from slimformer.distill import (
    LOSSES,
    attention_map_kl,
    attention_output_mse,
    attention_score_mse,
    context_mse,
    hidden_mse,
    logits_kd,
    minilm_attention_kl,
    minilm_value_relation_kl,
    sdq_attention_kl,
    soft_cross_entropy,
)
from slimformer.distill.loss import TRAINABLE_LOSSES, DistillationLoss
from slimformer.distill.trainer import DistillationTrainer
from slimformer.errors import ConfigError
from slimformer.models import Capture


def _batch(head: str = "classification", batch: int = 3, seq: int = 7) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 100, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, 4:] = 0
    mask[2, 6:] = 0
    out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    if head == "qa":
        out["start_positions"] = torch.tensor([1, 2, 3])
        out["end_positions"] = torch.tensor([2, 4, 5])
    else:
        out["labels"] = torch.tensor([0, 1, 1])
    return out


def _trainer(tmp_path: Path, student, teacher, kd: DistillationLoss, **args) -> DistillationTrainer:
    from transformers import TrainingArguments

    targs = TrainingArguments(
        output_dir=str(tmp_path / "t"),
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        remove_unused_columns=False,
        **args,
    )
    return DistillationTrainer(model=student, args=targs, teacher=teacher, kd_loss=kd)


def _hand(name: str, s, t, mask: torch.Tensor, start_end: bool) -> torch.Tensor:
    """Each loss computed straight from the distill functions on two Capture.all() forwards."""
    zs = (s.start_logits, s.end_logits) if start_end else s.logits
    zt = (t.start_logits, t.end_logits) if start_end else t.logits
    es, et = s.encoder, t.encoder
    return {
        "logits_kd": lambda: logits_kd(zs, zt, temperature=2.0, scale_by_temperature_squared=True),
        "soft_cross_entropy": lambda: soft_cross_entropy(zs, zt),
        "hidden_mse": lambda: hidden_mse(es.hidden_states, et.hidden_states),
        "attention_score_mse": lambda: attention_score_mse(es.scores, et.scores),
        "attention_map_kl": lambda: attention_map_kl(es.attentions, et.attentions, mask),
        "sdq_attention_kl": lambda: sdq_attention_kl(es.attentions, et.attentions, mask),
        "attention_output_mse": lambda: attention_output_mse(es.attention_outputs, et.attention_outputs),
        "context_mse": lambda: context_mse(es.contexts, et.contexts),
        "unified_attention": lambda: (
            0.5 * attention_map_kl(es.attentions, et.attentions, mask)
            + 2.0 * attention_output_mse(es.attention_outputs, et.attention_outputs)
        ),
        "minilm_attention_kl": lambda: minilm_attention_kl(es.attentions[-1], et.attentions[-1], mask),
        "minilm_value_relation_kl": lambda: minilm_value_relation_kl(es.values[-1], et.values[-1], mask),
    }[name]()


LOSS_SETS = [
    {"logits_kd": 1.0},
    {"soft_cross_entropy": 1.0, "hidden_mse": 0.5, "attention_score_mse": 2.0},
    {"attention_map_kl": 1.0, "attention_output_mse": 0.3, "context_mse": 1.5},
    {"unified_attention": 1.0, "sdq_attention_kl": 0.7},
    {"minilm_attention_kl": 1.0, "minilm_value_relation_kl": 1.0, "logits_kd": 0.2},
]


@pytest.mark.parametrize("head", ["classification", "qa"])
@pytest.mark.parametrize("losses", LOSS_SETS, ids=lambda d: "+".join(d))
def test_trainer_loss_equals_hand_combined_weighted_losses(tmp_path: Path, head: str, losses: dict) -> None:
    kw = {"num_labels": 2} if head == "classification" else {}
    student, teacher = make_tiny_model(head, seed=1, **kw), make_tiny_model(head, seed=2, **kw)
    kd = DistillationLoss(losses, gt_weight=0.25, temperature=2.0, temperature_squared=True, beta_map=0.5, beta_out=2)
    trainer = _trainer(tmp_path, student, teacher, kd)
    batch = _batch(head)
    got = trainer.compute_loss(student, batch)

    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    s, t = student(**inputs, capture=Capture.all()), teacher(**inputs, capture=Capture.all())
    if head == "qa":
        n = batch["input_ids"].shape[1]
        gt = 0.5 * (
            F.cross_entropy(s.start_logits, batch["start_positions"])
            + F.cross_entropy(s.end_logits, batch["end_positions"])
        )
        assert n > int(batch["end_positions"].max())
    else:
        gt = F.cross_entropy(s.logits, batch["labels"])
    want = 0.25 * gt + sum(w * _hand(name, s, t, inputs["attention_mask"], head == "qa") for name, w in losses.items())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert got.requires_grad and set(trainer.last_loss_terms) == {"gt", *losses}
    torch.testing.assert_close(trainer.last_loss_terms["gt"], gt.detach())


def test_trainable_losses_are_registry_names() -> None:
    assert set(TRAINABLE_LOSSES) <= set(LOSSES)


def test_layer_map_pairs_embeddings_and_mapped_layers(tmp_path: Path) -> None:
    student = make_tiny_model("classification", seed=1, num_labels=2, num_hidden_layers=1)
    teacher = make_tiny_model("classification", seed=2, num_labels=2, num_hidden_layers=3)
    kd = DistillationLoss({"hidden_mse": 1.0, "attention_output_mse": 1.0}, layer_map={0: 2})
    loss = _trainer(tmp_path, student, teacher, kd).compute_loss(student, _batch())
    inputs = {k: v for k, v in _batch().items() if k != "labels"}
    s, t = student(**inputs, capture=Capture.all()), teacher(**inputs, capture=Capture.all())
    hs, ht = s.encoder.hidden_states, t.encoder.hidden_states
    want = F.mse_loss(hs[0], ht[0]) + F.mse_loss(hs[1], ht[3])
    want = want + F.mse_loss(s.encoder.attention_outputs[0], t.encoder.attention_outputs[2])
    torch.testing.assert_close(loss, want)


def test_teacher_frozen_gets_no_gradient_and_is_unchanged_after_a_step(tmp_path: Path) -> None:
    student = make_tiny_model("classification", seed=1, num_labels=2)
    teacher = make_tiny_model("classification", seed=2, num_labels=2).train()  # the trainer must put it in eval
    before_t = {k: v.clone() for k, v in teacher.state_dict().items()}
    before_s = {k: v.clone() for k, v in student.state_dict().items()}
    feats = [{k: v[i] for k, v in _batch().items()} for i in range(3)]
    kd = DistillationLoss({"logits_kd": 1.0, "hidden_mse": 1.0, "attention_map_kl": 1.0}, gt_weight=1.0)
    trainer = _trainer(tmp_path, student, teacher, kd, max_steps=2, per_device_train_batch_size=3, learning_rate=1e-2)
    trainer.train_dataset = feats
    trainer.train()
    assert not teacher.training
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, before_t[k]) for k, v in teacher.state_dict().items())
    changed = [k for k, v in student.state_dict().items() if not torch.equal(v, before_s[k])]
    assert any("encoder.layer.0.attention.self.query.weight" in k for k in changed)


def test_teacher_output_is_outside_the_autograd_graph(tmp_path: Path) -> None:
    student = make_tiny_model("classification", seed=1, num_labels=2)
    teacher = make_tiny_model("classification", seed=2, num_labels=2)
    trainer = _trainer(tmp_path, student, teacher, DistillationLoss({"logits_kd": 1.0}))
    seen = []
    teacher.hf.classifier.register_forward_hook(lambda m, i, o: seen.append(o.requires_grad or o.grad_fn is not None))
    trainer.compute_loss(student, _batch()).backward()
    assert seen == [False]


def test_capture_holds_only_what_the_losses_need() -> None:
    assert DistillationLoss({"logits_kd": 1.0}).capture is None
    assert DistillationLoss({"hidden_mse": 1, "sdq_attention_kl": 1}).capture == Capture(
        hidden_states=True, attentions=True
    )
    assert DistillationLoss({"unified_attention": 1}, beta_out=0).capture == Capture(attentions=True)
    assert DistillationLoss({"minilm_value_relation_kl": 1, "context_mse": 0}).capture == Capture(values=True)
    assert not DistillationLoss({}, gt_weight=1).needs_teacher


def _models(**student_cfg):
    student = make_tiny_model("classification", seed=1, **{"num_labels": 2, **student_cfg})
    return student, make_tiny_model("classification", seed=2, num_labels=2, num_hidden_layers=3)


@pytest.mark.parametrize(
    ("kd", "student_cfg", "match"),
    [
        (DistillationLoss({"hidden_mse": 1}), {}, r"student has 2 layers but teacher has 3; set layer_map"),
        (DistillationLoss({"attention_map_kl": 1}, layer_map={2: 0}), {}, r"student layer 2 is outside .* 0..1"),
        (DistillationLoss({"attention_map_kl": 1}, layer_map={0: 3}), {}, r"teacher layer 3 is outside .* 0..2"),
        (DistillationLoss({"logits_kd": 1}), {"num_labels": 3}, r"student has 3 labels but teacher has 2"),
        (DistillationLoss({"minilm_attention_kl": 1}), {"num_attention_heads": 2}, r"num_attention_heads=2"),
        (DistillationLoss({"hidden_mse": 1}, layer_map={0: 0}), {"hidden_size": 16}, r"hidden_size=16"),
    ],
)
def test_incompatible_models_fail_before_training(tmp_path: Path, kd, student_cfg, match) -> None:
    student, teacher = _models(**student_cfg)
    with pytest.raises(ConfigError, match=match):
        _trainer(tmp_path, student, teacher, kd)


def test_last_layer_and_logit_losses_work_across_depths(tmp_path: Path) -> None:
    student, teacher = _models(num_hidden_layers=1)
    kd = DistillationLoss({"logits_kd": 1, "minilm_attention_kl": 1, "minilm_value_relation_kl": 1})
    assert torch.isfinite(_trainer(tmp_path, student, teacher, kd).compute_loss(student, _batch()))


def test_head_mismatches_and_regression_softmax_are_config_errors() -> None:
    reg, reg_t = make_tiny_model("classification", num_labels=1), make_tiny_model("classification", num_labels=1)
    with pytest.raises(ConfigError, match="regression head.*logits_mse"):
        DistillationLoss({"logits_kd": 1}).validate(reg, reg_t)
    DistillationLoss({"logits_mse": 1, "prediction": 1}).validate(reg, reg_t)
    bare = make_tiny_model("none")
    with pytest.raises(ConfigError, match="has no logits"):
        DistillationLoss({"soft_cross_entropy": 1}).validate(bare, make_tiny_model("none"))
    with pytest.raises(ConfigError, match="student head qa != teacher head classification"):
        DistillationLoss({"logits_kd": 1}).validate(make_tiny_model("qa"), reg)
    with pytest.raises(ConfigError, match="need a SlimModel teacher"):
        DistillationLoss({"logits_kd": 1}).validate(reg, None)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"losses": {"kl_div": 1}}, r"unknown loss 'kl_div'; expected some of \['logits_kd'"),
        ({"losses": {"hidden_mse": -1}}, r"kd_losses.hidden_mse: weight must be a finite number >= 0"),
        ({"losses": {"hidden_mse": float("nan")}}, r"weight must be a finite number"),
        ({"losses": {"hidden_mse": 0}}, r"nothing to train"),
        ({"losses": {}, "gt_weight": 0}, r"nothing to train"),
        ({"losses": {"logits_kd": 1}, "temperature": 0}, r"temperature must be a finite number > 0"),
        ({"losses": {"hidden_mse": 1}, "layer_map": {}}, r"layer_map is empty"),
        ({"losses": {"hidden_mse": 1}, "layer_map": {"0": 1}}, r"layer_map must map int"),
    ],
)
def test_bad_loss_sets_are_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        DistillationLoss(**kwargs)
