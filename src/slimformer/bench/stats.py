"""Statistics for comparing models on one evaluation set: bootstrap intervals, paired tests, rank correlation.

Every function takes per-example results of the *same* examples (one value per example, in the same order for
the two models compared) and is deterministic given its ``seed``. numpy/scipy only.

* :func:`bootstrap_ci`: percentile bootstrap interval of a mean (Efron & Tibshirani 1993, §13.3): resample the
  examples with replacement ``n_boot`` times, take the ``alpha/2`` and ``1 − alpha/2`` quantiles of the
  resampled means.
* :func:`bootstrap_statistic_ci`: the same for any statistic of a resample (MCC, F1, Spearman ...).
* :func:`paired_bootstrap_ci` / :func:`paired_bootstrap`: interval / two-sided p-value of the mean difference
  of two models scored on the same examples (Koehn 2004; Berg-Kirkpatrick et al. 2012); for SQuAD per-question F1.
* :func:`mcnemar`: McNemar's test of two classifiers' correctness on the same examples.
* :func:`spearman_rank_correlation`: Spearman's rho (ties get average ranks).
* :func:`paired_test`: the test that fits two models' per-example results (McNemar for accuracy, a paired
  bootstrap otherwise), as ``(p, test name)``.

Resamples are drawn from ``numpy.random.default_rng(seed)`` in one fixed order, so two calls with the same
``seed`` and the same number of examples use the same resampled example sets: intervals of several models computed
with one seed are paired (the differences between them come from the models, not from the draw).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as _st

__all__ = [
    "bootstrap_ci",
    "bootstrap_statistic_ci",
    "paired_bootstrap_ci",
    "paired_bootstrap",
    "bootstrap_p_value",
    "mcnemar",
    "spearman_rank_correlation",
    "PairedScores",
    "paired_test",
]

#: Resampled index arrays are generated in chunks of at most this many entries (memory bound, not a result).
_CHUNK = 1 << 22


def _vector(x: ArrayLike, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{name} is empty; need at least one example")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} has non-finite values")
    return a


def _pair(a: ArrayLike, b: ArrayLike, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    x, y = _vector(a, names[0]), _vector(b, names[1])
    if x.shape != y.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} have {x.size} and {y.size} values; a paired comparison needs one value per "
            "example for both"
        )
    return x, y


def _check(n_boot: int, alpha: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot {n_boot} must be ≥ 1")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha {alpha} is outside (0, 1)")


def _resamples(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Index arrays ``(k, n)`` of the ``n_boot`` resamples, in chunks (the same sequence for the same arguments)."""
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _CHUNK // n)
    done = 0
    while done < n_boot:
        k = min(per_chunk, n_boot - done)
        yield rng.integers(0, n, size=(k, n))
        done += k


def _interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_ci(
    per_example_scores: ArrayLike, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
    """Percentile bootstrap interval of the mean of per-example scores.

    Args:
        per_example_scores: ``(n,)`` one score per example (0/1 correctness for accuracy; per-question F1 points).
        n_boot: resamples (each ``n`` examples drawn with replacement).
        alpha: ``1 − alpha`` is the coverage (0.05: a 95% interval).
        seed: seed of the resamples.

    Returns:
        ``(mean, lo, hi)``: the mean of the scores and the ``alpha/2``, ``1 − alpha/2`` quantiles of the resampled
        means (``lo ≤ hi``; the mean usually, not necessarily, lies between them).

    Raises:
        ValueError: no scores, a non-finite score, ``n_boot < 1`` or ``alpha`` outside ``(0, 1)``.
    """
    x = _vector(per_example_scores, "per_example_scores")
    _check(n_boot, alpha)
    means = np.concatenate([x[idx].mean(axis=1) for idx in _resamples(x.size, n_boot, seed)])
    return (float(x.mean()), *_interval(means, alpha))


def bootstrap_statistic_ci(
    statistic: Callable[[np.ndarray], float],
    num_examples: int,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Percentile bootstrap interval of any statistic of the examples (a metric that is not a mean: MCC, F1 ...).

    Args:
        statistic: ``indices (n,) -> value``: the statistic on the examples at those positions (with repeats);
            called once with ``arange(n)`` for the point estimate, then once per resample.
        num_examples: ``n``.
        n_boot, alpha, seed: as in :func:`bootstrap_ci` (the same seed draws the same resamples).

    Returns:
        ``(value on all examples, lo, hi)``.

    Raises:
        ValueError: ``num_examples < 1``, ``n_boot < 1`` or ``alpha`` outside ``(0, 1)``.
    """
    if num_examples < 1:
        raise ValueError(f"num_examples {num_examples} must be ≥ 1")
    _check(n_boot, alpha)
    values = np.array(
        [float(statistic(row)) for idx in _resamples(num_examples, n_boot, seed) for row in idx], dtype=np.float64
    )
    return (float(statistic(np.arange(num_examples))), *_interval(values, alpha))


def paired_bootstrap_ci(
    scores_a: ArrayLike, scores_b: ArrayLike, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
    """Percentile bootstrap interval of ``mean(a) − mean(b)`` over the same examples (resampled together).

    Returns:
        ``(mean difference, lo, hi)``.

    Raises:
        ValueError: as :func:`bootstrap_ci`, or the two have different lengths.
    """
    a, b = _pair(scores_a, scores_b, ("scores_a", "scores_b"))
    return bootstrap_ci(a - b, n_boot=n_boot, alpha=alpha, seed=seed)


def paired_bootstrap(scores_a: ArrayLike, scores_b: ArrayLike, *, n_boot: int = 1000, seed: int = 0) -> float:
    """Two-sided paired bootstrap p-value of ``mean(a) ≠ mean(b)`` (e.g. SQuAD per-question F1 of two models).

    The examples are resampled with replacement ``n_boot`` times; ``d*`` is the mean difference ``a − b`` of a
    resample and ``d`` that of all examples. The p-value is twice the fraction of resamples on the other side of 0
    from ``d`` (``d* ≤ 0`` when ``d > 0``, ``d* ≥ 0`` when ``d < 0``; 0 counts as the other side), capped at 1;
    ``d = 0`` gives 1. Its resolution is ``2 / n_boot``.

    Raises:
        ValueError: as :func:`paired_bootstrap_ci`.
    """
    a, b = _pair(scores_a, scores_b, ("scores_a", "scores_b"))
    _check(n_boot, 0.05)
    d = a - b
    observed = float(d.mean())
    if observed == 0.0:
        return 1.0
    means = np.concatenate([d[idx].mean(axis=1) for idx in _resamples(d.size, n_boot, seed)])
    return _two_sided(observed, means, n_boot)


def _two_sided(observed: float, resampled: np.ndarray, n_boot: int) -> float:
    if observed == 0.0:
        return 1.0
    other = np.count_nonzero(resampled <= 0) if observed > 0 else np.count_nonzero(resampled >= 0)
    return float(min(1.0, 2.0 * other / n_boot))


def bootstrap_p_value(
    statistic: Callable[[np.ndarray], float], num_examples: int, *, n_boot: int = 1000, seed: int = 0
) -> float:
    """Two-sided bootstrap p-value that a statistic of the examples is 0, by the rule of :func:`paired_bootstrap`.

    For differences of metrics that are not means: ``statistic = lambda idx: m_a(idx) − m_b(idx)``.

    Raises:
        ValueError: ``num_examples < 1`` or ``n_boot < 1``.
    """
    if num_examples < 1:
        raise ValueError(f"num_examples {num_examples} must be ≥ 1")
    _check(n_boot, 0.05)
    observed = float(statistic(np.arange(num_examples)))
    if observed == 0.0:
        return 1.0
    values = np.array([float(statistic(row)) for idx in _resamples(num_examples, n_boot, seed) for row in idx])
    return _two_sided(observed, values, n_boot)


def mcnemar(correct_a: ArrayLike, correct_b: ArrayLike) -> float:
    """McNemar's two-sided p-value that two classifiers are equally accurate on the same examples.

    Only the discordant pairs count: ``b`` examples that ``a`` gets right and ``b`` wrong, ``c`` the reverse,
    ``n = b + c``.

    * ``n < 25``: the **exact** binomial test, ``p = min(1, 2·P(X ≤ min(b, c)))`` with ``X ~ Binomial(n, 1/2)``;
    * ``n ≥ 25``: the **chi-square** test with continuity correction (Edwards 1948),
      ``χ² = max(|b − c| − 1, 0)² / (b + c)`` on 1 degree of freedom;
    * ``n = 0``: 1.

    Args:
        correct_a, correct_b: ``(n,)`` booleans (or 0/1), whether each model got each example right.

    Raises:
        ValueError: empty inputs, different lengths, or values other than 0/1.
    """
    a, b_ = _pair(correct_a, correct_b, ("correct_a", "correct_b"))
    if not (np.isin(a, (0.0, 1.0)).all() and np.isin(b_, (0.0, 1.0)).all()):
        raise ValueError("mcnemar needs 0/1 (or boolean) correctness per example")
    b = int(np.count_nonzero((a == 1) & (b_ == 0)))
    c = int(np.count_nonzero((a == 0) & (b_ == 1)))
    n = b + c
    if n == 0:
        return 1.0
    if n < 25:
        return float(min(1.0, 2.0 * _st.binom.cdf(min(b, c), n, 0.5)))
    chi2 = max(abs(b - c) - 1, 0) ** 2 / n
    return float(_st.chi2.sf(chi2, 1))


def spearman_rank_correlation(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's rank correlation: Pearson's correlation of the ranks (ties: average ranks).

    Returns:
        rho in ``[-1, 1]``, or ``nan`` when ``x`` or ``y`` is constant (undefined).

    Raises:
        ValueError: fewer than 2 pairs, different lengths, or non-finite values.
    """
    a, b = _pair(x, y, ("x", "y"))
    if a.size < 2:
        raise ValueError(f"a rank correlation needs at least 2 pairs, got {a.size}")
    ra, rb = _st.rankdata(a), _st.rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    if denom == 0.0:
        return float("nan")
    return float(np.clip((ra * rb).sum() / denom, -1.0, 1.0))


class PairedScores(Protocol):
    """Per-example results of one model (:class:`slimformer.evaluate.ExampleScores` has this shape).

    ``scores``: ``(n,)`` per-example values whose mean is the metric, or ``None`` for a metric that is not a mean
    (then ``value(indices)`` recomputes it on a resample); ``metric``: its name; ``num_examples``: ``n``.
    """

    metric: str
    scores: np.ndarray | None

    @property
    def num_examples(self) -> int: ...

    def value(self, indices: np.ndarray | None = None) -> float: ...


def paired_test(a: PairedScores, b: PairedScores, *, n_boot: int = 1000, seed: int = 0) -> tuple[float, str]:
    """Two-sided p-value that two models score alike on the same examples, and the name of the test used.

    * accuracy (0/1 per example): :func:`mcnemar`;
    * other per-example means (SQuAD F1 / EM per question): :func:`paired_bootstrap` of the mean difference;
    * metrics that are not means (MCC, F1 of a class, correlations): :func:`bootstrap_p_value` of the metric
      difference recomputed on each resample.

    Raises:
        ValueError: the two results cover different numbers of examples.
    """
    if a.num_examples != b.num_examples:
        raise ValueError(f"paired test over {a.num_examples} vs {b.num_examples} examples: not the same examples")
    if a.scores is not None and b.scores is not None:
        binary = np.isin(a.scores, (0.0, 1.0)).all() and np.isin(b.scores, (0.0, 1.0)).all()
        if binary and a.metric == "accuracy":
            return mcnemar(a.scores, b.scores), "mcnemar"
        return paired_bootstrap(a.scores, b.scores, n_boot=n_boot, seed=seed), f"paired_bootstrap(n={n_boot})"
    if a.value() == b.value():
        return 1.0, f"paired_bootstrap_statistic(n={n_boot})"

    def statistic(idx: np.ndarray) -> float:
        return a.value(idx) - b.value(idx)

    p = bootstrap_p_value(statistic, a.num_examples, n_boot=n_boot, seed=seed)
    return p, f"paired_bootstrap_statistic(n={n_boot})"
