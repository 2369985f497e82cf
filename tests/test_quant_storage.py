"""Saving and loading quantized (QAT-converted) models: packed codes, bit-exact reload, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from conftest import make_tiny_model
from slimformer.checkpoint import load_model, load_pretrained, save_model
from slimformer.errors import ConfigError, ModelLoadError
from slimformer.models import ModelMeta
from slimformer.quant import (
    ActivationQuantizer,
    BinaryWeight,
    PerGroup,
    PerRow,
    QATConfig,
    QuantizationState,
    QuantizedEmbedding,
    QuantizedLinear,
    TernaryWeight,
    UniformWeight,
    convert_qat_,
    prepare_qat_,
    qat_state,
    quantize_embeddings_,
)
from slimformer.quant.storage import COMPRESSION_FILE, QUANTIZED_WEIGHTS_FILE, restore_quantized_

SCHEMES = {
    "int8": (UniformWeight(8), 8),
    "int4_per_group": (UniformWeight(4, PerGroup(8)), 4),
    "ternary": (TernaryWeight(), 2),
    "ternary_per_row": (TernaryWeight(PerRow(), clip=None), 2),
    "binary": (BinaryWeight(), 1),
}


def _inputs(vocab: int = 100) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, vocab, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _converted(weight_q, *, head: str = "classification", model_type: str = "bert", act=ActivationQuantizer()):
    kw = {"num_labels": 3} if head == "classification" else {}
    model = make_tiny_model(head, model_type, **kw)
    prepare_qat_(model, QATConfig(weight=weight_q, activation=act))
    return convert_qat_(model)


def _outputs(model) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = model(**_inputs())
    return tuple(t for t in (out.logits, out.start_logits, out.end_logits) if t is not None)


@pytest.fixture
def saved_ternary(tmp_path: Path, tiny_tokenizer) -> Path:
    return save_model(_converted(TernaryWeight()), tiny_tokenizer, tmp_path / "tern", ModelMeta(head="classification"))


@pytest.mark.parametrize("name", list(SCHEMES))
@pytest.mark.parametrize("embeddings", [False, True])
def test_save_load_is_bit_exact(tmp_path: Path, tiny_tokenizer, name: str, embeddings: bool) -> None:
    weight_q, bits = SCHEMES[name]
    model = _converted(weight_q)
    if embeddings:
        quantize_embeddings_(model)
    ref = _outputs(model)
    out = save_model(model, tiny_tokenizer, tmp_path / name, ModelMeta(head="classification"))
    loaded = load_model(out).model
    assert qat_state(loaded) is QuantizationState.CONVERTED
    for got, want in zip(_outputs(loaded), ref, strict=True):
        assert torch.equal(got, want)  # atol = 0
    before, after = dict(model.named_modules()), dict(loaded.named_modules())
    quantized = {n for n, m in before.items() if isinstance(m, (QuantizedLinear, QuantizedEmbedding))}
    assert quantized == {n for n, m in after.items() if isinstance(m, (QuantizedLinear, QuantizedEmbedding))}
    for n in quantized:
        assert torch.equal(after[n].weight_codes, before[n].weight_codes)
        assert torch.equal(after[n].weight_scale, before[n].weight_scale)
        assert after[n].weight_q == before[n].weight_q and getattr(after[n], "act_q", None) == getattr(
            before[n], "act_q", None
        )
    # packed on disk at `bits` bits per weight, nothing else holds the weights
    packed = load_file(str(out / QUANTIZED_WEIGHTS_FILE))
    plain = load_file(str(out / "model.safetensors"))
    q = before["hf.bert.encoder.layer.0.attention.self.query"]
    assert packed["bert.encoder.layer.0.attention.self.query.weight_packed"].numel() == 32 * 32 * bits // 8
    assert "bert.encoder.layer.0.attention.self.query.weight" not in plain
    assert torch.equal(plain["bert.encoder.layer.0.attention.self.query.bias"], q.bias)
    assert ("bert.embeddings.word_embeddings.weight" in plain) is not embeddings
    config = json.loads((out / COMPRESSION_FILE).read_text())
    assert config["qat_state"] == "CONVERTED" and config["format_version"] == 1
    record = next(r for r in config["modules"] if r["fqn"] == "bert.encoder.layer.0.attention.self.query")
    assert record["bits"] == bits and record["shape"] == [32, 32] and record["kind"] == "linear"
    assert record["activation"] == {"_type": "ActivationQuantizer", "bits": 8, "clip": None}
    assert len(config["modules"]) == 13 + embeddings  # 6 per layer x 2 + pooler (+ word embeddings)


@pytest.mark.parametrize(("head", "model_type"), [("qa", "roberta"), ("none", "bert")])
def test_other_heads_and_weight_only_round_trip(tmp_path: Path, tiny_tokenizer, head: str, model_type: str) -> None:
    model = _converted(UniformWeight(4), head=head, model_type=model_type, act=None)
    with torch.no_grad():
        ref = model(**_inputs(), capture=None)
    out = save_model(model, tiny_tokenizer, tmp_path / "m", ModelMeta(head=head))
    loaded = load_model(out).model
    with torch.no_grad():
        got = loaded(**_inputs())
    for name in ("logits", "start_logits", "end_logits"):
        if getattr(ref, name) is not None:
            assert torch.equal(getattr(got, name), getattr(ref, name))
    if head == "none":
        assert torch.equal(got.encoder.last_hidden_state, ref.encoder.last_hidden_state)


def test_embeddings_only_model_keeps_state_initialized(tmp_path: Path, tiny_tokenizer) -> None:
    model = quantize_embeddings_(make_tiny_model("classification", num_labels=2), TernaryWeight(PerRow()))
    emb = model.base.embeddings.word_embeddings
    ids = _inputs()["input_ids"]
    assert torch.equal(emb(ids), emb.dequantized_weight()[ids])
    ref = _outputs(model)
    loaded = load_model(save_model(model, tiny_tokenizer, tmp_path / "e", ModelMeta(head="classification"))).model
    assert qat_state(loaded) is QuantizationState.INITIALIZED
    assert torch.equal(_outputs(loaded)[0], ref[0])


@pytest.mark.parametrize("granularity", [PerRow(), PerGroup(8)], ids=repr)
def test_quantized_embedding_lookup_equals_dequantized_table(granularity) -> None:
    torch.manual_seed(0)
    table = nn.Embedding(50, 32)
    emb = QuantizedEmbedding.from_embedding(table, UniformWeight(4, granularity))
    ids = torch.randint(0, 50, (2, 7))
    out = emb(ids)
    assert out.shape == (2, 7, 32)
    assert torch.equal(out, emb.dequantized_weight()[ids])
    assert (out - table.weight[ids]).abs().max() < 0.5 * table.weight.abs().max() / 7 + 1e-6  # half a 4-bit step


def test_quantize_embeddings_twice_raises() -> None:
    model = quantize_embeddings_(make_tiny_model("none"))
    with pytest.raises(ConfigError, match="already quantized"):
        quantize_embeddings_(model)


def test_saving_a_prepared_model_raises(tmp_path: Path, tiny_tokenizer) -> None:
    model = prepare_qat_(make_tiny_model("classification", num_labels=2), QATConfig())
    with pytest.raises(RuntimeError, match="cannot save a model in QAT state PREPARED; .*convert_qat_"):
        save_model(model, tiny_tokenizer, tmp_path / "p", ModelMeta(head="classification"))
    assert not (tmp_path / "p").exists()


# --------------------------------------------------------------------------------------------- bad input


def test_quantized_folder_refuses_plain_loading(saved_ternary: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"holds a quantized model \(compression_config.json.*load_model"):
        load_pretrained(saved_ternary, "classification")


def test_restore_into_already_converted_model_raises(saved_ternary: Path) -> None:
    model = _converted(TernaryWeight())
    tensors = load_file(str(saved_ternary / QUANTIZED_WEIGHTS_FILE))
    config = json.loads((saved_ternary / COMPRESSION_FILE).read_text())
    with pytest.raises(ModelLoadError, match="expected an unquantized Linear, found QuantizedLinear"):
        restore_quantized_(model.hf, tensors, config)


def _edit_config(folder: Path, edit) -> None:
    path = folder / COMPRESSION_FILE
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def _set(config: dict, key: str, value) -> None:
    config["modules"][0][key] = value


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda c: c.update(format_version=99), "format_version 99"),
        (lambda c: c.update(qat_state="PREPARED"), "qat_state 'PREPARED'"),
        (lambda c: _set(c, "fqn", "bert.encoder.layer.9.output.dense"), "no such module"),
        (lambda c: _set(c, "fqn", "bert.encoder.layer.0.attention.output.LayerNorm"), "found LayerNorm"),
        (lambda c: _set(c, "shape", [16, 64]), r"shape \(16, 64\) but the model's is \(32, 32\)"),
        (lambda c: _set(c, "bits", 8), "bits 8 do not match its ternary"),
        (lambda c: _set(c, "weight", {"_type": "UniformWeight", "bits": 5}), "bits must be one of"),
        (lambda c: c["modules"].pop(0), "belong to no recorded quantized module"),
    ],
)
def test_mismatched_compression_config_raises_one_line(saved_ternary: Path, edit, needle: str) -> None:
    _edit_config(saved_ternary, edit)
    with pytest.raises(ModelLoadError, match=needle) as exc:
        load_model(saved_ternary)
    assert "\n" not in str(exc.value)


def _edit_tensors(folder: Path, edit) -> None:
    path = folder / QUANTIZED_WEIGHTS_FILE
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


QUERY = "bert.encoder.layer.0.attention.self.query"


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda t: t.pop(f"{QUERY}.weight_scale"), "weight_packed / weight_scale missing"),
        (lambda t: t.update({f"{QUERY}.weight_packed": t[f"{QUERY}.weight_packed"][:-1]}), "packed bytes do not"),
        (lambda t: t.update({f"{QUERY}.weight_scale": torch.ones(32, 1)}), r"expected float \(1, 1\)"),
        (lambda t: t.update({f"{QUERY}.weight_scale": -torch.ones(1, 1)}), "negative or non-finite"),
        (lambda t: t[f"{QUERY}.weight_packed"].fill_(0b10101010), r"codes outside \[-1, 1\] for ternary"),
    ],
)
def test_tampered_quantized_weights_raise(saved_ternary: Path, edit, needle: str) -> None:
    _edit_tensors(saved_ternary, edit)
    with pytest.raises(ModelLoadError, match=needle):
        load_model(saved_ternary)


def test_corrupt_or_missing_files_raise(saved_ternary: Path) -> None:
    (saved_ternary / QUANTIZED_WEIGHTS_FILE).write_bytes(b"\x00garbage")
    with pytest.raises(ModelLoadError, match="quantized.safetensors: not a readable safetensors file"):
        load_model(saved_ternary)
    (saved_ternary / QUANTIZED_WEIGHTS_FILE).unlink()
    with pytest.raises(ModelLoadError, match="quantized.safetensors: missing"):
        load_model(saved_ternary)


def test_plain_weights_that_do_not_match_raise(saved_ternary: Path) -> None:
    path = saved_ternary / "model.safetensors"
    tensors = load_file(str(path))
    tensors["classifier.weight"] = torch.zeros(5, 32)
    save_file(tensors, str(path))
    with pytest.raises(ModelLoadError, match=r"model.safetensors: .*classifier.weight"):
        load_model(saved_ternary)
    tensors.pop("classifier.weight")
    save_file(tensors, str(path))
    with pytest.raises(ModelLoadError, match=r"missing \['classifier.weight'\]"):
        load_model(saved_ternary)
