"""LengthDrop / LayerDrop / sandwich sampling (METHODS §1(b)): bounds, monotonicity, structure, reproducibility,
the search's gene grid, and LayerDrop that fits the depth."""

from __future__ import annotations

import math
import random

import pytest

from slimformer.errors import ConfigError
from slimformer.length import (
    LengthConfig,
    default_layer_drop_prob,
    sample_gene,
    sample_layers,
    sandwich,
    smallest_gene,
)
from slimformer.length.config import gene_config
from slimformer.length.genes import initial_population


def test_smallest_is_the_deterministic_lower_bound_and_the_searchs_smallest_gene():
    # hand-computed: ceil(0.8 * 100) = 80, ceil(64.0) = 64, ceil(51.2) = 52, ceil(41.6) = 42, ceil(33.6) = 34,
    # ceil(27.2) = 28
    assert smallest_gene(100, 6, 0.2) == (80, 64, 52, 42, 34, 28)
    # the floor of 2 (LAT's min_length): ceil(0.5 * 3) = 2, then max(ceil(1.0), 2) = 2
    assert smallest_gene(6, 4, 0.5) == (3, 2, 2, 2)
    for n, layers, p, floor in [(128, 3, 0.3, 2), (384, 12, 0.2, 2), (16, 2, 0.3, 1), (100, 6, 0.2, 5)]:
        searched = initial_population(0, num_layers=layers, max_length=n, min_length=floor, length_drop_ratio=p)[1]
        assert smallest_gene(n, layers, p, min_length=floor) == searched


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.9])
def test_sampled_genes_are_monotone_and_within_the_ratio_bound(p):
    rng = random.Random(0)
    seen_low = seen_high = False
    for _ in range(500):
        n = rng.randint(2, 300)
        gs = sample_gene(n, 6, p, rng)
        prev = n
        for g in gs:
            low = min(max(math.ceil(round((1 - p) * prev, 9)), 2), prev)
            assert low <= g <= prev
            seen_low |= g == low and g < prev
            seen_high |= g == prev
            prev = g
    assert seen_high
    assert seen_low or p == 0.0  # both ends of the inclusive range are reached


def test_sampled_genes_are_never_below_smallest():
    rng = random.Random(1)
    smallest = smallest_gene(128, 6, 0.2)
    for _ in range(200):
        assert all(a >= b for a, b in zip(sample_gene(128, 6, 0.2, rng), smallest))


def test_layer_drop_frequency_and_extremes():
    rng = random.Random(0)
    draws = [sample_layers(6, 0.2, rng) for _ in range(5000)]
    frac_skipped = sum(not r for d in draws for r in d) / (6 * 5000)
    assert abs(frac_skipped - 0.2) < 0.02
    assert sample_layers(6, 0.0, rng) == (True,) * 6


@pytest.mark.parametrize(("layers", "p"), [(1, 0.5), (2, 0.9), (3, 0.2), (3, 0.95), (6, 0.99)])
def test_layer_drop_never_empties_the_network(layers, p):
    single = 0
    for seed in range(2000):
        rng = random.Random(seed)
        runs = sample_layers(layers, p, rng)
        assert len(runs) == layers and any(runs)
        single += sum(runs) == 1
        for sub in sandwich(20, layers, random.Random(seed), layer_drop_prob=p, num_sandwich=2, layer_drop_full=True):
            assert sub.layers is None or len(sub.layers) >= 1
    if p >= 0.9:
        assert single > 0  # the rescue (one layer kept) is exercised


def test_default_layer_drop_depends_on_depth_and_an_explicit_value_wins():
    assert default_layer_drop_prob(3) == 0.0 and default_layer_drop_prob(4) == 0.0
    assert default_layer_drop_prob(6) == 0.2 and default_layer_drop_prob(12) == 0.2
    assert default_layer_drop_prob(3, 0.1) == 0.1 and default_layer_drop_prob(6, 0.0) == 0.0
    with pytest.raises(ConfigError, match="layer_drop_prob 1.0"):
        default_layer_drop_prob(6, 1.0)


def test_sandwich_structure_per_row_ratios_on_the_grid():
    rng = random.Random(3)
    subs = sandwich(50, 4, rng, num_sandwich=3, ratio_bound=0.2, layer_drop_prob=0.0)
    assert [s.kind for s in subs] == ["full", "smallest", "random", "random", "random"]
    assert subs[0].config is None and subs[0].layers is None
    assert subs[1].gene == smallest_gene(50, 4, 0.2) == (40, 32, 26, 21)
    assert (
        subs[1].config
        == LengthConfig.from_ratios([40 / 50, 32 / 50, 26 / 50, 21 / 50])
        == gene_config(subs[1].gene, "ratios", 50)
    )
    for s in subs[2:]:
        assert s.config == gene_config(s.gene, "ratios", 50) and s.config.ratios is not None
        assert all(a >= b for a, b in zip(s.gene, subs[1].gene))


def test_sandwich_layer_drop_of_the_full_model_is_a_flag_and_lengths_do_not_follow_layer_drop():
    full_dropped = [sandwich(50, 6, random.Random(s), layer_drop_prob=0.5)[0].layers for s in range(50)]
    assert all(x is None for x in full_dropped)  # default: the in-place teacher is never LayerDropped
    full_dropped = [
        sandwich(50, 6, random.Random(s), layer_drop_prob=0.5, layer_drop_full=True)[0].layers for s in range(50)
    ]
    assert any(x is not None for x in full_dropped)
    dropped = 0
    for seed in range(30):
        subs = sandwich(50, 6, random.Random(seed), layer_drop_prob=0.5, num_sandwich=2)
        # the smallest sub-model is the searchable lower bound whichever layers run
        assert subs[1].gene == smallest_gene(50, 6, 0.2)
        dropped += sum(s.layers is not None for s in subs[1:])
    assert dropped > 0


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
