"""Turn per-token start/end logits of SQuAD features into one answer string per question."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from slimformer.tasks.squad import QAExample

__all__ = ["postprocess_qa_predictions"]


def postprocess_qa_predictions(
    examples: Sequence[QAExample],
    features: Sequence[dict[str, Any]],
    all_start_logits: ArrayLike,
    all_end_logits: ArrayLike,
    n_best_size: int = 20,
    max_answer_length: int = 30,
) -> dict[str, str]:
    """Best answer span per question, searched over all windows of the question.

    For each feature, the ``n_best_size`` highest start logits and end logits are paired; a pair
    ``(s, e)`` is kept when both tokens are context tokens (``offset_mapping`` not ``None``), ``e >= s``
    and ``e - s + 1 <= max_answer_length``. Its score is ``start_logit[s] + end_logit[e]`` (Devlin et al.,
    2019, Sec. 4.2) and the highest-scoring span over all features of the question wins (ties: the first
    found). Its text is the context slice ``context[offset[s][0]:offset[e][1]]``.

    Args:
        examples: the questions.
        features: from :func:`prepare_eval_features` (need ``example_id`` and ``offset_mapping``).
        all_start_logits: shape ``(num_features, seq_len)``; ``seq_len`` may exceed a feature's length
            (padding), positions past the feature's ``offset_mapping`` are ignored.
        all_end_logits: shape ``(num_features, seq_len)``.
        n_best_size: start and end candidates per feature.
        max_answer_length: longest answer in tokens.

    Returns:
        ``{question id: answer text}``; ``""`` for a question with no valid span (or no feature).

    Raises:
        ValueError: the logits do not have one row per feature.
    """
    starts = np.asarray(all_start_logits, dtype=np.float64)
    ends = np.asarray(all_end_logits, dtype=np.float64)
    if starts.ndim != 2 or starts.shape != ends.shape or starts.shape[0] != len(features):
        raise ValueError(
            f"logits must have shape (num_features={len(features)}, seq_len); "
            f"got start {starts.shape}, end {ends.shape}"
        )
    by_example: dict[str, list[int]] = defaultdict(list)
    for i, feat in enumerate(features):
        by_example[feat["example_id"]].append(i)

    predictions: dict[str, str] = {}
    for ex in examples:
        best_score, best_text = -np.inf, ""
        for i in by_example.get(ex.id, []):
            offsets = features[i]["offset_mapping"]
            n = min(len(offsets), starts.shape[1])
            start_logits, end_logits = starts[i, :n], ends[i, :n]
            top_starts = np.argsort(-start_logits, kind="stable")[:n_best_size]
            top_ends = np.argsort(-end_logits, kind="stable")[:n_best_size]
            for s in top_starts:
                if offsets[s] is None:
                    continue
                for e in top_ends:
                    if offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                        continue
                    score = start_logits[s] + end_logits[e]
                    if score > best_score:
                        best_score, best_text = score, ex.context[offsets[s][0] : offsets[e][1]]
        predictions[ex.id] = best_text
    return predictions
