"""The official SQuAD v1.1 evaluation (exact match and token F1), re-implemented.

Follows ``evaluate-v1.1.py`` from the SQuAD website (Rajpurkar et al., 2016,
https://arxiv.org/abs/1606.05250): answers are normalised (lower case, drop ASCII punctuation
``string.punctuation``, drop the articles a/an/the, collapse white space, in that order); a question scores
the maximum over its ground-truth answers; scores are averaged over all questions and reported in points
(0..100). Unicode punctuation (e.g. ``«`` or an em dash) is not removed, as in the official script.
"""

from __future__ import annotations

import logging
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from slimformer.errors import DataError
from slimformer.tasks.squad import QAExample

__all__ = [
    "normalize_answer",
    "exact_match_score",
    "f1_score",
    "metric_max_over_ground_truths",
    "squad_evaluate",
]

logger = logging.getLogger(__name__)

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """Lower-case, remove ASCII punctuation, remove articles, collapse white space (official v1.1 order)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
    """1.0 if the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token-level F1 of the normalised answers (white-space tokens, multiset overlap).

    ``precision = overlap / len(prediction tokens)``, ``recall = overlap / len(ground-truth tokens)``,
    ``F1 = 2 P R / (P + R)``; 0.0 when there is no overlap (including an empty prediction).
    """
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(ground_truth).split()
    overlap = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def metric_max_over_ground_truths(
    metric: Callable[[str, str], float], prediction: str, ground_truths: Sequence[str]
) -> float:
    """``max(metric(prediction, g) for g in ground_truths)``."""
    return max(metric(prediction, g) for g in ground_truths)


def squad_evaluate(examples: Sequence[QAExample], predictions: Mapping[str, str]) -> dict[str, float]:
    """Official SQuAD v1.1 exact match and F1 over ``examples``.

    Args:
        examples: the questions with their ground-truth answers.
        predictions: ``{question id: answer text}``. A question without a prediction scores 0 (and a
            warning with the count is logged), as in the official script; extra ids are ignored.

    Returns:
        ``{"exact_match": points, "f1": points}``, each in ``[0, 100]``.

    Raises:
        DataError: there are no examples, or a question has no ground-truth answer.
    """
    if not examples:
        raise DataError("squad_evaluate got no questions to score")
    em = f1 = 0.0
    missing = 0
    for ex in examples:
        if not ex.answers:
            raise DataError(f"SQuAD question {ex.id} has no ground-truth answer to score against")
        if ex.id not in predictions:
            missing += 1
            continue
        truths = [text for text, _ in ex.answers]
        em += metric_max_over_ground_truths(exact_match_score, predictions[ex.id], truths)
        f1 += metric_max_over_ground_truths(f1_score, predictions[ex.id], truths)
    if missing:
        logger.warning("%d of %d questions have no prediction and score 0", missing, len(examples))
    return {"exact_match": 100.0 * em / len(examples), "f1": 100.0 * f1 / len(examples)}
