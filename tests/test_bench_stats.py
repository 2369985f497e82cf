"""bench/stats.py against hand-computed cases: bootstrap intervals, McNemar (exact and chi-square), paired
bootstrap, Spearman."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slimformer.bench.stats import (
    bootstrap_ci,
    bootstrap_statistic_ci,
    mcnemar,
    paired_bootstrap,
    paired_bootstrap_ci,
    paired_test,
    spearman_rank_correlation,
)


def _discordant(b: int, c: int, agree: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Correctness of two classifiers with ``b`` (a right, b wrong) and ``c`` (a wrong, b right) discordant pairs."""
    a = [1] * b + [0] * c + [1] * agree + [0] * 5
    o = [0] * b + [1] * c + [1] * agree + [0] * 5
    return np.array(a), np.array(o)


def test_mcnemar_exact_below_25_discordant_pairs() -> None:
    a, b = _discordant(10, 2)
    # exact two-sided: 2 * P(X <= 2), X ~ Binomial(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert mcnemar(a, b) == pytest.approx(2 * 79 / 4096) == pytest.approx(0.0385742, abs=1e-6)
    assert mcnemar(b, a) == pytest.approx(2 * 79 / 4096)  # symmetric
    assert mcnemar(*_discordant(3, 3)) == 1.0  # capped: 2 * P(X <= 3; 6) = 2 * 42/64 > 1
    assert mcnemar(*_discordant(0, 0)) == 1.0  # no discordant pair
    assert mcnemar([True, False], [True, False]) == 1.0


def test_mcnemar_chi_square_with_continuity_from_25_pairs() -> None:
    a, b = _discordant(20, 5)  # n = 25: chi2 = (|20 - 5| - 1)^2 / 25 = 7.84 on 1 df
    expected = math.erfc(math.sqrt(7.84 / 2))  # P(chi2_1 > x) = erfc(sqrt(x / 2))
    assert mcnemar(a, b) == pytest.approx(expected, rel=1e-9) == pytest.approx(0.005110, abs=1e-6)
    assert mcnemar(*_discordant(13, 13)) == 1.0  # b = c: chi2 = 0 (the correction never makes it negative)


def test_mcnemar_input_errors() -> None:
    with pytest.raises(ValueError, match="one value per example"):
        mcnemar([1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="0/1"):
        mcnemar([1, 2], [1, 0])
    with pytest.raises(ValueError, match="empty"):
        mcnemar([], [])


def test_bootstrap_ci_contains_the_mean_and_narrows_with_n() -> None:
    rng = np.random.default_rng(1)
    widths = []
    for n in (100, 400, 1600):
        scores = (rng.random(n) < 0.85).astype(float)
        mean, lo, hi = bootstrap_ci(scores, n_boot=2000, seed=0)
        assert mean == pytest.approx(scores.mean()) and lo <= mean <= hi
        # the normal approximation of the binomial: half-width 1.96 * sqrt(p (1 - p) / n), within 20%
        assert (hi - lo) / 2 == pytest.approx(1.96 * math.sqrt(mean * (1 - mean) / n), rel=0.2)
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    assert bootstrap_ci([0.5] * 10) == (0.5, 0.5, 0.5)  # no spread, no width
    assert bootstrap_ci([1, 0, 1], seed=3) == bootstrap_ci([1, 0, 1], seed=3)  # deterministic


def test_bootstrap_ci_of_a_tiny_sample_by_enumeration() -> None:
    # two examples {0, 1}: a resample mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4
    _, lo, hi = bootstrap_ci([0.0, 1.0], n_boot=20000, alpha=0.4, seed=0)  # quantiles 0.2 and 0.8
    assert (lo, hi) == (0.0, 1.0)
    _, lo, hi = bootstrap_ci([0.0, 1.0], n_boot=20000, alpha=0.6, seed=0)  # quantiles 0.3 and 0.7
    assert (lo, hi) == (0.5, 0.5)


def test_statistic_ci_uses_the_same_resamples_as_the_mean() -> None:
    scores = np.random.default_rng(0).random(50)
    assert bootstrap_statistic_ci(lambda idx: scores[idx].mean(), 50, n_boot=300, seed=4) == pytest.approx(
        bootstrap_ci(scores, n_boot=300, seed=4)
    )


def test_paired_bootstrap() -> None:
    a = np.array([80.0, 100.0, 0.0, 50.0, 66.7] * 20)
    assert paired_bootstrap(a, a) == 1.0  # identical inputs
    assert paired_bootstrap_ci(a, a) == (0.0, 0.0, 0.0)
    better = a + 10.0  # every question 10 F1 points better: no resample is on the other side of 0
    assert paired_bootstrap(better, a, n_boot=500) == 0.0 and paired_bootstrap(a, better, n_boot=500) == 0.0
    assert paired_bootstrap_ci(better, a) == pytest.approx((10.0, 10.0, 10.0))
    rng = np.random.default_rng(2)
    noise_a, noise_b = rng.normal(0, 1, 200), rng.normal(0, 1, 200)
    p = paired_bootstrap(noise_a, noise_b, n_boot=2000, seed=1)
    assert 0.05 < p <= 1.0  # two samples of the same distribution
    shift = paired_bootstrap(noise_a + 0.5, noise_b, n_boot=2000, seed=1)
    assert shift < 0.01
    d, lo, hi = paired_bootstrap_ci(noise_a + 0.5, noise_b, n_boot=2000, seed=1)
    assert lo <= d <= hi and lo > 0
    # the p-value is twice the fraction of resampled differences at or below 0, by hand
    diff = noise_a - noise_b
    means = np.concatenate([diff[i].mean(axis=1) for i in [np.random.default_rng(1).integers(0, 200, (2000, 200))]])
    side = (means <= 0) if diff.mean() > 0 else (means >= 0)
    assert p == pytest.approx(min(1.0, 2 * side.mean()))


def test_spearman_rank_correlation() -> None:
    assert spearman_rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman_rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # d = rank differences (0, 0, 1, -1, 0): rho = 1 - 6 * 2 / (5 * 24) = 0.9
    assert spearman_rank_correlation([1, 2, 3, 4, 5], [1, 2, 4, 3, 5]) == pytest.approx(0.9)
    # ties get average ranks: ranks (1.5, 1.5, 3) vs (1, 2, 3): Pearson of the ranks = sqrt(3) / 2
    assert spearman_rank_correlation([1, 1, 2], [1, 2, 3]) == pytest.approx(math.sqrt(3) / 2)
    assert math.isnan(spearman_rank_correlation([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="at least 2 pairs"):
        spearman_rank_correlation([1], [2])
    with pytest.raises(ValueError, match="non-finite"):
        spearman_rank_correlation([1, float("nan")], [1, 2])


def test_paired_test_picks_the_test_that_fits_the_metric() -> None:
    from slimformer.evaluate import ExampleScores

    # accuracy: McNemar; a right on 3 examples b gets wrong, never the reverse: exact p = 2 * (1/2)^3 = 0.25
    a = ExampleScores("accuracy", scores=np.array([1.0, 1.0, 1.0, 0.0, 1.0]))
    b = ExampleScores("accuracy", scores=np.array([0.0, 0.0, 0.0, 0.0, 1.0]))
    assert paired_test(a, b) == (pytest.approx(0.25), "mcnemar")
    # F1 per question: the paired bootstrap, every question 10 points better -> p = 0
    f1 = np.linspace(0.0, 90.0, 50)
    p, test = paired_test(ExampleScores("f1", scores=f1 + 10.0), ExampleScores("f1", scores=f1), n_boot=300)
    assert p == 0.0 and test == "paired_bootstrap(n=300)"
    # MCC is not a mean: the metric is recomputed on each resample; equal predictions -> p = 1
    labels = np.array([0, 1] * 20)
    same = ExampleScores("mcc", predictions=labels.copy(), labels=labels)
    assert paired_test(same, same, n_boot=100)[0] == 1.0
    flipped = ExampleScores("mcc", predictions=1 - labels, labels=labels)
    p, test = paired_test(same, flipped, n_boot=300)
    assert p == 0.0 and test.startswith("paired_bootstrap_statistic")
    with pytest.raises(ValueError, match="5 vs 4 examples"):
        paired_test(a, ExampleScores("accuracy", scores=np.ones(4)))
