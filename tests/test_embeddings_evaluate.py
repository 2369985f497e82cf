"""Evaluation of compressed embedding tables: reconstruction, zero-shot fidelity, pair AUC, MLM perplexity."""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA, make_tiny_model, requires_data, tiny_config
from slimformer.embeddings import factorize_embeddings_
from slimformer.embeddings.evaluate import (
    pair_auc,
    reconstruction_metrics,
    sentence_embeddings,
    token_frequencies,
    zero_shot_fidelity,
)
from slimformer.embeddings.mlm import masked_lm_perplexity, read_wikitext_lines, substitute_embeddings_
from slimformer.errors import ConfigError, DataError
from slimformer.tasks.metrics import roc_auc

SENTENCES = ["the movie was good", "a terrible film", "very boring and bad", "great fun for people"]


def test_roc_auc_equals_pair_counting() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=40), 1)  # rounding makes ties
    labels = rng.integers(0, 2, size=40)
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    assert roc_auc(scores, labels) == pytest.approx(wins / (len(pos) * len(neg)))
    assert roc_auc([0.1, 0.9], [0, 1]) == 1.0 and roc_auc([0.9, 0.1], [0, 1]) == 0.0
    with pytest.raises(ValueError, match="one positive and one negative"):
        roc_auc([0.1, 0.2], [1, 1])


def test_reconstruction_metrics_by_hand() -> None:
    e = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    r = torch.tensor([[1.0, 1.0], [0.0, 2.0], [3.0, 4.0]])
    m = reconstruction_metrics(e, r, frequencies=torch.tensor([1, 0, 3]))
    assert m["mean_cosine"] == pytest.approx((1 / math.sqrt(2) + 2) / 3)
    assert m["relative_l2"] == pytest.approx(1 / 3)
    assert m["relative_frobenius"] == pytest.approx(1 / math.sqrt(1 + 4 + 25))
    assert m["mean_cosine_freq"] == pytest.approx((1 / math.sqrt(2) + 3) / 4)
    assert m["relative_l2_freq"] == pytest.approx(1 / 4)
    with pytest.raises(ConfigError, match="frequencies have shape"):
        reconstruction_metrics(e, r, frequencies=torch.ones(2))


def test_token_frequencies_count_ids(tiny_tokenizer) -> None:
    counts = token_frequencies(tiny_tokenizer, ["the film", "the the"], len(tiny_tokenizer))
    the = tiny_tokenizer.convert_tokens_to_ids("the")
    assert counts[the] == 3 and counts.sum() == 4


def test_sentence_embeddings_ignore_padding(tiny_tokenizer) -> None:
    model = make_tiny_model("none")
    alone = sentence_embeddings(model, tiny_tokenizer, [SENTENCES[0]])
    padded = sentence_embeddings(model, tiny_tokenizer, [SENTENCES[0], SENTENCES[3] + " and a very long tail"])
    torch.testing.assert_close(padded[0], alone[0], atol=1e-5, rtol=0)


def test_fidelity_is_one_for_a_lossless_copy_and_lower_when_compressed(tiny_tokenizer) -> None:
    model = make_tiny_model("none")
    assert zero_shot_fidelity(model, copy.deepcopy(model), tiny_tokenizer, SENTENCES) == pytest.approx(1.0)
    small = copy.deepcopy(model)
    factorize_embeddings_(small, "svd", 2)
    assert zero_shot_fidelity(model, small, tiny_tokenizer, SENTENCES) < 0.999


def test_pair_auc_of_identical_vs_unrelated_pairs(tiny_tokenizer) -> None:
    model = make_tiny_model("none")
    pairs = [(s, s) for s in SENTENCES] + [(SENTENCES[0], "1 2 3 ?"), (SENTENCES[1], "paris , france !")]
    assert pair_auc(model, tiny_tokenizer, pairs, [1, 1, 1, 1, 0, 0]) == 1.0
    with pytest.raises(ConfigError, match="as many labels as pairs"):
        pair_auc(model, tiny_tokenizer, pairs, [1])


def _tiny_mlm():
    import transformers

    torch.manual_seed(0)
    return transformers.BertForMaskedLM(tiny_config("bert")).eval()


LINES = [" ".join(["the movie was good and the film was great fun"] * 3), "= Heading =", "too short"]


def test_perplexity_is_seeded_and_matches_its_loss(tiny_tokenizer) -> None:
    mlm = _tiny_mlm()
    a = masked_lm_perplexity(mlm, tiny_tokenizer, LINES * 4, min_tokens=20, seed=3)
    b = masked_lm_perplexity(mlm, tiny_tokenizer, LINES * 4, min_tokens=20, seed=3)
    assert a == b and a["lines"] == 4  # headers and short lines dropped
    assert a["perplexity"] == pytest.approx(math.exp(a["loss"])) and a["masked_tokens"] > 0
    # a random model over V tokens is near-uniform: perplexity around V
    assert 0.3 * len(tiny_tokenizer) < a["perplexity"] < 3 * len(tiny_tokenizer)


def test_substitution_modes_and_degradation(tiny_tokenizer) -> None:
    mlm = _tiny_mlm()
    e = mlm.get_input_embeddings().weight.detach().clone()
    noisy = e + torch.randn_like(e)
    base = masked_lm_perplexity(mlm, tiny_tokenizer, LINES * 4, seed=1)["perplexity"]
    only_in = copy.deepcopy(mlm)
    substitute_embeddings_(only_in, noisy, "input-only")
    assert torch.equal(only_in.get_output_embeddings().weight, e)  # decoder keeps E (untied)
    both = copy.deepcopy(mlm)
    substitute_embeddings_(both, noisy, "input+output")
    assert torch.equal(both.get_output_embeddings().weight, noisy)
    same = copy.deepcopy(mlm)
    substitute_embeddings_(same, e, "input-only")
    assert masked_lm_perplexity(same, tiny_tokenizer, LINES * 4, seed=1)["perplexity"] == pytest.approx(base)
    with pytest.raises(ConfigError, match="'both' is unknown"):
        substitute_embeddings_(mlm, e, "both")  # type: ignore[arg-type]


def test_perplexity_errors(tiny_tokenizer, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 20 tokens"):
        masked_lm_perplexity(_tiny_mlm(), tiny_tokenizer, ["too short"])
    with pytest.raises(ConfigError, match="no MLM head"):
        masked_lm_perplexity(make_tiny_model("none").hf, tiny_tokenizer, LINES)
    (tmp_path / "w.raw").write_text(" = A =\n\n = = B = =\n", encoding="utf-8")
    with pytest.raises(DataError, match="no text lines"):
        read_wikitext_lines(tmp_path / "w.raw")


@requires_data
def test_reads_the_shared_wikitext_test_file() -> None:
    lines = read_wikitext_lines(SHARED_DATA / "wikitext-2-raw-DERIVED" / "wiki.test.nonempty-lines.crlf.raw")
    assert 2000 < len(lines) < 2891 and not any(ln.startswith("=") and ln.endswith("=") for ln in lines)
