"""Quantization primitives vs. hand-computed values and straightforward references (METHODS §4(b), §5(b), §6)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from slimformer.errors import ConfigError
from slimformer.quant import (
    SUPPORTED_BITS,
    PerGroup,
    PerRow,
    PerTensor,
    binarize,
    choose_qparams,
    dequantize,
    fake_quantize,
    group_layout,
    lsq_quantize,
    quant_noise,
    quant_range,
    quantize,
    ternarize,
    ternary_codes,
)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _sqnr_db(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    return 10 * math.log10(x.pow(2).sum().item() / (x - x_hat).pow(2).sum().item())


# --------------------------------------------------------------------------------------------- granularity


def test_granularity_is_a_frozen_hashable_value() -> None:
    assert PerGroup(4) == PerGroup(4) and PerGroup(4) != PerGroup(8) and PerRow() != PerTensor()
    assert len({PerTensor(), PerTensor(), PerRow(), PerGroup(2), PerGroup(2)}) == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        PerGroup(4).group_size = 8  # type: ignore[misc]


@pytest.mark.parametrize(
    ("granularity", "view", "dims", "scale_shape", "group_numel"),
    [
        (PerTensor(), (4, 8), (0, 1), (1, 1), 32),
        (PerRow(), (4, 8), (1,), (4, 1), 8),
        (PerGroup(2), (4, 4, 2), (2,), (4, 4, 1), 2),
    ],
)
def test_group_layout_matches_docstring(granularity, view, dims, scale_shape, group_numel) -> None:
    layout = group_layout((4, 8), granularity)
    assert layout.view_shape == view and layout.reduce_dims == dims
    assert layout.scale_shape == scale_shape and layout.group_numel == group_numel


# --------------------------------------------------------------------------------------------- uniform


def test_quant_range_by_hand() -> None:
    assert quant_range(8, True) == (-127, 127) and quant_range(8, False) == (0, 255)
    assert quant_range(4, True) == (-7, 7) and quant_range(4, False) == (0, 15)
    assert quant_range(2, True) == (-1, 1) and quant_range(3, False) == (0, 7)


def test_symmetric_int8_known_tensor() -> None:
    x = torch.tensor([[1.27, -0.5, 0.013], [0.0, -1.0, 0.256]])
    scale, zp = choose_qparams(x, 8, symmetric=True)
    assert scale.shape == (1, 1) and zp.shape == (1, 1) and zp.dtype == torch.int32
    assert scale.item() == pytest.approx(0.01) and zp.item() == 0
    q = quantize(x, scale, zp, 8, symmetric=True)
    assert q.dtype == torch.int8
    assert q.tolist() == [[127, -50, 1], [0, -100, 26]]
    expected = torch.tensor([[1.27, -0.5, 0.01], [0.0, -1.0, 0.26]])
    torch.testing.assert_close(dequantize(q, scale, zp), expected)
    torch.testing.assert_close(fake_quantize(x, 8), expected)


def test_asymmetric_4bit_zero_point_by_hand() -> None:
    # lo = -1, hi = 2 -> scale = 3 / 15 = 0.2, zero_point = 0 - round(-1 / 0.2) = 5
    x = torch.tensor([-1.0, 0.0, 2.0, 0.65])
    scale, zp = choose_qparams(x, 4, symmetric=False)
    assert scale.item() == pytest.approx(0.2) and zp.item() == 5
    q = quantize(x, scale, zp, 4, symmetric=False)
    assert q.dtype == torch.uint8 and q.tolist() == [0, 5, 15, 8]  # 0.65 / 0.2 = 3.25 -> 3, + 5
    torch.testing.assert_close(dequantize(q, scale, zp), torch.tensor([-1.0, 0.0, 2.0, 0.6]))


def test_asymmetric_range_always_contains_zero() -> None:
    # all positive: lo = min(1, 0) = 0 -> zero_point 0, scale = 3 / 15
    scale, zp = choose_qparams(torch.tensor([1.0, 3.0]), 4, symmetric=False)
    assert scale.item() == pytest.approx(0.2) and zp.item() == 0
    # all negative: hi = 0 -> zero_point = qmax
    scale, zp = choose_qparams(torch.tensor([-3.0, -1.0]), 4, symmetric=False)
    assert scale.item() == pytest.approx(0.2) and zp.item() == 15


def test_per_row_scales_differ_per_row() -> None:
    w = torch.tensor([[1.0, -2.0, 0.5], [0.5, 0.25, -0.1]])
    scale, zp = choose_qparams(w, 8, symmetric=True, granularity=PerRow())
    assert scale.shape == (2, 1) and zp.shape == (2, 1)
    torch.testing.assert_close(scale, torch.tensor([[2.0 / 127], [0.5 / 127]]))
    w_hat = fake_quantize(w, 8, granularity=PerRow())
    assert w_hat[0, 1].item() == pytest.approx(-2.0) and w_hat[1, 0].item() == pytest.approx(0.5)


def test_per_group_matches_a_loop_reference() -> None:
    w = _randn(3, 8, seed=1)
    scale, _ = choose_qparams(w, 4, symmetric=True, granularity=PerGroup(4))
    assert scale.shape == (3, 2, 1)
    w_hat = fake_quantize(w, 4, granularity=PerGroup(4))
    for r in range(3):
        for g in range(2):
            block = w[r, 4 * g : 4 * g + 4]
            s = block.abs().max() / 7
            assert scale[r, g, 0].item() == pytest.approx(s.item())
            torch.testing.assert_close(w_hat[r, 4 * g : 4 * g + 4], torch.clamp(torch.round(block / s), -7, 7) * s)


def test_int8_symmetric_has_at_most_255_distinct_values() -> None:
    x = _randn(128, 128, seed=2) * 3
    q = quantize(x, *choose_qparams(x, 8), 8)
    assert q.unique().numel() <= 255 and q.min().item() >= -127
    assert fake_quantize(x, 8).unique().numel() <= 255


@pytest.mark.parametrize("bits", SUPPORTED_BITS)
@pytest.mark.parametrize("symmetric", [True, False])
def test_at_most_2_pow_bits_distinct_values(bits: int, symmetric: bool) -> None:
    x = _randn(64, 64, seed=3)
    levels = 2**bits - 1 if symmetric else 2**bits
    assert fake_quantize(x, bits, symmetric=symmetric).unique().numel() <= levels
    q = quantize(x, *choose_qparams(x, bits, symmetric=symmetric), bits, symmetric=symmetric)
    qmin, qmax = quant_range(bits, symmetric)
    assert q.unique().numel() <= levels and qmin <= q.min().item() and q.max().item() <= qmax


def test_fake_quantize_sqnr_high_at_8_bits_and_decreasing_with_bits() -> None:
    x = _randn(64, 256, seed=4)
    sqnr = {b: _sqnr_db(x, fake_quantize(x, b)) for b in (8, 4, 3, 2)}
    assert sqnr[8] > 35
    assert sqnr[8] > sqnr[4] > sqnr[3] > sqnr[2]
    assert _sqnr_db(x, fake_quantize(x, 8, symmetric=False)) > 35
    assert _sqnr_db(x, fake_quantize(x, 8, granularity=PerRow())) > sqnr[8]  # finer scales: less error


def test_fake_quantize_clip_bounds_values() -> None:
    x = torch.tensor([-4.0, -1.0, 0.0, 1.0, 4.0])
    y = fake_quantize(x, 8, clip=2.5)
    torch.testing.assert_close(y, torch.tensor([-2.5, -1.0, 0.0, 1.0, 2.5]), atol=2.5 / 127, rtol=0)
    assert y.abs().max().item() == pytest.approx(2.5)


def test_ste_identity_inside_zero_outside_clip() -> None:
    x = torch.tensor([-3.0, -2.5, -1.0, 0.0, 1.0, 2.49, 2.5, 4.0], requires_grad=True)
    upstream = torch.arange(1.0, 9.0)
    fake_quantize(x, 8, clip=2.5).backward(upstream)
    torch.testing.assert_close(x.grad, upstream * torch.tensor([0.0, 0, 1, 1, 1, 1, 0, 0]))


def test_ste_without_clip_is_identity() -> None:
    x = (_randn(4, 5, seed=5) * 10).requires_grad_()
    upstream = _randn(4, 5, seed=6)
    fake_quantize(x, 4, symmetric=False, granularity=PerRow()).backward(upstream)
    torch.testing.assert_close(x.grad, upstream)


# --------------------------------------------------------------------------------------------- ternary


_W24 = torch.tensor([[0.1, -0.9, 0.5, 1.5], [-0.2, 0.3, -1.0, 0.0]])


def test_twn_per_tensor_by_hand() -> None:
    # mean|W| = 4.5 / 8 = 0.5625, delta = 0.39375; |W| > delta: 0.9, 0.5, 1.5, 1.0 -> alpha = 3.9 / 4 = 0.975
    codes, alpha = ternary_codes(_W24)
    assert codes.dtype == torch.int8 and alpha.shape == (1, 1)
    assert codes.tolist() == [[0, -1, 1, 1], [0, 0, -1, 0]]
    assert alpha.item() == pytest.approx(0.975)
    a = 0.975
    torch.testing.assert_close(ternarize(_W24), torch.tensor([[0.0, -a, a, a], [0.0, 0.0, -a, 0.0]]))


def test_twn_per_row_by_hand() -> None:
    # row 0: mean 0.75, delta 0.525 -> {0.9, 1.5}, alpha 1.2; row 1: mean 0.375, delta 0.2625 -> {0.3, 1.0}, 0.65
    codes, alpha = ternary_codes(_W24, granularity=PerRow())
    assert codes.tolist() == [[0, -1, 0, 1], [0, 1, -1, 0]]
    torch.testing.assert_close(alpha, torch.tensor([[1.2], [0.65]]))
    expected = torch.tensor([[0.0, -1.2, 0.0, 1.2], [0.0, 0.65, -0.65, 0.0]])
    torch.testing.assert_close(ternarize(_W24, granularity=PerRow()), expected)


def test_twn_exactly_three_values_per_tensor_and_per_row() -> None:
    w = _randn(16, 32, seed=7)
    w_hat = ternarize(w)
    values = w_hat.unique()
    assert values.numel() == 3 and values[1].item() == 0 and values[0].item() == -values[2].item()
    w_rows = ternarize(w, granularity=PerRow())
    alphas = set()
    for row in w_rows:
        values = row.unique()
        assert values.numel() == 3 and values[1].item() == 0 and values[0].item() == -values[2].item()
        alphas.add(values[2].item())
    assert len(alphas) == 16


def test_twn_clip_changes_statistics_and_zeroes_gradient() -> None:
    w = torch.tensor([[0.4, -0.8, 10.0, -3.0]], requires_grad=True)
    # W_c = [0.4, -0.8, 2.5, -2.5]: mean 1.55, delta 1.085 -> {2.5, 2.5}, alpha 2.5
    codes, alpha = ternary_codes(w, clip=2.5)
    assert codes.tolist() == [[0, 0, 1, -1]] and alpha.item() == pytest.approx(2.5)
    ternarize(w, clip=2.5).backward(torch.ones(1, 4))
    assert w.grad.tolist() == [[1.0, 1.0, 0.0, 0.0]]


def test_twn_without_clip_has_identity_gradient() -> None:
    w = (_randn(3, 4, seed=8) * 5).requires_grad_()
    upstream = _randn(3, 4, seed=9)
    ternarize(w).backward(upstream)
    torch.testing.assert_close(w.grad, upstream)


def test_twn_threshold_factor_moves_delta() -> None:
    # factor 0.1: delta = 0.05625 -> every non-zero entry survives
    codes, alpha = ternary_codes(_W24, threshold_factor=0.1)
    assert codes.tolist() == [[1, -1, 1, 1], [-1, 1, -1, 0]]
    assert alpha.item() == pytest.approx(4.5 / 7)


# --------------------------------------------------------------------------------------------- binary


def test_bwn_two_values_alpha_is_mean_abs() -> None:
    w = _randn(8, 16, seed=10)
    w_hat = binarize(w)
    alpha = w.abs().mean().item()
    values = w_hat.unique()
    assert values.numel() == 2
    assert values[0].item() == pytest.approx(-alpha) and values[1].item() == pytest.approx(alpha)
    torch.testing.assert_close(w_hat, torch.sign(w) * alpha)


def test_bwn_by_hand_sign_zero_is_plus_and_per_row() -> None:
    w = torch.tensor([[0.0, -1.0, 2.0, -3.0], [0.5, 0.5, -0.5, 0.5]])
    torch.testing.assert_close(binarize(w), torch.tensor([[1.0, -1, 1, -1], [1, 1, -1, 1]]) * 1.0)  # mean 8/8
    expected = torch.tensor([[1.5, -1.5, 1.5, -1.5], [0.5, 0.5, -0.5, 0.5]])
    torch.testing.assert_close(binarize(w, PerRow()), expected)


def test_bwn_ste_clipped_at_one() -> None:
    w = torch.tensor([-1.5, -1.0, -0.99, 0.0, 0.5, 1.0, 2.0], requires_grad=True)
    binarize(w).backward(torch.ones(7))
    assert w.grad.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    w2 = w.detach().clone().requires_grad_()
    binarize(w2, clip=None).backward(torch.ones(7))
    assert w2.grad.tolist() == [1.0] * 7


# --------------------------------------------------------------------------------------------- LSQ


@pytest.mark.parametrize(("bits", "symmetric"), [(8, True), (4, True), (2, True), (4, False)])
def test_lsq_forward_is_uniform_quantization_with_that_step(bits: int, symmetric: bool) -> None:
    x = _randn(5, 7, seed=11)
    step = torch.tensor(0.1)
    zp = 0
    expected = dequantize(quantize(x, step, zp, bits, symmetric=symmetric), step, zp)
    torch.testing.assert_close(lsq_quantize(x, step, bits, symmetric=symmetric), expected)


def test_lsq_gradients_match_paper_formula_by_hand() -> None:
    # 4-bit signed narrow range: Q_N = Q_P = 7; s = 0.5; v/s = [0.6, -2.4, 10, -20]
    x = torch.tensor([0.3, -1.2, 5.0, -10.0], requires_grad=True)
    step = torch.tensor(0.5, requires_grad=True)
    y = lsq_quantize(x, step, 4)
    torch.testing.assert_close(y, torch.tensor([0.5, -1.0, 3.5, -3.5]), rtol=0, atol=1e-6)
    y.backward(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    # ds: inside round(v/s) - v/s = 0.4, 0.4; above Q_P = 7; below -Q_N = -7; g = 1 / sqrt(4 * 7)
    expected = (1 * 0.4 + 2 * 0.4 + 3 * 7 + 4 * -7) / math.sqrt(4 * 7)
    assert step.grad.item() == pytest.approx(expected, rel=1e-5)
    assert x.grad.tolist() == [1.0, 2.0, 0.0, 0.0]


def test_lsq_per_row_step_gets_per_row_gradient() -> None:
    x = torch.tensor([[0.3, 0.7], [-0.3, 1.6]])
    step = torch.tensor([[0.5], [1.0]], requires_grad=True)
    lsq_quantize(x, step, 8).sum().backward()
    # g = 1 / sqrt(2 * 127); row 0: v = [0.6, 1.4] -> 0.4 - 0.4; row 1: v = [-0.3, 1.6] -> 0.3 + 0.4
    g = 1 / math.sqrt(2 * 127)
    torch.testing.assert_close(step.grad, torch.tensor([[0.0], [0.7 * g]]), rtol=1e-5, atol=1e-6)


def test_lsq_unsigned_clamps_negatives_to_zero() -> None:
    x = torch.tensor([-1.0, 0.26, 100.0], requires_grad=True)
    step = torch.tensor(0.1, requires_grad=True)
    y = lsq_quantize(x, step, 2, symmetric=False)  # Q_N = 0, Q_P = 3
    torch.testing.assert_close(y, torch.tensor([0.0, 0.3, 0.3]))
    y.sum().backward()
    expected = (0.0 + (3 - 2.6) + 3) / math.sqrt(3 * 3)
    assert step.grad.item() == pytest.approx(expected, rel=1e-5)


# --------------------------------------------------------------------------------------------- Quant-Noise


def test_quant_noise_p0_is_identity_and_p1_is_fake_quantize() -> None:
    w = _randn(6, 8, seed=12)
    assert torch.equal(quant_noise(w, 0.0), w)
    assert torch.equal(quant_noise(w, 1.0), fake_quantize(w, 8))


def test_quant_noise_quantizes_whole_blocks_at_rate_p() -> None:
    w = _randn(64, 64, seed=13)
    w_hat = fake_quantize(w, 8)
    out = quant_noise(w, 0.3, block_size=8, generator=torch.Generator().manual_seed(0))
    # (64, 64) -> (64, 8, 8): each block is entirely quantized or entirely kept
    out_b, w_b, w_hat_b = out.reshape(64, 8, 8), w.reshape(64, 8, 8), w_hat.reshape(64, 8, 8)
    quantized = (out_b == w_hat_b).all(-1) & (out_b != w_b).any(-1)
    kept = (out_b == w_b).all(-1)
    assert torch.all(quantized ^ kept)
    assert 0.2 < quantized.float().mean().item() < 0.4


def test_quant_noise_gradient_is_identity() -> None:
    w = _randn(4, 4, seed=14).requires_grad_()
    quant_noise(w, 0.5, generator=torch.Generator().manual_seed(1)).sum().backward()
    torch.testing.assert_close(w.grad, torch.ones(4, 4))


# --------------------------------------------------------------------------------------------- errors


def _raises_with(value: str):
    return pytest.raises(ConfigError, match=value)


@pytest.mark.parametrize("bits", [1, 5, 16, 0, True, 8.0])
def test_unsupported_bits_raise_config_error(bits) -> None:
    x = torch.ones(2, 2)
    with _raises_with(rf"bits must be one of 2, 3, 4, 8 .*got {bits!r}"):
        choose_qparams(x, bits)
    with _raises_with(rf"got {bits!r}"):
        fake_quantize(x, bits)
    with _raises_with(rf"got {bits!r}"):
        lsq_quantize(x, torch.tensor(0.1), bits)
    with _raises_with(rf"got {bits!r}"):
        quantize(x, torch.tensor(0.1), 0, bits)


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_non_positive_group_size_raises_config_error(size) -> None:
    with _raises_with(rf"group_size must be a positive int, got {size!r}"):
        PerGroup(size)


def test_group_size_not_dividing_raises_config_error() -> None:
    with _raises_with(r"group_size 3 must divide .*\(4, 8\)"):
        fake_quantize(torch.ones(4, 8), 8, granularity=PerGroup(3))
    with _raises_with(r"group_size 3 .*\(4, 8\)"):
        quant_noise(torch.ones(4, 8), 0.5, block_size=3)
    with _raises_with(r"group_size must be a positive int, got 0"):
        quant_noise(torch.ones(4, 8), 0.5, block_size=0)


def test_per_row_on_a_vector_raises_config_error() -> None:
    with _raises_with(r"PerRow needs .*got shape \(5,\)"):
        ternarize(torch.ones(5), granularity=PerRow())


def test_bad_granularity_raises_config_error() -> None:
    with _raises_with(r"granularity must be .*got 'per_row'"):
        fake_quantize(torch.ones(2, 2), 8, granularity="per_row")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -1.0, float("nan")])
def test_bad_clip_threshold_eps_and_p_raise_config_error(value) -> None:
    x = torch.ones(2, 2)
    with _raises_with(rf"clip must be a positive finite number, got {value!r}"):
        fake_quantize(x, 8, clip=value)
    with _raises_with(rf"clip .*got {value!r}"):
        ternarize(x, clip=value)
    with _raises_with(rf"clip .*got {value!r}"):
        binarize(x, clip=value)
    with _raises_with(rf"threshold_factor .*got {value!r}"):
        ternary_codes(x, threshold_factor=value)
    with _raises_with(rf"eps .*got {value!r}"):
        choose_qparams(x, 8, eps=value)


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_quant_noise_bad_p_raises_config_error(p: float) -> None:
    with _raises_with(rf"p must be a number in \[0, 1\], got {p!r}"):
        quant_noise(torch.ones(2, 2), p)


def test_config_error_messages_are_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        choose_qparams(torch.ones(2), 1)
    assert "\n" not in str(info.value)
