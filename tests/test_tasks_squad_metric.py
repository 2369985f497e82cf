"""Official SQuAD v1.1 EM / F1 on hand-computed edge cases."""

from __future__ import annotations

import logging

import pytest

from slimformer.errors import DataError
from slimformer.tasks import (
    QAExample,
    exact_match_score,
    f1_score,
    metric_max_over_ground_truths,
    normalize_answer,
    squad_evaluate,
)


@pytest.mark.parametrize(
    "raw, normalised",
    [
        ("The Cat", "cat"),  # case + article
        ("an apple, a day", "apple day"),  # articles anywhere, punctuation
        ("  Paris \t\n France ", "paris france"),  # white space collapsed
        ("theory of an anthem", "theory of anthem"),  # articles only as whole words
        ("well-known", "wellknown"),  # punctuation removed without a space
        ("(the) answer", "answer"),  # punctuation goes first, so "(the)" becomes an article
        ("Paris\u2019", "paris\u2019"),  # a right single quote is not in string.punctuation: kept
        ("\u00abParis\u00bb", "\u00abparis\u00bb"),  # guillemets kept too
        ("", ""),
    ],
)
def test_normalize_answer(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_exact_match():
    assert exact_match_score("The Eiffel Tower!", "eiffel tower") == 1.0
    assert exact_match_score("Eiffel", "eiffel tower") == 0.0
    assert exact_match_score("Paris\u2019", "Paris'") == 0.0  # unicode apostrophe survives normalisation
    assert exact_match_score("", "the") == 1.0  # both normalise to ""


def test_f1_partial_overlap():
    # pred -> [capital, of, france]; gold -> [paris, capital, of, france]: overlap 3
    # P = 3/3, R = 3/4 -> F1 = 2 * 1 * 0.75 / 1.75 = 6/7
    assert f1_score("the capital of France", "Paris, capital of France") == pytest.approx(6 / 7)
    # repeated tokens count as a multiset: [x, x, y] vs [x, y, y] -> overlap min(2,1) + min(1,2) = 2
    # P = R = 2/3 -> F1 = 2/3
    assert f1_score("x x y", "x y y") == pytest.approx(2 / 3)


def test_f1_zero_cases():
    assert f1_score("Berlin", "Paris") == 0.0  # no overlap
    assert f1_score("", "Paris") == 0.0  # empty prediction
    assert f1_score("the", "a") == 0.0  # both normalise to nothing: no common token, F1 0 (EM would be 1)
    assert f1_score("Paris", "Paris") == 1.0


def test_max_over_ground_truths():
    truths = ["Broncos", "the Denver team"]
    assert metric_max_over_ground_truths(exact_match_score, "Denver Broncos", truths) == 0.0
    # vs "broncos": overlap 1, P 1/2, R 1 -> 2/3; vs "denver team": overlap 1, P 1/2, R 1/2 -> 1/2; max 2/3
    assert metric_max_over_ground_truths(f1_score, "Denver Broncos", truths) == pytest.approx(2 / 3)
    assert metric_max_over_ground_truths(exact_match_score, "Denver Broncos", truths + ["Denver Broncos"]) == 1.0


def _ex(qid: str, *answers: str) -> QAExample:
    return QAExample(qid, "T", "context", "q?", tuple((a, 0) for a in answers))


def test_squad_evaluate_points_and_missing_predictions(caplog):
    examples = [_ex("1", "Paris"), _ex("2", "Paris, capital of France"), _ex("3", "Rome")]
    predictions = {"1": "paris.", "2": "the capital of France", "extra": "ignored"}
    with caplog.at_level(logging.WARNING):
        scores = squad_evaluate(examples, predictions)
    # EM: 1 + 0 + 0 (missing) over 3 -> 33.33; F1: 1 + 6/7 + 0 over 3 -> 100 * 13/21
    assert scores == pytest.approx({"exact_match": 100 / 3, "f1": 100 * 13 / 21})
    assert "1 of 3 questions have no prediction" in caplog.text


def test_squad_evaluate_rejects_unscorable_input():
    with pytest.raises(DataError, match="no questions"):
        squad_evaluate([], {})
    with pytest.raises(DataError, match="q0"):
        squad_evaluate([QAExample("q0", "T", "c", "q", ())], {"q0": "x"})
