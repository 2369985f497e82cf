"""Low-bit QAT modules and the prepare/convert lifecycle on tiny random encoders (METHODS.md §4(b))."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import make_tiny_model
from slimformer.errors import ConfigError
from slimformer.models import Capture
from slimformer.quant import (
    ActivationQuantizer,
    BinaryWeight,
    FakeQuantLinear,
    PerGroup,
    PerRow,
    PerTensor,
    QATConfig,
    QuantizationState,
    QuantizedLinear,
    TernaryWeight,
    UniformWeight,
    binarize,
    convert_qat_,
    fake_quantize,
    prepare_qat_,
    qat_state,
    ternarize,
)

WEIGHT_QUANTIZERS = {
    "int8_per_row": UniformWeight(8, PerRow()),
    "int4_per_tensor": UniformWeight(4, PerTensor()),
    "int4_per_group_clip": UniformWeight(4, PerGroup(8), clip=0.05),
    "ternary": TernaryWeight(),
    "ternary_per_row": TernaryWeight(PerRow(), clip=None),
    "binary": BinaryWeight(),
}


def _inputs(batch: int = 3, seq: int = 7, vocab: int = 100) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _linear(bias: bool = True) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(16, 8, bias=bias)


# ------------------------------------------------------------------------------------------- modules


@pytest.mark.parametrize("bias", [True, False])
def test_from_linear_to_linear_round_trip_is_exact(bias: bool) -> None:
    linear = _linear(bias)
    ref_w = linear.weight.detach().clone()
    fq = FakeQuantLinear.from_linear(linear, TernaryWeight(), ActivationQuantizer())
    assert list(dict(fq.named_parameters())) == list(dict(linear.named_parameters()))
    back = fq.to_linear()
    assert type(back) is nn.Linear and back.in_features == 16 and back.out_features == 8
    assert torch.equal(back.weight, ref_w)
    assert (back.bias is None) if not bias else torch.equal(back.bias, linear.bias)
    x = torch.randn(2, 5, 16)
    assert torch.equal(back(x), linear(x))


@pytest.mark.parametrize("name", list(WEIGHT_QUANTIZERS))
def test_fake_quant_linear_matches_primitives(name: str) -> None:
    wq = WEIGHT_QUANTIZERS[name]
    linear = _linear()
    fq = FakeQuantLinear.from_linear(linear, wq, ActivationQuantizer(8, clip=2.5))
    x = 2 * torch.randn(2, 5, 16)  # (B, T, in); some |x| > 2.5
    w = linear.weight
    if isinstance(wq, UniformWeight):
        w_hat = fake_quantize(w, wq.bits, granularity=wq.granularity, clip=wq.clip)
    elif isinstance(wq, TernaryWeight):
        w_hat = ternarize(w, granularity=wq.granularity, clip=wq.clip)
    else:
        w_hat = binarize(w, wq.granularity)
    expected = F.linear(fake_quantize(x, 8, granularity=PerTensor(), clip=2.5), w_hat, linear.bias)
    out = fq(x)
    assert out.shape == (2, 5, 8)
    assert torch.equal(out, expected)
    codes, scale = wq.encode(w)
    assert codes.dtype == torch.int8 and codes.shape == w.shape
    assert torch.equal(wq.decode(codes, scale), w_hat)


def test_weight_only_fake_quant_linear_leaves_input_unquantized() -> None:
    linear = _linear()
    fq = FakeQuantLinear.from_linear(linear, UniformWeight(8), None)
    x = torch.randn(4, 16)
    assert torch.equal(fq(x), F.linear(x, fake_quantize(linear.weight, 8, granularity=PerRow()), linear.bias))


def test_quantized_linear_code_ranges() -> None:
    w = _linear().weight
    ranges = {"int8_per_row": 127, "int4_per_tensor": 7, "ternary": 1, "binary": 1}
    for name, qmax in ranges.items():
        ql = QuantizedLinear.from_fake_quant(FakeQuantLinear.from_linear(_linear(), WEIGHT_QUANTIZERS[name]))
        assert ql.weight_codes.dtype == torch.int8 and ql.weight_codes.abs().max() == qmax
        assert {n for n, _ in ql.named_buffers()} == {"weight_codes", "weight_scale"}
    binary = QuantizedLinear.from_fake_quant(FakeQuantLinear.from_linear(_linear(), BinaryWeight()))
    assert set(binary.weight_codes.unique().tolist()) == {-1, 1}
    assert UniformWeight(8).encode(w)[1].shape == (8, 1)


# ------------------------------------------------------------------------------------------- prepare


@pytest.mark.parametrize(
    ("model_type", "quantize_pooler", "expected"),
    [("bert", True, 6 * 2 + 1), ("bert", False, 6 * 2), ("roberta", True, 6 * 2)],  # RoBERTa clf has no pooler
)
def test_prepare_swaps_exactly_the_encoder_linears(model_type: str, quantize_pooler: bool, expected: int) -> None:
    model = make_tiny_model("classification", model_type, num_labels=2)
    keys = list(model.state_dict())
    prepare_qat_(model, QATConfig(quantize_pooler=quantize_pooler))
    fake = {n for n, m in model.named_modules() if isinstance(m, FakeQuantLinear)}
    assert len(fake) == expected
    per_layer = {n.split("layer.")[1].split(".", 1)[1] for n in fake if ".layer." in n}
    assert per_layer == {
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    }
    assert all("classifier" not in n for n in fake)
    remaining = [n for n, m in model.named_modules() if type(m) is nn.Linear]
    assert remaining and all("classifier" in n or "pooler" in n for n in remaining)
    assert list(model.state_dict()) == keys  # same parameter names as nn.Linear
    assert qat_state(model) is QuantizationState.PREPARED


def test_prepare_filter_fn_restricts_targets() -> None:
    model = make_tiny_model("classification", num_labels=2)
    prepare_qat_(model, QATConfig(filter_fn=lambda m, fqn: "attention.self" in fqn))
    assert sum(isinstance(m, FakeQuantLinear) for m in model.modules()) == 3 * 2


def test_prepared_model_forward_with_capture_calls_swapped_modules() -> None:
    model = make_tiny_model("classification", num_labels=2)
    fp = model(**_inputs()).logits
    prepare_qat_(model, QATConfig())
    calls: list[str] = []
    for name, m in model.named_modules():
        if isinstance(m, FakeQuantLinear):
            m.register_forward_hook(lambda mod, args, out, name=name: calls.append(name))
    out = model(**_inputs(), capture=Capture.all())
    assert len(calls) == 13 and len(set(calls)) == 13
    assert out.logits.shape == (3, 2) and len(out.encoder.hidden_states) == 3 and len(out.encoder.attentions) == 2
    assert torch.isfinite(out.logits).all() and not torch.equal(out.logits, fp)


def test_gradients_flow_through_prepared_model() -> None:
    model = make_tiny_model("classification", num_labels=2)
    prepare_qat_(model, QATConfig(weight=TernaryWeight(), activation=ActivationQuantizer(8, clip=2.5)))
    model.train()
    out = model(**_inputs(), labels=torch.tensor([0, 1, 1]))
    out.loss.backward()
    for name, m in model.named_modules():
        if isinstance(m, FakeQuantLinear):
            assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0, name


# ------------------------------------------------------------------------------------------- convert


@pytest.mark.parametrize("name", list(WEIGHT_QUANTIZERS))
@pytest.mark.parametrize("head", ["classification", "qa"])
def test_convert_output_equals_prepare_output_exactly(name: str, head: str) -> None:
    model = make_tiny_model(head, num_labels=2) if head == "classification" else make_tiny_model(head)
    prepare_qat_(model, QATConfig(weight=WEIGHT_QUANTIZERS[name], activation=ActivationQuantizer(8, clip=2.5)))
    model.eval()
    with torch.no_grad():
        prepared = model(**_inputs(), capture=Capture.of("hidden_states"))
        convert_qat_(model)
        converted = model(**_inputs(), capture=Capture.of("hidden_states"))
    assert qat_state(model) is QuantizationState.CONVERTED
    assert not any(isinstance(m, FakeQuantLinear) for m in model.modules())
    assert sum(isinstance(m, QuantizedLinear) for m in model.modules()) == (13 if head == "classification" else 12)
    for a, b in zip(prepared.encoder.hidden_states, converted.encoder.hidden_states, strict=True):
        assert torch.equal(a, b)
    logits = ("logits",) if head == "classification" else ("start_logits", "end_logits")
    for key in logits:
        assert torch.equal(prepared[key], converted[key])


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("steps", "action", "state"),
    [
        ((), "convert", "INITIALIZED"),
        (("prepare",), "prepare", "PREPARED"),
        (("prepare", "convert"), "convert", "CONVERTED"),
        (("prepare", "convert"), "prepare", "CONVERTED"),
    ],
)
def test_illegal_transitions_raise_naming_both_states(steps: tuple[str, ...], action: str, state: str) -> None:
    model = make_tiny_model("classification", num_labels=2)
    run = {"prepare": lambda: prepare_qat_(model, QATConfig()), "convert": lambda: convert_qat_(model)}
    for step in steps:
        run[step]()
    needed = "INITIALIZED" if action == "prepare" else "PREPARED"
    with pytest.raises(RuntimeError, match=rf"^cannot {action} a model in QAT state {state}; .* {needed}$") as exc:
        run[action]()
    assert "\n" not in str(exc.value)
    assert qat_state(model).value == state  # a refused transition changes nothing


@pytest.mark.parametrize(
    "build",
    [
        lambda: UniformWeight(bits=16),
        lambda: UniformWeight(bits=1),
        lambda: UniformWeight(bits=True),
        lambda: UniformWeight(8, granularity="per_row"),
        lambda: TernaryWeight(clip=-1.0),
        lambda: TernaryWeight(threshold_factor=0.0),
        lambda: BinaryWeight(granularity=None),
        lambda: ActivationQuantizer(bits=5),
        lambda: ActivationQuantizer(clip=0.0),
        lambda: QATConfig(weight="ternary"),
        lambda: QATConfig(weight=UniformWeight(), activation=8),
        lambda: QATConfig(filter_fn="query"),
        lambda: prepare_qat_(make_tiny_model("classification", num_labels=2), {"weight": "ternary"}),
        lambda: prepare_qat_(nn.Sequential(nn.Linear(2, 2)), QATConfig()),
        lambda: prepare_qat_(make_tiny_model("classification", num_labels=2), QATConfig(filter_fn=lambda m, n: False)),
    ],
)
def test_bad_quantizer_or_config_raises_config_error(build) -> None:
    with pytest.raises(ConfigError) as exc:
        build()
    assert "\n" not in str(exc.value)


# ------------------------------------------------------------------------------- quantized embeddings (QAT)

EMBEDDING_QUANTIZERS = {
    "int8-row": UniformWeight(8, PerRow()),
    "int4-row": UniformWeight(4, PerRow()),
    "ternary-row": TernaryWeight(PerRow()),
    "binary-group": BinaryWeight(PerGroup(8)),
}


@pytest.mark.parametrize("name", list(EMBEDDING_QUANTIZERS))
def test_fake_quant_embedding_rows_equal_the_quantized_table(name: str) -> None:
    """Quantizing only the looked-up rows equals looking rows up in the quantized table (row-local scales)."""
    from slimformer.quant import FakeQuantEmbedding

    q = EMBEDDING_QUANTIZERS[name]
    torch.manual_seed(0)
    emb = nn.Embedding(50, 32, padding_idx=0)
    fq = FakeQuantEmbedding.from_embedding(emb, q)
    assert fq.weight is emb.weight  # shared Parameter: same state-dict key, same optimizer entry
    ids = torch.tensor([[3, 7, 7, 0], [49, 1, 2, 3]])
    table = q.fake_quantize(emb.weight)  # the whole table, then the lookup
    torch.testing.assert_close(fq(ids), F.embedding(ids, table), rtol=0, atol=0)
    assert torch.equal(fq.to_quantized()(ids), fq(ids))
    fq(ids).pow(2).sum().backward()  # STE: the looked-up rows get gradient, others (and padding) none
    grad_rows = emb.weight.grad.abs().sum(1) > 0
    assert grad_rows[[1, 2, 3, 7, 49]].all() and not grad_rows[[0, 4, 5, 48]].any()


def test_qat_with_a_trained_embedding_table_converts_exactly() -> None:
    from slimformer.quant import FakeQuantEmbedding, QuantizedEmbedding

    model = make_tiny_model("classification", num_labels=2)
    cfg = QATConfig(weight=TernaryWeight(), embedding=UniformWeight(4, PerRow()))
    prepare_qat_(model, cfg)
    assert isinstance(model.base.embeddings.word_embeddings, FakeQuantEmbedding)
    model.eval()
    with torch.no_grad():
        prepared = model(**_inputs()).logits
        convert_qat_(model)
        converted = model(**_inputs()).logits
    assert isinstance(model.base.embeddings.word_embeddings, QuantizedEmbedding)
    assert torch.equal(prepared, converted)


def test_per_tensor_embedding_quantizer_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"embedding must be a weight quantizer with PerRow\(\) or PerGroup"):
        QATConfig(embedding=UniformWeight(8, PerTensor()))
    with pytest.raises(ConfigError, match="embedding must be a weight quantizer"):
        QATConfig(embedding="int8")
