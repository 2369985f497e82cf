"""Official GLUE metrics as plain functions over 1-D numpy arrays.

All classification metrics take integer class ids; the correlation metrics take floats. Every function
returns a Python ``float`` in the metric's natural range (fractions, not percentages: accuracy 0..1,
correlations -1..1). Degenerate inputs (a constant prediction, an empty confusion-matrix row) return
``0.0`` instead of NaN, so model selection never compares against NaN; this matches scikit-learn's
``matthews_corrcoef`` and ``f1_score(zero_division=0)``.

Reference: Wang et al., "GLUE: A Multi-Task Benchmark and Analysis Platform for Natural Language
Understanding", ICLR 2019, https://arxiv.org/abs/1804.07461 (Table 1 lists the metric per task).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import rankdata

__all__ = ["accuracy", "binary_f1", "macro_f1", "matthews_corrcoef", "pearson", "spearman", "roc_auc", "METRICS"]


def _pair(predictions: ArrayLike, labels: ArrayLike, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(predictions, dtype=dtype).reshape(-1)
    y = np.asarray(labels, dtype=dtype).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"predictions and labels differ in length: {p.shape[0]} vs {y.shape[0]}")
    if p.size == 0:
        raise ValueError("cannot compute a metric over zero examples")
    return p, y


def accuracy(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of exact matches: ``mean(predictions == labels)``.

    Args:
        predictions: predicted class ids, shape ``(n,)``.
        labels: gold class ids, shape ``(n,)``.

    Returns:
        Accuracy in ``[0, 1]``.

    Raises:
        ValueError: the arrays differ in length or are empty.
    """
    p, y = _pair(predictions, labels, np.int64)
    return float(np.mean(p == y))


def binary_f1(predictions: ArrayLike, labels: ArrayLike, positive: int = 1) -> float:
    """F1 of the positive class: ``2 TP / (2 TP + FP + FN)``; ``0.0`` when ``TP + FP + FN == 0``.

    This is the GLUE MRPC / QQP F1 (positive class 1 = "paraphrase" / "duplicate").

    Args:
        predictions: predicted class ids, shape ``(n,)``.
        labels: gold class ids, shape ``(n,)``.
        positive: the id of the positive class.

    Returns:
        F1 in ``[0, 1]``.

    Raises:
        ValueError: the arrays differ in length or are empty.
    """
    p, y = _pair(predictions, labels, np.int64)
    tp = int(np.sum((p == positive) & (y == positive)))
    fp = int(np.sum((p == positive) & (y != positive)))
    fn = int(np.sum((p != positive) & (y == positive)))
    denom = 2 * tp + fp + fn
    return 0.0 if denom == 0 else 2 * tp / denom


def matthews_corrcoef(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Matthews correlation coefficient (binary or multi-class, Gorodkin's R_K form).

    For two classes it is ``(TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))``. In general, with the
    confusion matrix ``C`` (rows gold, columns predicted), ``t_k`` the gold count and ``p_k`` the predicted
    count of class ``k``, ``c`` the number correct and ``s`` the number of examples::

        MCC = (c*s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2) (s^2 - sum_k t_k^2))

    When the denominator is zero (a constant prediction or constant labels) the result is ``0.0``.
    This is the GLUE CoLA metric (Matthews, 1975; Warstadt et al., 2019).

    Args:
        predictions: predicted class ids, shape ``(n,)``.
        labels: gold class ids, shape ``(n,)``.

    Returns:
        MCC in ``[-1, 1]``.

    Raises:
        ValueError: the arrays differ in length or are empty.
    """
    p, y = _pair(predictions, labels, np.int64)
    classes = np.union1d(p, y)
    p_k = np.array([np.sum(p == k) for k in classes], dtype=np.float64)
    t_k = np.array([np.sum(y == k) for k in classes], dtype=np.float64)
    c = float(np.sum(p == y))
    s = float(p.size)
    cov_py = c * s - float(p_k @ t_k)
    cov_pp = s * s - float(p_k @ p_k)
    cov_yy = s * s - float(t_k @ t_k)
    if cov_pp == 0.0 or cov_yy == 0.0:
        return 0.0
    return float(cov_py / np.sqrt(cov_pp * cov_yy))


def pearson(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Pearson correlation ``cov(x, y) / (std(x) std(y))``; ``0.0`` when either input is constant.

    This is the GLUE STS-B metric (together with :func:`spearman`).

    Args:
        predictions: predicted scores, shape ``(n,)``.
        labels: gold scores, shape ``(n,)``.

    Returns:
        Correlation in ``[-1, 1]``.

    Raises:
        ValueError: the arrays differ in length or are empty.
    """
    x, y = _pair(predictions, labels, np.float64)
    dx = x - x.mean()
    dy = y - y.mean()
    denom = float(np.sqrt(np.sum(dx * dx) * np.sum(dy * dy)))
    if denom == 0.0:
        return 0.0
    return float(np.clip(np.sum(dx * dy) / denom, -1.0, 1.0))


def spearman(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Spearman rank correlation: :func:`pearson` of the ranks (ties get their average rank).

    Equal to ``scipy.stats.spearmanr``; ``0.0`` when either input is constant.

    Args:
        predictions: predicted scores, shape ``(n,)``.
        labels: gold scores, shape ``(n,)``.

    Returns:
        Correlation in ``[-1, 1]``.

    Raises:
        ValueError: the arrays differ in length or are empty.
    """
    x, y = _pair(predictions, labels, np.float64)
    return pearson(rankdata(x), rankdata(y))


def roc_auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (1 = positive).

    Computed as the Mann–Whitney statistic: the probability that a random positive scores above a random
    negative, ties counting one half (``sklearn.metrics.roc_auc_score`` gives the same value).

    Args:
        scores: real-valued scores, shape ``(n,)`` (higher = more likely positive).
        labels: gold labels in ``{0, 1}``, shape ``(n,)``.

    Returns:
        AUC in ``[0, 1]`` (0.5 = chance).

    Raises:
        ValueError: the arrays differ in length or are empty, a label is not 0/1, or one class is absent.
    """
    x, y = _pair(scores, labels, np.float64)
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("roc_auc: labels must be 0 or 1")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_auc: needs at least one positive and one negative label")
    ranks = rankdata(x)  # average ranks for ties
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_f1(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Macro-averaged F1: the unweighted mean over classes of ``2·P·R / (P + R)`` (one-vs-rest).

    Classes are those present in ``labels`` or ``predictions``; a class with no true and no predicted example
    does not occur; a class with ``P + R = 0`` scores 0 (scikit-learn's ``f1_score(average="macro")``).

    Args:
        predictions: predicted class ids, shape ``(n,)``. labels: gold class ids, shape ``(n,)``.

    Returns:
        Macro-F1 in ``[0, 1]``.

    Raises:
        ValueError: the arrays differ in length or are empty.
    """
    p, y = _pair(predictions, labels, np.int64)
    scores = []
    for k in np.union1d(p, y):
        tp = float(np.sum((p == k) & (y == k)))
        fp = float(np.sum((p == k) & (y != k)))
        fn = float(np.sum((p != k) & (y == k)))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


METRICS: dict[str, Callable[[ArrayLike, ArrayLike], float]] = {
    "accuracy": accuracy,
    "macro_f1": macro_f1,
    "f1": binary_f1,
    "mcc": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}
"""Metric name (as used in :attr:`TaskSpec.metrics`) -> function ``(predictions, labels) -> float``."""
