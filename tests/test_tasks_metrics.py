"""GLUE metrics against hand-computed values (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from slimformer.tasks.metrics import METRICS, accuracy, binary_f1, matthews_corrcoef, pearson, spearman

# Shared binary case: predictions p and labels y.
#   idx:   0  1  2  3  4
#   p:     1  1  0  0  1
#   y:     1  0  1  0  1
# TP = {0, 4} = 2, FP = {1} = 1, FN = {2} = 1, TN = {3} = 1.
P = [1, 1, 0, 0, 1]
Y = [1, 0, 1, 0, 1]


def test_accuracy_hand_computed():
    # matches at idx 0, 3, 4 -> 3 / 5
    assert accuracy(P, Y) == pytest.approx(0.6)
    assert accuracy(np.array([2, 0, 1]), np.array([2, 0, 1])) == 1.0


def test_binary_f1_hand_computed():
    # 2TP / (2TP + FP + FN) = 4 / (4 + 1 + 1) = 2/3
    assert binary_f1(P, Y) == pytest.approx(2 / 3)
    # precision 1/1, recall 1/3 -> F1 = 2 * 1 * (1/3) / (4/3) = 1/2
    assert binary_f1([1, 0, 0], [1, 1, 1]) == pytest.approx(0.5)


def test_binary_f1_no_positives_is_zero_not_nan():
    # TP = FP = FN = 0: F1 is 0/0, defined as 0.0
    assert binary_f1([0, 0, 0], [0, 0, 0]) == 0.0
    # predicting all negative with positives present: TP = 0 -> 0
    assert binary_f1([0, 0, 0], [1, 0, 1]) == 0.0


def test_mcc_binary_hand_computed():
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    assert matthews_corrcoef(P, Y) == pytest.approx(1 / 6)
    assert matthews_corrcoef([0, 1, 1, 0], [0, 1, 1, 0]) == pytest.approx(1.0)
    assert matthews_corrcoef([1, 0, 0, 1], [0, 1, 1, 0]) == pytest.approx(-1.0)


def test_mcc_multiclass_hand_computed():
    # p = [0, 1, 2, 0], y = [0, 1, 1, 2]; s = 4, correct c = 2 (idx 0, 1)
    # predicted counts p_k = (2, 1, 1), gold counts t_k = (1, 2, 1); sum p_k t_k = 2 + 2 + 1 = 5
    # (c s - 5) / sqrt((16 - (4+1+1)) (16 - (1+4+1))) = 3 / sqrt(10 * 10) = 0.3
    assert matthews_corrcoef([0, 1, 2, 0], [0, 1, 1, 2]) == pytest.approx(0.3)


@pytest.mark.parametrize("pred, gold", [([1, 1, 1, 1], [1, 0, 1, 0]), ([0, 0, 0], [0, 1, 1]), ([0, 1], [1, 1])])
def test_mcc_degenerate_is_zero_not_nan(pred, gold):
    # a constant prediction (or constant labels) makes the denominator 0 -> defined as 0.0
    value = matthews_corrcoef(pred, gold)
    assert value == 0.0 and not math.isnan(value)


def test_pearson_hand_computed():
    # x = [1, 2, 3], y = [1, 2, 4]; dx = [-1, 0, 1], dy = [-4/3, -1/3, 5/3]
    # sum dx dy = 4/3 + 5/3 = 3; sum dx^2 = 2; sum dy^2 = 42/9 = 14/3
    # r = 3 / sqrt(2 * 14/3) = sqrt(27/28)
    assert pearson([1, 2, 3], [1, 2, 4]) == pytest.approx(math.sqrt(27 / 28))
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_spearman_hand_computed():
    # ranks x = [1, 2, 3, 4], y = [1, 3, 2, 4]; d = [0, -1, 1, 0]; 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [10, 30, 20, 40]) == pytest.approx(0.8)
    # ties: ranks x = [1, 2.5, 2.5, 4], y = [1, 2, 3, 4]; dx = [-1.5, 0, 0, 1.5], dy = [-1.5, -.5, .5, 1.5]
    # sum dx dy = 4.5, sum dx^2 = 4.5, sum dy^2 = 5 -> 4.5 / sqrt(22.5) = sqrt(0.9)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(math.sqrt(0.9))


@pytest.mark.parametrize("fn", [pearson, spearman])
def test_correlation_constant_input_is_zero_not_nan(fn):
    assert fn([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0
    assert fn([1.0, 2.0, 3.0], [0.5, 0.5, 0.5]) == 0.0


def test_correlations_agree_with_scipy_on_random_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = 0.5 * x + rng.normal(size=200)
    y[:20] = np.round(y[:20])  # some ties
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)


@pytest.mark.parametrize("fn", list(METRICS.values()))
def test_length_mismatch_and_empty_raise(fn):
    with pytest.raises(ValueError, match="length"):
        fn([1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="zero examples"):
        fn([], [])


def test_metric_registry_names():
    assert set(METRICS) == {"accuracy", "f1", "macro_f1", "mcc", "pearson", "spearman"}
    assert all(isinstance(fn(P, Y), float) for fn in METRICS.values())
