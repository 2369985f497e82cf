"""SDQ's Quant-Noise part (METHODS.md §5(b), our reconstruction): the noisy Linear, the rate schedule and its
callback, and the convert path after noisy training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import make_tiny_model
from slimformer.errors import ConfigError
from slimformer.quant import (
    ActivationQuantizer,
    FakeQuantLinear,
    PerRow,
    QATConfig,
    QuantizedLinear,
    TernaryWeight,
    UniformWeight,
    convert_qat_,
    fake_quantize,
)
from slimformer.quant.sdq import (
    QuantNoiseCallback,
    QuantNoiseLinear,
    QuantNoiseSchedule,
    prepare_quant_noise_,
    set_noise_rate_,
)


def _noisy(p: float, block_size: int = 1, bits: int = 4) -> QuantNoiseLinear:
    torch.manual_seed(0)
    lin = nn.Linear(16, 8, bias=False)
    return QuantNoiseLinear.from_fake_quant(
        FakeQuantLinear.from_linear(lin, UniformWeight(bits, PerRow())), p=p, block_size=block_size
    )


def _effective_weight(m: QuantNoiseLinear) -> torch.Tensor:
    """``W̃`` ``(out, in)`` read back through the forward (no input quantizer, identity input)."""
    return m(torch.eye(m.in_features)).T


def test_schedule_is_linear_ramp_then_constant() -> None:
    s = QuantNoiseSchedule(start=0.25, end=1.0, ramp=0.5)
    total = 100
    assert s(0, total) == pytest.approx(0.25)
    assert s(25, total) == pytest.approx(0.25 + 0.75 * 25 / 50)
    assert s(50, total) == pytest.approx(1.0) and s(99, total) == pytest.approx(1.0)
    rates = [s(i, total) for i in range(total)]
    assert all(b >= a for a, b in zip(rates, rates[1:], strict=False))
    assert QuantNoiseSchedule(0.3, 0.3, 0.5)(40, 100) == pytest.approx(0.3)  # constant
    assert QuantNoiseSchedule(0.1, 0.9, 0.0)(0, 10) == pytest.approx(0.9)  # no ramp: end from step 0
    assert QuantNoiseSchedule(1.0, 0.5, 1.0)(5, 10) == pytest.approx(0.75)  # decreasing works too


@pytest.mark.parametrize("bad", [{"start": -0.1}, {"end": 1.5}, {"ramp": 2.0}, {"start": True}])
def test_schedule_rejects_rates_outside_unit_interval(bad: dict) -> None:
    with pytest.raises(ConfigError, match=r"must be a number in \[0, 1\]"):
        QuantNoiseSchedule(**bad)


def test_noise_rate_zero_and_one_and_eval_mode() -> None:
    m = _noisy(0.0).train()
    w = m.weight.detach()
    q = fake_quantize(w, 4, symmetric=True, granularity=PerRow())
    torch.testing.assert_close(_effective_weight(m), w, rtol=0, atol=0)  # p = 0: fp32 weights
    m.p = 1.0
    torch.testing.assert_close(_effective_weight(m), q, rtol=0, atol=0)  # p = 1: every weight quantized
    m.p = 0.3
    m.eval()
    torch.testing.assert_close(_effective_weight(m), q, rtol=0, atol=0)  # eval: all quantized regardless of p


@pytest.mark.parametrize("block_size", [1, 4])
def test_noise_quantizes_about_p_of_the_blocks_and_whole_blocks(block_size: int) -> None:
    m = _noisy(0.5, block_size=block_size).train()
    w = m.weight.detach()
    q = fake_quantize(w, 4, symmetric=True, granularity=PerRow())
    assert not torch.equal(w, q)
    torch.manual_seed(1)
    fractions = []
    for _ in range(20):
        eff = _effective_weight(m)
        is_q, is_w = eff == q, eff == w
        assert bool((is_q | is_w).all())  # every element is either quantized or untouched
        chosen = (is_q & ~is_w).float().view(8, 16 // block_size, block_size)
        untouched = (is_w & ~is_q).float().view(8, 16 // block_size, block_size)
        # an element that differs between W and Q(W) decides its block: whole blocks flip together
        decided = chosen + untouched
        per_block = chosen.sum(-1) / decided.sum(-1).clamp(min=1)
        assert bool(((per_block == 0) | (per_block == 1)).all())
        fractions.append(float(chosen.sum() / decided.sum()))
    assert 0.4 < sum(fractions) / len(fractions) < 0.6


def test_noise_gradient_is_straight_through() -> None:
    m = _noisy(0.5).train()
    x = torch.randn(3, 16)
    m(x).sum().backward()
    torch.testing.assert_close(m.weight.grad, x.sum(0).expand(8, -1))  # d(xWᵀ)/dW with identity STE


def test_prepare_quant_noise_swaps_all_and_converts_exactly() -> None:
    model = make_tiny_model("classification", num_labels=2)
    cfg = QATConfig(weight=UniformWeight(8), activation=ActivationQuantizer(8))
    prepare_quant_noise_(model, cfg, p=0.2, block_size=8)
    noisy = [m for m in model.modules() if isinstance(m, QuantNoiseLinear)]
    assert len(noisy) == 2 * 6 + 1 and all(m.p == 0.2 and m.block_size == 8 for m in noisy)
    assert set_noise_rate_(model, 0.7) == 13 and all(m.p == 0.7 for m in noisy)
    ids = torch.randint(5, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    model.eval()
    before = model(ids).logits
    convert_qat_(model)
    assert sum(isinstance(m, QuantizedLinear) for m in model.modules()) == 13
    torch.testing.assert_close(model(ids).logits, before, rtol=0, atol=0)


def test_prepare_quant_noise_errors() -> None:
    with pytest.raises(ConfigError, match="Quant-Noise needs QATConfig"):
        prepare_quant_noise_(make_tiny_model(num_labels=2), QATConfig(weight=TernaryWeight()))
    with pytest.raises(ConfigError, match="block_size 5 does not divide in_features 32"):
        prepare_quant_noise_(make_tiny_model(num_labels=2), QATConfig(weight=UniformWeight(8)), block_size=5)
    with pytest.raises(ConfigError, match=r"rate p must be a number in \[0, 1\]"):
        prepare_quant_noise_(make_tiny_model(num_labels=2), QATConfig(weight=UniformWeight(8)), p=1.5)


def test_callback_applies_the_schedule_each_step_and_ends_fully_quantized(tmp_path: Path) -> None:
    from transformers import Trainer, TrainingArguments

    model = make_tiny_model("classification", num_labels=2)
    prepare_quant_noise_(model, QATConfig(weight=UniformWeight(8)), p=0.0)
    schedule = QuantNoiseSchedule(0.2, 1.0, 0.75)
    seen: list[float] = []
    first = next(m for m in model.modules() if isinstance(m, QuantNoiseLinear))
    first.register_forward_pre_hook(lambda m, args: seen.append(m.p))
    callback = QuantNoiseCallback(schedule)
    ids = torch.randint(5, 100, (4, 6), generator=torch.Generator().manual_seed(0))
    data = [{"input_ids": ids[i], "labels": torch.tensor(i % 2)} for i in range(4)]
    args = TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", save_strategy="no", max_steps=4,
        per_device_train_batch_size=2, remove_unused_columns=False,
    )  # fmt: skip
    Trainer(model=model, args=args, train_dataset=data, callbacks=[callback]).train()
    want = [schedule(i, 4) for i in range(4)]
    assert want == pytest.approx([0.2, 0.2 + 0.8 / 3, 0.2 + 1.6 / 3, 1.0])
    assert callback.history == pytest.approx(want)
    assert seen == pytest.approx(want)  # the forward of step i ran with rate want[i]
    assert all(m.p == 1.0 for m in model.modules() if isinstance(m, QuantNoiseLinear))


def test_noise_linear_matches_functional_reference_at_p_one() -> None:
    m = _noisy(1.0, bits=8).train()
    x = torch.randn(2, 16)
    want = F.linear(x, fake_quantize(m.weight.detach(), 8, symmetric=True, granularity=PerRow()))
    torch.testing.assert_close(m(x), want, rtol=0, atol=0)
