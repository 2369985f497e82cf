"""Evolutionary length-configuration search: gene operators, front, determinism, caching, resume, store."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter

import pytest

from slimformer.errors import ConfigError
from slimformer.length.genes import (
    check_gene,
    constant_ratio_gene,
    crossover,
    initial_population,
    mean_relative_length,
    mutate,
)
from slimformer.length.pareto import dominates, pareto_front
from slimformer.length.search import _select_parents, evolutionary_search

L, N, MIN = 4, 16, 2
TARGET = (14, 11, 7, 4)


def metric(g):
    """Synthetic metric with a known optimum: minus the squared distance to TARGET."""
    return -float(sum((a - b) ** 2 for a, b in zip(g, TARGET)))


def cost(g):
    """Synthetic cost: total kept tokens."""
    return float(sum(g))


SMALL = dict(
    num_layers=L,
    max_length=N,
    min_length=MIN,
    length_drop_ratio=0.5,
    population=5,
    mutation_size=10,
    crossover_size=10,
    iterations=15,
)


def _monotone_in_bounds(g, lo=MIN, hi=N):
    return all(lo <= x <= hi for x in g) and all(a >= b for a, b in zip(g, g[1:]))


# ---- genes -------------------------------------------------------------------------------------------------


def test_constant_ratio_gene_hand_values():
    # 0.8*100 = 80 (not 81 from float error), 0.8*80 = 64, ceil(0.8*64 = 51.2) = 52
    assert constant_ratio_gene(0.2, num_layers=3, max_length=100, min_length=2) == (80, 64, 52)
    assert constant_ratio_gene(0.0, num_layers=2, max_length=7, min_length=2) == (7, 7)
    assert constant_ratio_gene(0.9, num_layers=3, max_length=100, min_length=2) == (10, 2, 2)
    with pytest.raises(ConfigError, match="ratio"):
        constant_ratio_gene(1.5, num_layers=2, max_length=8, min_length=2)


def test_initial_population_spacing():
    genes = initial_population(6, num_layers=6, max_length=128, min_length=2, length_drop_ratio=0.2)
    smallest = constant_ratio_gene(0.2, num_layers=6, max_length=128, min_length=2)
    assert genes[0] == (128,) * 6 and genes[1] == smallest
    assert len(genes) == len(set(genes)) == 8
    m_min = mean_relative_length(smallest, 128)
    for k, g in zip(range(6, 0, -1), genes[2:]):
        assert _monotone_in_bounds(g, 2, 128)
        target = m_min + (1 - m_min) * k / 7
        assert abs(mean_relative_length(g, 128) - target) < 0.02  # integer lengths: close, not exact


def test_check_gene_errors():
    assert check_gene([5, 4], num_layers=2, min_length=2, max_length=8) == (5, 4)
    for bad, match in [((5,), "one per layer"), ((9, 4), "outside"), ((1, 1), "outside"), ((4, 5), "non-increasing")]:
        with pytest.raises(ConfigError, match=match):
            check_gene(bad, num_layers=2, min_length=2, max_length=8)


@pytest.mark.parametrize("q", [0.0, 0.3, 0.5, 1.0])
def test_mutation_keeps_genes_monotone_and_in_bounds(q):
    rng = random.Random(0)
    for _ in range(500):
        parent = tuple(sorted((rng.randint(MIN, N) for _ in range(L)), reverse=True))
        child = mutate(parent, rng, mutation_prob=q, min_length=MIN, max_length=N)
        assert _monotone_in_bounds(child), (parent, child)
        if q == 0.0:
            assert child == parent


def test_mutation_window_is_the_parents_next_length_to_the_childs_previous():
    # layer 1 of parent (10, 6, 3) resampled alone: window [parent[2], child[0]] = [3, 10]
    seen = set()
    rng = random.Random(1)
    for _ in range(2000):
        c = mutate((10, 6, 3), rng, mutation_prob=0.5, min_length=2, max_length=12)
        if c[0] == 10 and c[2] == 3:
            seen.add(c[1])
    assert seen == set(range(3, 11))


def test_crossover_is_rounded_up_midpoint_and_monotone():
    assert crossover((10, 7, 3), (5, 4, 3)) == (8, 6, 3)
    with pytest.raises(ConfigError):
        crossover((1, 1), (1,))
    rng = random.Random(2)
    for _ in range(500):
        a = tuple(sorted((rng.randint(MIN, N) for _ in range(L)), reverse=True))
        b = tuple(sorted((rng.randint(MIN, N) for _ in range(L)), reverse=True))
        c = crossover(a, b)
        assert _monotone_in_bounds(c) and all(min(x, y) <= z <= max(x, y) for x, y, z in zip(a, b, c))


def test_select_parents_by_cost_bins():
    front = pareto_front([(float(c), float(c), (c,)) for c in (0, 1, 2, 5, 9, 10)])
    assert _select_parents(front, None) == [(c,) for c in (0, 1, 2, 5, 9, 10)]
    # 3 bins of width 10/3 over [0, 10]: {0, 1, 2}, {5}, {9, 10} -> best (= costliest) of each
    assert _select_parents(front, 3) == [(2,), (5,), (10,)]


# ---- search ------------------------------------------------------------------------------------------------


def test_search_front_is_non_dominated_and_feasible():
    r = evolutionary_search(metric, cost, seed=0, **SMALL)
    lo, hi = r.cost_bounds
    assert (lo, hi) == (cost((8, 4, 2, 2)), cost((N,) * L))  # smallest gene at p = 0.5, full gene
    feasible = [p for p in r.evaluated if lo <= p.cost <= hi]
    assert all(_monotone_in_bounds(p.config) for p in r.evaluated)
    assert not any(dominates(q, p) for p in r.front for q in feasible)
    assert set(r.front) == set(pareto_front(feasible))
    assert r.full.config == (N,) * L and r.full.metric == metric((N,) * L)
    assert r.history[0].iteration == 0 and len(r.history) == SMALL["iterations"] + 1
    assert r.history[-1].front == r.front
    for old, new in zip(r.history, r.history[1:]):  # the front only improves: each old point is weakly dominated
        assert all(any(q.cost <= p.cost and q.metric >= p.metric for q in new.front) for p in old.front)
    json.dumps(r.to_dict())


def test_search_is_deterministic_for_a_seed():
    a = evolutionary_search(metric, cost, seed=3, **SMALL)
    b = evolutionary_search(metric, cost, seed=3, **SMALL)
    c = evolutionary_search(metric, cost, seed=4, **SMALL)
    assert a == b
    assert [p.config for p in a.evaluated] != [p.config for p in c.evaluated]


def test_each_gene_is_evaluated_and_costed_once():
    calls, costs = Counter(), Counter()

    def ev(g):
        calls[g] += 1
        return metric(g)

    def co(g):
        costs[g] += 1
        return cost(g)

    r = evolutionary_search(ev, co, seed=0, **SMALL)
    assert max(calls.values()) == 1 and max(costs.values()) == 1
    assert set(calls) == {p.config for p in r.evaluated} and r.new_evaluations == len(calls)
    assert len(calls) == 7 + 15 * 20  # initial genes + (mutation + crossover) children per iteration


def test_search_finds_the_known_front():
    r = evolutionary_search(metric, cost, seed=0, **SMALL)
    lo, hi = r.cost_bounds
    space = [g for g in itertools.product(range(MIN, N + 1), repeat=L) if _monotone_in_bounds(g)]
    true = pareto_front([(cost(g), metric(g), g) for g in space if lo <= cost(g) <= hi])
    found = {(p.cost, p.metric) for p in r.front}
    exact = sum((p.cost, p.metric) in found for p in true)
    # 307 of 3060 genes evaluated; uniform sampling of as many genes finds 2-7 of the 21 true points
    assert len(true) == 21 and exact >= 16
    for p in true:  # everywhere on the front, at most a small regret
        assert p.metric - max(q.metric for q in r.front if q.cost <= p.cost) <= 2.0


class _Interrupt(Exception):
    pass


def test_resume_from_store_equals_uninterrupted_run(tmp_path):
    store = tmp_path / "search.json"
    reference = evolutionary_search(metric, cost, seed=5, **SMALL)
    budget = {"n": 120}

    def flaky(g):
        if budget["n"] == 0:
            raise _Interrupt
        budget["n"] -= 1
        return metric(g)

    with pytest.raises(_Interrupt):
        evolutionary_search(flaky, cost, seed=5, store=store, model_id="m", **SMALL)
    saved = json.loads(store.read_text())
    assert sum(r["metric"] is not None for r in saved["records"]) == 120

    seen = Counter()

    def count(g):
        seen[g] += 1
        return metric(g)

    resumed = evolutionary_search(count, cost, seed=5, store=store, model_id="m", **SMALL)
    assert resumed.front == reference.front and resumed.history == reference.history
    assert resumed.evaluated == reference.evaluated
    assert resumed.new_evaluations == len(reference.evaluated) - 120 == sum(seen.values())
    again = evolutionary_search(count, cost, seed=5, store=store, model_id="m", **SMALL)
    assert again.new_evaluations == 0 and again.front == reference.front


def test_foreign_or_corrupt_store_is_refused(tmp_path):
    store = tmp_path / "search.json"
    kw = dict(SMALL, iterations=1)
    evolutionary_search(metric, cost, store=store, model_id="minilm-a", metric_name="accuracy", cost_name="MACs", **kw)
    before = store.read_text()
    with pytest.raises(ConfigError) as e:
        evolutionary_search(
            metric, cost, store=store, model_id="minilm-b", metric_name="accuracy", cost_name="MACs", **kw
        )
    assert "model='minilm-a' (now 'minilm-b')" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="max_length=16 \\(now 32\\)"):
        evolutionary_search(
            metric,
            cost,
            store=store,
            model_id="minilm-a",
            metric_name="accuracy",
            cost_name="MACs",
            **dict(kw, max_length=32),
        )
    assert store.read_text() == before, "a refused store is left untouched"
    other = tmp_path / "other.json"
    other.write_text('{"rows": []}')
    with pytest.raises(ConfigError, match="not a length-search store"):
        evolutionary_search(metric, cost, store=other, **kw)
    other.write_text("{not json")
    with pytest.raises(ConfigError, match="not readable JSON"):
        evolutionary_search(metric, cost, store=other, **kw)


def test_settings_and_bounds_errors():
    with pytest.raises(ConfigError, match="mutation_prob"):
        evolutionary_search(metric, cost, **dict(SMALL, mutation_prob=1.5))
    with pytest.raises(ConfigError, match="min_length"):
        evolutionary_search(metric, cost, **dict(SMALL, min_length=20))
    with pytest.raises(ConfigError, match="lo <= hi"):
        evolutionary_search(metric, cost, cost_bounds=(50.0, 10.0), **SMALL)
    with pytest.raises(ConfigError, match="exclude every initial gene"):
        evolutionary_search(metric, cost, cost_bounds=(1.0, 2.0), **SMALL)
    with pytest.raises(ConfigError, match="metric must be finite"):
        evolutionary_search(lambda g: float("nan"), cost, **SMALL)


def test_custom_cost_bounds_and_parent_bins():
    r = evolutionary_search(metric, cost, cost_bounds=(20.0, 40.0), parents=3, seed=1, **SMALL)
    assert all(20.0 <= p.cost <= 40.0 for p in r.front)
    assert r.full.cost == 64.0 and r.full not in r.front  # always measured, never feasible here


def test_one_sided_bounds_and_a_noisy_cost_where_the_smallest_gene_is_dearest():
    r = evolutionary_search(metric, cost, cost_bounds=(None, 40.0), seed=1, **SMALL)
    assert r.cost_bounds[1] == 40.0 and all(p.cost <= 40.0 for p in r.front)
    assert r.cost_bounds[0] == min(p.cost for p in r.evaluated)  # the smallest gene's own (cached) cost

    def noisy(g):  # a measured latency on a tiny model: the full gene may time faster than the smallest one
        return 100.0 - sum(g) if g == (N,) * L else float(sum(g))

    r = evolutionary_search(metric, noisy, seed=1, **SMALL)
    assert r.cost_bounds[0] <= r.cost_bounds[1] and r.front


def test_exhausted_space_stops_early():
    # L=2, N=3, min 2: genes (3,3), (3,2), (2,2) only -> nothing new after the first iteration
    r = evolutionary_search(
        metric,
        cost,
        num_layers=2,
        max_length=3,
        min_length=2,
        length_drop_ratio=0.5,
        population=2,
        mutation_size=5,
        crossover_size=5,
        iterations=10,
    )
    assert {p.config for p in r.evaluated} == {(3, 3), (3, 2), (2, 2)}
    assert len(r.history) < 11
