"""Factorising a model in place (SVD / AE), int8 code tables, save/load from config.json, ONNX parity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import make_tiny_model
from slimformer.checkpoint import load_model, load_pretrained, save_model
from slimformer.embeddings import RECORD_KEY, AutoencoderConfig, FactorizedEmbedding, factorize_embeddings_
from slimformer.errors import ConfigError, ModelLoadError
from slimformer.models.load import ModelMeta

_AE = AutoencoderConfig(epochs=2, extra_epochs=1, learning_rate=1e-2)


def _ids(model) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, model.config.vocab_size, (2, 7), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("method", ["svd", "ae"])
def test_factorize_records_structure_and_freezes_the_table(method: str) -> None:
    model = make_tiny_model("classification")
    module, info = factorize_embeddings_(model, method, 8, autoencoder=_AE)
    assert model.base.embeddings.word_embeddings is module
    record = getattr(model.hf.config, RECORD_KEY)
    assert record["rank"] == 8 and record["bias"] == (method == "ae") and record["trainable_table"] is False
    assert not module.codes.weight.requires_grad and module.decoder.weight.requires_grad
    v, d = model.config.vocab_size, model.config.hidden_size
    assert info.compression_ratio == pytest.approx(v * d / (v * 8 + 8 * d))
    assert info.factorized_parameters_with_bias == v * 8 + 8 * d + (d if method == "ae" else 0)
    assert (len(info.epoch_losses) == 3) == (method == "ae")


def test_int8_table_is_close_and_frozen() -> None:
    model = make_tiny_model("classification")
    module, _ = factorize_embeddings_(model, "svd", 8)
    ref = module.table().detach().clone()
    module.quantize_table_()
    assert module.codes_q.dtype == torch.int8 and not hasattr(module, "codes")
    err = (module.table() - ref).abs()
    assert (err <= module.codes_scale / 2 + 1e-7).all()  # at most half a row's scale per element
    with pytest.raises(ConfigError, match="already stored in int8"):
        module.quantize_table_()


@pytest.mark.parametrize("method, int8", [("svd", False), ("ae", False), ("ae", True)])
def test_save_load_round_trip_is_exact(tmp_path: Path, tiny_tokenizer, method: str, int8: bool) -> None:
    model = make_tiny_model("classification", num_labels=2)
    factorize_embeddings_(model, method, 6, autoencoder=_AE, int8_table=int8, trainable_table=True)
    with torch.no_grad():
        ref = model(**_ids(model)).logits
    save_model(model, tiny_tokenizer, tmp_path / "m", ModelMeta(head="classification"))
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg[RECORD_KEY]["int8_table"] is int8
    loaded = load_model(tmp_path / "m").model.eval()
    emb = loaded.base.embeddings.word_embeddings
    assert isinstance(emb, FactorizedEmbedding) and emb.rank == 6
    assert emb.trainable_table is (not int8)  # an int8 table is never trained
    with torch.no_grad():
        torch.testing.assert_close(loaded(**_ids(loaded)).logits, ref, atol=0, rtol=0)


@pytest.mark.parametrize("head", ["classification", "qa"])  # SST-2-style and SQuAD-style fine-tuning start here
def test_new_head_on_a_factorised_base_keeps_the_table(tmp_path: Path, tiny_tokenizer, head: str) -> None:
    base = make_tiny_model("none")
    module, _ = factorize_embeddings_(base, "svd", 5)
    save_model(base, tiny_tokenizer, tmp_path / "b", ModelMeta(head="none"))
    labels = {"num_labels": 2} if head == "classification" else {}
    clf, _ = load_pretrained(tmp_path / "b", head, new_head=True, **labels)
    emb = clf.base.embeddings.word_embeddings
    assert isinstance(emb, FactorizedEmbedding) and not emb.codes.weight.requires_grad
    torch.testing.assert_close(emb.codes.weight, module.codes.weight, atol=0, rtol=0)


def test_factorised_weights_without_the_record_are_refused(tmp_path: Path, tiny_tokenizer) -> None:
    model = make_tiny_model("classification", num_labels=2)
    factorize_embeddings_(model, "svd", 6)
    save_model(model, tiny_tokenizer, tmp_path / "m", ModelMeta(head="classification"))
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg[RECORD_KEY]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="factorised word-embedding table .* no 'slimformer_factorized"):
        load_model(tmp_path / "m")


def test_record_without_factorised_weights_is_refused(tmp_path: Path, tiny_tokenizer) -> None:
    model = make_tiny_model("classification", num_labels=2)
    save_model(model, tiny_tokenizer, tmp_path / "m", ModelMeta(head="classification"))
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg[RECORD_KEY] = FactorizedEmbedding(cfg["vocab_size"], 32, 4).record()
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="weights hold a dense table"):
        load_model(tmp_path / "m")


def test_mismatched_factor_shapes_are_refused(tmp_path: Path, tiny_tokenizer) -> None:
    model = make_tiny_model("classification", num_labels=2)
    factorize_embeddings_(model, "svd", 6)
    save_model(model, tiny_tokenizer, tmp_path / "m", ModelMeta(head="classification"))
    weights = tmp_path / "m" / "model.safetensors"
    tensors = load_file(weights)
    key = next(k for k in tensors if k.endswith("word_embeddings.codes.weight"))
    tensors[key] = tensors[key][:, :5].contiguous()
    save_file(tensors, weights)
    with pytest.raises(ModelLoadError, match="do not match slimformer_factorized_embeddings"):
        load_model(tmp_path / "m")


def test_bad_method_and_double_factorisation() -> None:
    model = make_tiny_model("classification")
    with pytest.raises(ConfigError, match="'pca' is unknown"):
        factorize_embeddings_(model, "pca", 4)  # type: ignore[arg-type]
    factorize_embeddings_(model, "svd", 4)
    with pytest.raises(ConfigError, match="already factorised"):
        factorize_embeddings_(model, "svd", 4)


@pytest.mark.parametrize("int8", [False, True])
def test_onnx_export_parity_of_an_ae_model(tmp_path: Path, int8: bool) -> None:
    pytest.importorskip("onnxruntime")
    from slimformer.export.onnx import export_onnx, validate_outputs

    model = make_tiny_model("classification", num_labels=2)
    factorize_embeddings_(model, "ae", 6, autoencoder=_AE, int8_table=int8)
    path = export_onnx(model, tmp_path / "m.onnx")
    diff = validate_outputs(model, path, atol=1e-4)
    assert diff < 1e-4


def test_ae_embeddings_then_ternary_qat_save_and_load(tmp_path: Path, tiny_tokenizer) -> None:
    """Composition: a factorised table under a converted (packed ternary) encoder reloads bit-exactly."""
    from slimformer.quant import QATConfig, convert_qat_, prepare_qat_
    from slimformer.quant.modules import QuantizedLinear, TernaryWeight

    model = make_tiny_model("classification", num_labels=2)
    factorize_embeddings_(model, "ae", 6, autoencoder=_AE, int8_table=True)
    convert_qat_(prepare_qat_(model, QATConfig(weight=TernaryWeight())))
    assert isinstance(model.base.embeddings.word_embeddings, FactorizedEmbedding)  # QAT left the table alone
    with torch.no_grad():
        ref = model.eval()(**_ids(model)).logits
    save_model(model, tiny_tokenizer, tmp_path / "m", ModelMeta(head="classification"))
    loaded = load_model(tmp_path / "m").model.eval()
    assert isinstance(loaded.base.embeddings.word_embeddings, FactorizedEmbedding)
    assert any(isinstance(m, QuantizedLinear) for m in loaded.modules())
    with torch.no_grad():
        torch.testing.assert_close(loaded(**_ids(loaded)).logits, ref, atol=0, rtol=0)
