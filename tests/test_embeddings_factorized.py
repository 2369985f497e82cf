"""Token-embedding compression: SVD factors, ratio arithmetic (METHODS §3(b)), FactorizedEmbedding, model swap."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import make_tiny_model, tiny_config
from slimformer.embeddings import (
    FactorizedEmbedding,
    has_tied_output_embeddings,
    install_factorized_,
    rank_for_ratio,
    ratio_for_rank,
    replace_word_embeddings_,
    svd_factorize,
)
from slimformer.errors import ConfigError
from slimformer.models import SlimModel
from slimformer.models.model import count_parameters

BERT_V, BERT_D = 30522, 768


def _rel_err(w: torch.Tensor, rank: int) -> float:
    codes, dec = svd_factorize(w, rank)
    return float(torch.linalg.norm(codes @ dec - w) / torch.linalg.norm(w))


def test_svd_shapes_and_error_decreases_with_rank() -> None:
    w = torch.randn(60, 24, generator=torch.Generator().manual_seed(0))
    codes, dec = svd_factorize(w, 5)
    assert codes.shape == (60, 5) and dec.shape == (5, 24) and codes.dtype == w.dtype
    errs = [_rel_err(w, k) for k in range(1, 25)]
    assert all(a > b for a, b in zip(errs, errs[1:]))
    assert errs[-1] < 1e-6
    # Eckart–Young: the error is the tail of the singular values.
    s = torch.linalg.svdvals(w.double())
    assert errs[4] == pytest.approx(float(s[5:].norm() / s.norm()), rel=1e-5)


def test_svd_full_rank_and_float64_accuracy() -> None:
    w = torch.randn(40, 16, generator=torch.Generator().manual_seed(1)) * 0.02
    codes, dec = svd_factorize(w, 16)
    torch.testing.assert_close(codes @ dec, w, atol=1e-6, rtol=0)
    c64, d64 = svd_factorize(w.double(), 3)
    assert c64.dtype == torch.float64 and d64.dtype == torch.float64


@pytest.mark.parametrize(("ratio", "rank"), [(10, 74), (5, 149), (2.5, 299)])
def test_rank_for_ratio_matches_methods_table(ratio: float, rank: int) -> None:
    assert rank_for_ratio(BERT_V, BERT_D, ratio) == rank
    assert ratio_for_rank(BERT_V, BERT_D, rank) >= ratio > ratio_for_rank(BERT_V, BERT_D, rank + 1)


def test_ratio_for_rank_formula() -> None:
    assert round(ratio_for_rank(BERT_V, BERT_D, 75), 2) == 9.99  # the paper's default latent_dim 75
    assert ratio_for_rank(100, 10, 2) == pytest.approx(1000 / (200 + 20))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: ratio_for_rank(100, 10, 0), "rank 0"),
        (lambda: ratio_for_rank(100, 10, 10), "rank 10"),
        (lambda: ratio_for_rank(100, 10, -3), "rank -3"),
        (lambda: rank_for_ratio(100, 10, 1.0), "ratio 1.0"),
        (lambda: rank_for_ratio(100, 10, 0.5), "ratio 0.5"),
        (lambda: rank_for_ratio(100, 10, float("inf")), "ratio inf"),
        (lambda: rank_for_ratio(10, 4, 3.5), "ratio 3.5 cannot be met"),
        (lambda: rank_for_ratio(0, 4, 2.0), r"\(0, 4\)"),
        (lambda: svd_factorize(torch.zeros(5, 4), 0), "rank 0"),
        (lambda: svd_factorize(torch.zeros(5, 4), 5), "rank 5"),
        (lambda: svd_factorize(torch.zeros(5), 1), "2-D"),
        (lambda: FactorizedEmbedding(10, 4, 5), "rank 5"),
        (lambda: FactorizedEmbedding.from_embedding(nn.Embedding(10, 4), 2, method="ae"), "'ae'"),
        (lambda: FactorizedEmbedding.from_embedding(nn.Linear(4, 4), 2), "Linear"),
    ],
)
def test_errors_are_one_line_config_errors(call, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_forward_is_codes_times_decoder_rows() -> None:
    torch.manual_seed(0)
    fe = FactorizedEmbedding(20, 8, 3, padding_idx=0)
    ids = torch.tensor([[0, 5, 19, 5], [7, 1, 2, 3]])
    out = fe(ids)
    assert out.shape == (2, 4, 8)
    ref = fe.codes.weight[ids] @ fe.decoder.weight.T  # (B, N, k) @ (k, d)
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    assert (fe.num_embeddings, fe.embedding_dim, fe.rank, fe.padding_idx) == (20, 8, 3, 0)


def test_identity_factors_reproduce_dense_lookup_exactly() -> None:
    emb = nn.Embedding(30, 6, padding_idx=2)
    fe = FactorizedEmbedding(30, 6, 6, padding_idx=2)
    with torch.no_grad():
        fe.codes.weight.copy_(emb.weight)
        fe.decoder.weight.copy_(torch.eye(6))
    ids = torch.randint(0, 30, (3, 11))
    torch.testing.assert_close(fe(ids), emb(ids), atol=0, rtol=0)


def test_from_embedding_round_trip() -> None:
    emb = nn.Embedding(50, 12, padding_idx=1)
    fe = FactorizedEmbedding.from_embedding(emb, 12)
    assert fe.padding_idx == 1 and fe.decoder.weight.shape == (12, 12) and fe.decoder.bias is None
    dense = fe.to_embedding()
    assert isinstance(dense, nn.Embedding) and dense.padding_idx == 1
    torch.testing.assert_close(dense.weight, emb.weight, atol=1e-6, rtol=0)
    ids = torch.randint(0, 50, (2, 9))
    torch.testing.assert_close(fe(ids), emb(ids), atol=1e-6, rtol=0)
    low = FactorizedEmbedding.from_embedding(emb, 4)
    torch.testing.assert_close(low(ids), low.to_embedding()(ids), atol=1e-6, rtol=0)


def _inputs(model: SlimModel) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, model.config.vocab_size, (2, 10), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_full_rank_swap_keeps_logits(arch: str) -> None:
    model = make_tiny_model("classification", arch, num_labels=3)
    inputs = _inputs(model)
    with torch.no_grad():
        ref = model(**inputs).logits
        emb = model.base.embeddings.word_embeddings
        new = install_factorized_(model, FactorizedEmbedding.from_embedding(emb, rank=model.config.hidden_size))
        got = model(**inputs).logits
    assert model.base.embeddings.word_embeddings is new
    assert new.padding_idx == model.config.pad_token_id
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_low_rank_swap_runs_and_shrinks_by_the_ratio() -> None:
    model = make_tiny_model("qa")
    v, d = model.config.vocab_size, model.config.hidden_size
    before = count_parameters(model.base.embeddings.word_embeddings)
    rank = rank_for_ratio(v, d, 4.0)
    replace_word_embeddings_(model, rank)
    after = count_parameters(model.base.embeddings.word_embeddings)
    assert before == v * d and after == v * rank + rank * d
    assert before / after == pytest.approx(ratio_for_rank(v, d, rank)) and before / after >= 4.0
    with torch.no_grad():
        out = model(**_inputs(model))
    assert out.start_logits.shape == (2, 10) and torch.isfinite(out.start_logits).all()
    with pytest.raises(ConfigError, match="already factorised"):
        replace_word_embeddings_(model, rank)
    with pytest.raises(ConfigError, match="rank 32 is invalid"):  # k >= d compresses nothing: refused here
        replace_word_embeddings_(make_tiny_model("qa"), d)


def test_tied_mlm_decoder_is_refused() -> None:
    import transformers

    # Any non-NONE head makes SlimModel.base read hf.bert; forward is not needed, only the tie check.
    wrapped = SlimModel(transformers.BertForMaskedLM(tiny_config("bert")), "classification")
    assert has_tied_output_embeddings(wrapped)
    with pytest.raises(ConfigError, match="BertForMaskedLM ties its output embeddings"):
        replace_word_embeddings_(wrapped, 4)
    assert isinstance(wrapped.base.embeddings.word_embeddings, nn.Embedding)
    assert not has_tied_output_embeddings(make_tiny_model("classification"))


def test_onnx_export_parity_with_factorized_embedding(tmp_path) -> None:
    from slimformer.export import export_onnx, validate_outputs

    model = make_tiny_model("classification", num_labels=2)
    replace_word_embeddings_(model, rank=8)
    path = export_onnx(model, tmp_path / "fact.onnx")
    assert validate_outputs(model, path, atol=1e-4) <= 1e-4
