"""LengthDrop / LayerDrop / sandwich sampling (METHODS §1(b)): bounds, monotonicity, structure, reproducibility."""

from __future__ import annotations

import math
import random

import pytest

from slimformer.errors import ConfigError
from slimformer.length import sample_layers, sample_lengths, sandwich, smallest_lengths


def test_smallest_is_the_deterministic_lower_bound():
    # hand-computed: ceil(0.8 * 100) = 80, ceil(64.0) = 64, ceil(51.2) = 52, ceil(41.6) = 42, ceil(33.6) = 34,
    # ceil(27.2) = 28
    assert smallest_lengths(100, 6, 0.2) == (80, 64, 52, 42, 34, 28)
    # the floor of 2 (LAT's min_length): ceil(0.5 * 3) = 2, then max(ceil(1.0), 2) = 2
    assert smallest_lengths(6, 4, 0.5) == (3, 2, 2, 2)
    # a skipped layer (LayerDrop) keeps the previous length
    assert smallest_lengths(100, 3, 0.2, runs=(True, False, True)) == (80, 80, 64)


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.9])
def test_sampled_lengths_are_monotone_and_within_the_ratio_bound(p):
    rng = random.Random(0)
    seen_low = seen_high = False
    for _ in range(500):
        n = rng.randint(1, 300)
        ls = sample_lengths(n, 6, p, rng)
        prev = n
        for length in ls:
            assert length <= prev
            assert length >= min(max(math.ceil((1 - p) * prev), 2), prev)
            seen_low |= length == max(math.ceil((1 - p) * prev), 2) and length < prev
            seen_high |= length == prev
            prev = length
    assert seen_high
    assert seen_low or p == 0.0  # both ends of the inclusive range are reached


def test_sampled_lengths_are_never_below_smallest():
    rng = random.Random(1)
    smallest = smallest_lengths(128, 6, 0.2)
    for _ in range(200):
        assert all(a >= b for a, b in zip(sample_lengths(128, 6, 0.2, rng), smallest))


def test_layer_drop_frequency_and_extremes():
    rng = random.Random(0)
    draws = [sample_layers(6, 0.2, rng) for _ in range(5000)]
    frac_skipped = sum(not r for d in draws for r in d) / (6 * 5000)
    assert abs(frac_skipped - 0.2) < 0.02
    assert sample_layers(6, 0.0, rng) == (True,) * 6


def test_sandwich_structure():
    rng = random.Random(3)
    subs = sandwich(50, 4, rng, num_sandwich=3, ratio_bound=0.2, layer_drop_prob=0.0)
    assert [s.kind for s in subs] == ["full", "smallest", "random", "random", "random"]
    assert subs[0].lengths is None and subs[0].layers is None
    assert subs[1].lengths == smallest_lengths(50, 4, 0.2) == (40, 32, 26, 21)
    for s in subs[2:]:
        assert all(a >= b for a, b in zip(s.lengths, subs[1].lengths))


def test_sandwich_layer_drop_of_the_full_model_is_a_flag():
    full_dropped = [sandwich(50, 6, random.Random(s), layer_drop_prob=0.5)[0].layers for s in range(50)]
    assert all(x is None for x in full_dropped)  # default: the in-place teacher is never LayerDropped
    full_dropped = [
        sandwich(50, 6, random.Random(s), layer_drop_prob=0.5, layer_drop_full=True)[0].layers for s in range(50)
    ]
    assert any(x is not None for x in full_dropped)
    subs = sandwich(50, 6, random.Random(0), layer_drop_prob=0.5, num_sandwich=20)
    for s in subs[1:]:
        if s.layers is not None:  # skipped layers keep the length of the previous layer
            for i in set(range(6)) - set(s.layers):
                assert s.lengths[i] == (s.lengths[i - 1] if i else 50)


def test_sandwich_is_reproducible_from_the_seed():
    a = sandwich(77, 6, random.Random(5), layer_drop_prob=0.2)
    b = sandwich(77, 6, random.Random(5), layer_drop_prob=0.2)
    assert a == b


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(ratio_bound=1.0), "length_drop_ratio_bound 1.0"),
        (dict(ratio_bound=-0.1), "length_drop_ratio_bound -0.1"),
        (dict(layer_drop_prob=1.0), "layer_drop_prob 1.0"),
        (dict(num_sandwich=-1), "num_sandwich -1"),
    ],
)
def test_bad_sampling_parameters(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        sandwich(10, 2, random.Random(0), **kwargs)
