"""Distillation losses against hand-computed values and independent loop implementations."""

from __future__ import annotations

import math

import pytest
import torch

from slimformer.distill import (
    LOSSES,
    attention_map_kl,
    attention_output_mse,
    attention_score_mse,
    context_mse,
    hidden_mse,
    kl_div,
    logits_kd,
    minilm_attention_kl,
    minilm_value_relation_kl,
    prediction_loss,
    sdq_attention_kl,
    soft_cross_entropy,
    unified_attention_loss,
    unified_attention_loss_from_outputs,
)
from slimformer.errors import ConfigError
from slimformer.models.encoder import EncoderOutput

FMIN = torch.finfo(torch.float32).min

# p_T = (0.8, 0.2), p_S = (0.5, 0.5): an asymmetric pair.
KL_TS = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)  # KL(p_T || p_S) ~ 0.19274
KL_ST = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)  # KL(p_S || p_T) ~ 0.22314


def _t_logits() -> torch.Tensor:
    return torch.tensor([[math.log(0.8), math.log(0.2)]])


def _s_logits() -> torch.Tensor:
    return torch.zeros(1, 2)


# ---------------------------------------------------------------- KL helper / logits KD


def test_kl_directions_differ_and_match_their_formulas() -> None:
    ts = kl_div(_t_logits(), _s_logits(), direction="teacher_student")
    st = kl_div(_t_logits(), _s_logits(), direction="student_teacher")
    assert ts.item() == pytest.approx(KL_TS, abs=1e-6)
    assert st.item() == pytest.approx(KL_ST, abs=1e-6)
    assert abs(ts.item() - st.item()) > 0.02


def test_student_teacher_equals_lat_official_kldivloss() -> None:
    z_full, z_sub = torch.randn(4, 3), torch.randn(4, 3)
    lat = torch.nn.KLDivLoss(reduction="batchmean")(torch.log_softmax(z_full, -1), torch.softmax(z_sub, -1))
    ours = kl_div(z_full, z_sub, direction="student_teacher")
    assert ours.item() == pytest.approx(lat.item(), abs=1e-6)


def test_kl_reductions_and_row_mask() -> None:
    # row 0: KL_TS, row 1: identical distributions -> 0
    t = torch.cat([_t_logits(), torch.tensor([[1.0, 2.0]])])
    s = torch.cat([_s_logits(), torch.tensor([[1.0, 2.0]])])
    kw = {"direction": "teacher_student"}
    assert kl_div(t, s, **kw).item() == pytest.approx(KL_TS / 2, abs=1e-6)  # batchmean
    assert kl_div(t, s, reduction="sum", **kw).item() == pytest.approx(KL_TS, abs=1e-6)
    rows = kl_div(t, s, reduction="none", **kw)
    assert rows.shape == (2,) and rows[0].item() == pytest.approx(KL_TS, abs=1e-6) and abs(rows[1].item()) < 1e-6
    mask = torch.tensor([1.0, 0.0])
    assert kl_div(t, s, mask=mask, reduction="mean", **kw).item() == pytest.approx(KL_TS, abs=1e-6)
    mask = torch.tensor([0.0, 1.0])
    assert abs(kl_div(t, s, mask=mask, reduction="sum", **kw).item()) < 1e-6


def test_temperature_scaling() -> None:
    tau = 2.0
    zt, zs = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    pt = [math.e / (math.e + 1), 1 / (math.e + 1)]  # softmax([1, 0])
    expected = sum(p * math.log(p / 0.5) for p in pt)
    got = kl_div(zt, zs, direction="teacher_student", temperature=tau)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    scaled = kl_div(zt, zs, direction="teacher_student", temperature=tau, scale_by_temperature_squared=True)
    assert scaled.item() == pytest.approx(4 * expected, abs=1e-6)
    kd = logits_kd(zs, zt, temperature=tau, scale_by_temperature_squared=True)
    assert kd.item() == pytest.approx(4 * expected, abs=1e-6)


def test_kl_with_masked_teacher_logits_is_finite() -> None:
    zt = torch.tensor([[0.0, float("-inf"), FMIN]])
    zs = torch.zeros(1, 3, requires_grad=True)
    loss = kl_div(zt, zs, direction="teacher_student")
    loss.backward()
    assert loss.item() == pytest.approx(math.log(3), abs=1e-6)  # p_T = (1, 0, 0), p_S uniform
    assert torch.isfinite(zs.grad).all()


def test_kl_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="direction"):
        kl_div(_t_logits(), _s_logits(), direction="forward")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="reduction"):
        kl_div(_t_logits(), _s_logits(), direction="teacher_student", reduction="avg")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="temperature"):
        kl_div(_t_logits(), _s_logits(), direction="teacher_student", temperature=0.0)
    with pytest.raises(ValueError, match="shape|logits"):
        kl_div(torch.zeros(1, 3), _s_logits(), direction="teacher_student")


def test_logits_kd_span_is_mean_of_start_and_end() -> None:
    start_t, end_t = _t_logits(), torch.zeros(1, 2)
    start_s, end_s = _s_logits(), torch.zeros(1, 2)
    got = logits_kd((start_s, end_s), (start_t, end_t), direction="student_teacher")
    assert got.item() == pytest.approx(KL_ST / 2, abs=1e-6)
    with pytest.raises(ValueError, match="span"):
        logits_kd((start_s, end_s), start_t)


def test_soft_cross_entropy_and_prediction_loss() -> None:
    # -(0.8 ln 0.5 + 0.2 ln 0.5) = ln 2
    assert soft_cross_entropy(_s_logits(), _t_logits()).item() == pytest.approx(math.log(2), abs=1e-6)
    assert prediction_loss(_s_logits(), _t_logits()).item() == pytest.approx(math.log(2), abs=1e-6)
    # regression (num_labels == 1): MSE = ((1-3)^2 + (2-2)^2) / 2 = 2
    s, t = torch.tensor([[1.0], [2.0]]), torch.tensor([[3.0], [2.0]])
    assert prediction_loss(s, t).item() == pytest.approx(2.0)
    # span QA: mean of the start and end soft CE; end: uniform teacher vs uniform student -> ln 2
    span = soft_cross_entropy((_s_logits(), torch.zeros(1, 2)), (_t_logits(), torch.zeros(1, 2)))
    assert span.item() == pytest.approx(math.log(2), abs=1e-6)


# ---------------------------------------------------------------- layer-wise MSE losses


def test_hidden_mse_with_layer_map() -> None:
    student = [torch.zeros(1, 2, 3), torch.ones(1, 2, 3)]
    teacher = [torch.zeros(1, 2, 3), torch.ones(1, 2, 3), torch.zeros(1, 2, 3), 3 * torch.ones(1, 2, 3)]
    # (0 -> 1): mean (0-1)^2 = 1; (1 -> 3): mean (1-3)^2 = 4
    assert hidden_mse(student, teacher, layer_map={0: 1, 1: 3}).item() == pytest.approx(5.0)
    assert hidden_mse(student, teacher[:2]).item() == pytest.approx(0.0)


def test_hidden_mse_errors() -> None:
    student = [torch.zeros(1, 2, 3)] * 2
    teacher = [torch.zeros(1, 2, 3)] * 4
    with pytest.raises(ConfigError, match=r"2 layers.*4.*layer_map"):
        hidden_mse(student, teacher)
    with pytest.raises(ValueError, match="teacher index 4"):
        hidden_mse(student, teacher, layer_map={0: 4})
    with pytest.raises(ConfigError, match="student index 5"):
        hidden_mse(student, teacher, layer_map={5: 0})
    with pytest.raises(ConfigError, match="student index -1"):
        hidden_mse(student, teacher, layer_map={-1: 0})
    with pytest.raises(ValueError, match="shape"):
        hidden_mse([torch.zeros(1, 2, 3)], [torch.zeros(1, 2, 4)])


def test_attention_score_mse_zeroes_masked_entries() -> None:
    s = torch.tensor([[[[1.0, FMIN], [2.0, FMIN]]]])
    t = torch.tensor([[[[3.0, FMIN], [2.0, -10000.0]]]])
    # zeroed: s = [[1, 0], [2, 0]], t = [[3, 0], [2, 0]] -> MSE = (2^2) / 4 = 1
    got = attention_score_mse(s, t)
    assert torch.isfinite(got) and got.item() == pytest.approx(1.0)
    assert attention_score_mse([s, s], [t, t]).item() == pytest.approx(2.0)  # summed over layers


def test_attention_output_and_context_mse() -> None:
    s, t = torch.zeros(1, 2, 4), torch.full((1, 2, 4), 2.0)
    assert attention_output_mse([s, s], [t, s]).item() == pytest.approx(4.0)
    c_s, c_t = torch.zeros(1, 2, 3, 2), torch.ones(1, 2, 3, 2)
    assert context_mse([c_s], [c_t]).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        context_mse([c_s], [torch.ones(1, 3, 3, 2)])


# ---------------------------------------------------------------- attention-map KL (L_map)


def _ref_map_kl(student: list[torch.Tensor], teacher: list[torch.Tensor], mask: list[list[int]]) -> float:
    """Straight loop over layers, batch, heads, queries and keys (METHODS.md §4(b))."""
    total = 0.0
    for s_l, t_l in zip(student, teacher):
        b_n, h_n, n, _ = s_l.shape
        layer = 0.0
        for b in range(b_n):
            valid = [i for i in range(n) if mask[b][i]]
            for h in range(h_n):
                acc = 0.0
                for q in valid:
                    for k in valid:
                        a_t = max(float(t_l[b, h, q, k]), 1e-8)
                        a_s = max(float(s_l[b, h, q, k]), 1e-8)
                        acc += a_t * (math.log(a_t) - math.log(a_s))
                layer += acc / len(valid)
        total += layer / (b_n * h_n)
    return total


def test_attention_map_kl_hand_computed_1x1x2x2() -> None:
    t = torch.tensor([[[[0.8, 0.2], [0.3, 0.7]]]])
    s = torch.tensor([[[[0.5, 0.5], [0.6, 0.4]]]])
    row1 = 0.3 * math.log(0.3 / 0.6) + 0.7 * math.log(0.7 / 0.4)
    expected = (KL_TS + row1) / 2
    assert attention_map_kl(s, t).item() == pytest.approx(expected, abs=1e-6)
    assert attention_map_kl([s, s], [t, t], torch.ones(1, 2)).item() == pytest.approx(2 * expected, abs=1e-6)
    assert sdq_attention_kl([s, s], [t, t]).item() == pytest.approx(expected, abs=1e-6)
    assert minilm_attention_kl(s, t).item() == pytest.approx(expected, abs=1e-6)


def test_attention_map_kl_ignores_padded_queries_and_keys() -> None:
    t = torch.tensor([[[[0.8, 0.2], [0.3, 0.7]]]])
    s = torch.tensor([[[[0.5, 0.5], [0.6, 0.4]]]])
    unpadded = attention_map_kl(s, t).item()
    t_pad = torch.tensor([[[[0.8, 0.2, 0.0], [0.3, 0.7, 0.0], [0.1, 0.1, 0.8]]]])
    s_pad = torch.tensor([[[[0.5, 0.5, 0.0], [0.6, 0.4, 0.0], [0.9, 0.05, 0.05]]]])
    mask = torch.tensor([[1, 1, 0]])
    assert attention_map_kl(s_pad, t_pad, mask).item() == pytest.approx(unpadded, abs=1e-6)
    # garbage in the padded row and column changes nothing
    t_pad2, s_pad2 = t_pad.clone(), s_pad.clone()
    t_pad2[..., 2, :] = torch.tensor([0.7, 0.2, 0.1])
    s_pad2[..., :, 2] = 0.3
    assert attention_map_kl(s_pad2, t_pad2, mask).item() == pytest.approx(unpadded, abs=1e-6)
    # without the mask the padded row counts
    assert attention_map_kl(s_pad2, t_pad2).item() != pytest.approx(unpadded, abs=1e-3)


def test_attention_map_kl_matches_loop_reference() -> None:
    g = torch.Generator().manual_seed(0)
    mask = [[1, 1, 1, 1], [1, 1, 0, 0]]
    student = [torch.softmax(torch.randn(2, 2, 4, 4, generator=g), -1) for _ in range(2)]
    teacher = [torch.softmax(torch.randn(2, 2, 4, 4, generator=g), -1) for _ in range(2)]
    got = attention_map_kl(student, teacher, torch.tensor(mask))
    assert got.item() == pytest.approx(_ref_map_kl(student, teacher, mask), abs=1e-5)


def test_attention_map_kl_errors() -> None:
    a = torch.full((1, 2, 3, 3), 1 / 3)
    with pytest.raises(ValueError, match="attention_mask"):
        attention_map_kl(a, a, torch.ones(1, 4))
    with pytest.raises(ValueError, match="shape"):
        attention_map_kl(a, torch.full((1, 3, 3, 3), 1 / 3))
    with pytest.raises(ConfigError, match="layer_reduction"):
        attention_map_kl(a, a, layer_reduction="max")


def test_unified_attention_loss() -> None:
    assert unified_attention_loss(torch.tensor(2.0), torch.tensor(3.0), beta_map=0.5, beta_out=2.0).item() == 7.0
    t_probs = torch.tensor([[[[0.8, 0.2], [0.3, 0.7]]]])
    s_probs = torch.tensor([[[[0.5, 0.5], [0.6, 0.4]]]])
    mask = torch.ones(1, 2)

    def out(probs: torch.Tensor, o: float) -> EncoderOutput:
        return EncoderOutput(
            last_hidden_state=torch.zeros(1, 2, 4),
            attention_mask=mask,
            attentions=[probs],
            attention_outputs=[torch.full((1, 2, 4), o)],
        )

    got = unified_attention_loss_from_outputs(out(s_probs, 0.0), out(t_probs, 1.0), mask, beta_map=1.0, beta_out=0.5)
    expected = attention_map_kl(s_probs, t_probs).item() + 0.5 * 1.0
    assert got.item() == pytest.approx(expected, abs=1e-6)
    no_out = EncoderOutput(last_hidden_state=torch.zeros(1, 2, 4), attention_mask=mask, attentions=[s_probs])
    with pytest.raises(ValueError, match="attention_outputs"):
        unified_attention_loss_from_outputs(no_out, out(t_probs, 1.0), mask)
    only_map = unified_attention_loss_from_outputs(no_out, out(t_probs, 1.0), mask, beta_out=0.0)
    assert only_map.item() == pytest.approx(attention_map_kl(s_probs, t_probs).item(), abs=1e-6)


# ---------------------------------------------------------------- MiniLM value relation


def _ref_value_relation_kl(vs: torch.Tensor, vt: torch.Tensor, mask: list[list[int]]) -> float:
    """Loop implementation of MiniLM's value-relation KL, KL(VR_T || VR_S), masked keys/queries excluded."""

    def relation(v: torch.Tensor, b: int, h: int, q: int, valid: list[int]) -> list[float]:
        d = v.shape[-1]
        logits = [float(v[b, h, q] @ v[b, h, k]) / math.sqrt(d) for k in valid]
        m = max(logits)
        z = sum(math.exp(x - m) for x in logits)
        return [math.exp(x - m) / z for x in logits]

    b_n, h_n, n, _ = vs.shape
    total = 0.0
    for b in range(b_n):
        valid = [i for i in range(n) if mask[b][i]]
        for h in range(h_n):
            acc = 0.0
            for q in valid:
                p_t, p_s = relation(vt, b, h, q, valid), relation(vs, b, h, q, valid)
                acc += sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
            total += acc / len(valid)
    return total / (b_n * h_n)


def test_value_relation_zero_for_identical_and_positive_otherwise() -> None:
    g = torch.Generator().manual_seed(1)
    v = torch.randn(2, 2, 3, 4, generator=g)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    assert abs(minilm_value_relation_kl(v, v.clone(), mask).item()) < 1e-6
    other = torch.randn(2, 2, 3, 4, generator=g)
    assert minilm_value_relation_kl(other, v, mask).item() > 1e-3


def test_value_relation_matches_loop_reference_with_different_head_sizes() -> None:
    g = torch.Generator().manual_seed(2)
    vs, vt = torch.randn(2, 2, 4, 3, generator=g), torch.randn(2, 2, 4, 5, generator=g)
    mask = [[1, 1, 1, 0], [1, 1, 0, 0]]
    got = minilm_value_relation_kl(vs, vt, torch.tensor(mask))
    assert got.item() == pytest.approx(_ref_value_relation_kl(vs, vt, mask), abs=1e-5)
    # garbage at padded positions changes nothing
    vs2 = vs.clone()
    vs2[1, :, 2:] = 100.0
    assert minilm_value_relation_kl(vs2, vt, torch.tensor(mask)).item() == pytest.approx(got.item(), abs=1e-5)


def test_minilm_head_count_mismatch_names_both() -> None:
    with pytest.raises(ValueError, match=r"2 heads.*3"):
        minilm_value_relation_kl(torch.zeros(1, 2, 3, 4), torch.zeros(1, 3, 3, 4))
    with pytest.raises(ValueError, match=r"2 heads.*3"):
        minilm_attention_kl(torch.full((1, 2, 3, 3), 1 / 3), torch.full((1, 3, 3, 3), 1 / 3))


# ---------------------------------------------------------------- gradients and registry


def _grad_cases():
    mask = torch.tensor([[1, 1, 0]])
    return [
        ("kl_ts", lambda s, t: kl_div(t, s, direction="teacher_student"), (2, 3)),
        ("kl_st", lambda s, t: kl_div(t, s, direction="student_teacher"), (2, 3)),
        ("soft_ce", soft_cross_entropy, (2, 3)),
        ("hidden", lambda s, t: hidden_mse([s], [t]), (1, 3, 4)),
        ("score", lambda s, t: attention_score_mse(s, t), (1, 2, 3, 3)),
        ("map", lambda s, t: attention_map_kl(s.softmax(-1), t.softmax(-1), mask), (1, 2, 3, 3)),
        ("minilm_at", lambda s, t: minilm_attention_kl(s.softmax(-1), t.softmax(-1), mask), (1, 2, 3, 3)),
        ("minilm_vr", lambda s, t: minilm_value_relation_kl(s, t, mask), (1, 2, 3, 4)),
        ("out", lambda s, t: attention_output_mse(s, t), (1, 3, 4)),
    ]


@pytest.mark.parametrize("name,fn,shape", _grad_cases(), ids=[c[0] for c in _grad_cases()])
def test_gradients_reach_student_only(name: str, fn, shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(4)
    s = torch.randn(*shape, generator=g).requires_grad_()
    t = torch.randn(*shape, generator=g).requires_grad_()
    loss = fn(s, t)
    loss.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert t.grad is None


def test_registry() -> None:
    assert LOSSES["attention_map_kl"] is attention_map_kl
    assert LOSSES["hidden_mse"] is hidden_mse
    assert LOSSES["minilm_value_relation_kl"] is minilm_value_relation_kl
    assert all(callable(f) and f.__doc__ for f in LOSSES.values())
