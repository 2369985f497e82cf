"""Evolutionary search of length configurations: a Pareto front of cost vs metric, no retraining.

Implements the multi-objective search of the Length-Adaptive Transformer (Kim & Cho, ACL 2021,
https://arxiv.org/abs/2010.07003; code ``length_adaptive_transformer/evolution.py``; METHODS.md §1(b),
defaults §1(c)), as a plain function over two callables, independent of the model:

1. Start from :func:`~slimformer.length.genes.initial_population` (full gene, smallest gene, ``population``
   constant-ratio genes). Feasible genes are evaluated.
2. Each iteration: the population is replaced by its Pareto front (:func:`~slimformer.length.pareto.pareto_front`;
   the staircase area is logged); then ``mutation_size`` children are bred by LAT mutation from parents drawn
   uniformly from the population, then ``crossover_size`` children by LAT midpoint crossover of two distinct
   parents. A child counts only if it is new to this run and feasible, i.e. its cost lies in ``cost_bounds``
   (default: from the smallest gene's cost to the full gene's cost). Each accepted child is evaluated at once
   and joins the parent pool immediately, as in the LAT code.
3. The result is the Pareto front of every feasible gene evaluated, plus the per-iteration history.

Choices of ours (documented deviations): ``min_length`` defaults to 2 as in LAT (a length configuration may
go down to ``[CLS]`` plus one token); ``parents=k`` optionally restricts the parents to the best point of
each of ``k`` equal-width cost bins of the front (LAT uses the whole front: ``parents=None``, the default);
each breeding phase gives up after ``50 * size`` draws so a small, exhausted gene space cannot loop forever,
and the search stops early when an iteration adds no gene; the full gene is always evaluated (it is the
reference of :func:`~slimformer.length.pareto.pick_within_loss`) even when ``cost_bounds`` exclude it.

Caching and resume: ``evaluate`` and ``cost`` are called at most once per gene (a
:class:`~slimformer.length.search_store.SearchStore`; with ``store=path`` it is a JSON file rewritten
atomically after every evaluation and every iteration). Rerunning with the same store replays the search
from its seed, reading cached measurements instead of calling ``evaluate`` again, and continues where the
interrupted run stopped; with deterministic ``cost`` and ``evaluate`` the result equals an uninterrupted run.

Why not optuna: optuna 5.0.0 is available from the package index (not installed). Its NSGA-II sampler
breeds only parameters in the *intersection* search space of fixed distributions; a monotone gene needs
``suggest_int(f"l{i}", min_length, l_{i-1})``, whose range changes from trial to trial, so every layer but the
first would fall back to independent random sampling. Re-parametrising with per-layer drop ratios fixes the
space but maps many trials onto one integer gene (re-evaluated unless wrapped), replaces LAT's operators and
frontier-as-population scheme with crowding-distance selection, and adds a dependency and a storage backend
for resuming. The LAT search is ~100 lines; we implement it directly.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from tqdm.auto import tqdm

from slimformer.errors import ConfigError
from slimformer.length.genes import Gene, crossover, initial_population, mutate
from slimformer.length.pareto import ParetoPoint, pareto_front, staircase_area
from slimformer.length.search_store import SearchStore

__all__ = ["IterationRecord", "SearchResult", "evolutionary_search"]

_TRIES_PER_CHILD = 50
_REL_TOL = 1e-9


@dataclass(frozen=True)
class IterationRecord:
    """The population after ``iteration`` breeding rounds (0 = the initial population).

    Attributes:
        iteration: number of breeding rounds done.
        front: the Pareto front of every feasible gene evaluated so far, cheapest first.
        area: :func:`~slimformer.length.pareto.staircase_area` of ``front`` (metric units).
        num_evaluated: genes evaluated so far (cached ones included).
    """

    iteration: int
    front: tuple[ParetoPoint, ...]
    area: float
    num_evaluated: int


@dataclass(frozen=True)
class SearchResult:
    """What :func:`evolutionary_search` returns.

    Attributes:
        front: final Pareto front (cost ascending, metric strictly ascending); ``config`` holds each gene.
        full: the full-length gene ``(max_length,) * num_layers`` and its measurements (the reference).
        evaluated: every gene this search evaluated, in evaluation order (replayed ones included).
        history: one record per iteration, ``history[0]`` being the initial population.
        cost_bounds: the feasible cost range ``(lo, hi)`` used.
        new_evaluations: calls to ``evaluate`` made by this call (0 when everything came from the store).
    """

    front: tuple[ParetoPoint, ...]
    full: ParetoPoint
    evaluated: tuple[ParetoPoint, ...]
    history: tuple[IterationRecord, ...]
    cost_bounds: tuple[float, float]
    new_evaluations: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (configs as lists)."""
        return asdict(self)


def _check_settings(**kw: Any) -> None:
    if kw["num_layers"] < 1:
        raise ConfigError(f"num_layers must be >= 1, got {kw['num_layers']}")
    if not 1 <= kw["min_length"] <= kw["max_length"]:
        raise ConfigError(
            f"need 1 <= min_length <= max_length, got min_length={kw['min_length']}, max_length={kw['max_length']}"
        )
    for name in ("population", "mutation_size", "crossover_size", "iterations"):
        if kw[name] < 0:
            raise ConfigError(f"{name} must be >= 0, got {kw[name]}")
    if kw["parents"] is not None and kw["parents"] < 1:
        raise ConfigError(f"parents must be >= 1 or None (whole front), got {kw['parents']}")
    if not 0.0 <= kw["mutation_prob"] <= 1.0:
        raise ConfigError(f"mutation_prob must be in [0, 1], got {kw['mutation_prob']}")


def _select_parents(front: list[ParetoPoint], k: int | None) -> list[Gene]:
    """All front genes, or the best (= most expensive) front point of each of ``k`` equal-width cost bins."""
    if k is None or len(front) <= k:
        return [p.config for p in front]
    lo, span = front[0].cost, front[-1].cost - front[0].cost
    best: dict[int, ParetoPoint] = {}
    for p in front:  # cost ascending, so the last point of a bin has its best metric
        best[min(int((p.cost - lo) / span * k), k - 1) if span > 0 else 0] = p
    return [best[b].config for b in sorted(best)]


def evolutionary_search(
    evaluate: Callable[[Gene], float],
    cost: Callable[[Gene], float],
    *,
    num_layers: int,
    max_length: int,
    min_length: int = 2,
    length_drop_ratio: float = 0.2,
    population: int = 20,
    parents: int | None = None,
    mutation_size: int = 30,
    crossover_size: int = 30,
    mutation_prob: float = 0.5,
    iterations: int = 30,
    cost_bounds: tuple[float | None, float | None] | None = None,
    seed: int = 0,
    store: str | os.PathLike[str] | None = None,
    model_id: str = "",
    metric_name: str = "metric",
    cost_name: str = "cost",
    progress: bool = False,
) -> SearchResult:
    """Search per-layer lengths for the best metric at every cost (LAT evolutionary search).

    Args:
        evaluate: gene -> metric to maximise (e.g. accuracy of ``forward_with_config`` on a search split that
            is *not* the split final figures are reported on; METHODS.md §1(f) pitfall 9).
        cost: gene -> cost to minimise (MACs of the configuration at full padded length, or measured latency
            in ms).
        num_layers: ``L``, entries per gene.
        max_length: ``N``, the padded sequence length in tokens (the full gene is ``(N,) * L``).
        min_length: smallest length a layer may keep (LAT: 2).
        length_drop_ratio: LengthDrop ratio bound ``p``; defines the smallest gene and the initial population.
        population: number of constant-ratio genes in the initial population (LAT ``population_size``, 20).
        parents: ``None`` (LAT) to breed from the whole front, or ``k`` cost-binned front points.
        mutation_size: children accepted from mutation per iteration (LAT 30).
        crossover_size: children accepted from crossover per iteration (LAT 30).
        mutation_prob: per-layer resampling probability of a mutation (LAT 0.5).
        iterations: breeding rounds (LAT README 30).
        cost_bounds: feasible cost range ``(lo, hi)``; a side that is None (or no bounds) defaults to the search's
            own cost of the smallest / full gene, ordered (a measured latency is noisy: the smallest gene may time
            slower than the full one).
        seed: seed of the search's own ``random.Random``.
        store: JSON file caching every measurement; an existing one is resumed.
        model_id: identity of the model measured (e.g. its checkpoint path and hash), recorded in the store.
        metric_name: name of the metric (``"accuracy"``), recorded in the store.
        cost_name: name and unit of the cost (``"MACs"``, ``"ort-int8-ms"``), recorded in the store.
        progress: show a tqdm bar over iterations.

    Returns:
        A :class:`SearchResult`.

    Raises:
        ConfigError: an invalid setting; ``cost_bounds`` with ``lo > hi`` or excluding every initial gene;
            a NaN/infinite cost or metric; a store file written for another setup (one line each).
    """
    fingerprint = dict(model=model_id, num_layers=num_layers, max_length=max_length, metric=metric_name, cost=cost_name)
    settings = dict(
        min_length=min_length,
        length_drop_ratio=length_drop_ratio,
        population=population,
        parents=parents,
        mutation_size=mutation_size,
        crossover_size=crossover_size,
        mutation_prob=mutation_prob,
        iterations=iterations,
        cost_bounds=cost_bounds,
        seed=seed,
    )
    _check_settings(num_layers=num_layers, max_length=max_length, **settings)
    cache = SearchStore(store, fingerprint, settings)
    rng = random.Random(seed)
    evaluated: dict[Gene, ParetoPoint] = {}
    calls = 0

    def cost_of(g: Gene) -> float:
        if g not in cache.costs:
            c = float(cost(g))
            if not math.isfinite(c):
                raise ConfigError(f"{cost_name} of length configuration {g} is {c}; the cost must be a finite number")
            cache.set_cost(g, c)
        return cache.costs[g]

    def measure(g: Gene) -> ParetoPoint:
        nonlocal calls
        c = cost_of(g)
        if g not in cache.metrics:
            m = float(evaluate(g))
            if not math.isfinite(m):
                raise ConfigError(f"{metric_name} of length configuration {g} is {m}; the metric must be finite")
            calls += 1
            cache.set_metric(g, m)
        evaluated[g] = ParetoPoint(c, cache.metrics[g], g)
        return evaluated[g]

    genes = initial_population(
        population,
        num_layers=num_layers,
        max_length=max_length,
        min_length=min_length,
        length_drop_ratio=length_drop_ratio,
    )
    full_gene, smallest = genes[0], genes[1]
    own_lo, own_hi = sorted((cost_of(smallest), cost_of(full_gene)))  # cached: the search's own measurements
    lo, hi = cost_bounds if cost_bounds is not None else (None, None)
    lo, hi = own_lo if lo is None else lo, own_hi if hi is None else hi
    if lo > hi:
        raise ConfigError(f"cost_bounds must be (lo, hi) with lo <= hi, got ({lo}, {hi})")
    slack = _REL_TOL * max(1.0, abs(lo), abs(hi))

    def feasible(g: Gene) -> bool:
        return lo - slack <= cost_of(g) <= hi + slack

    full = measure(full_gene)
    pop = pareto_front([measure(g) for g in genes if feasible(g)])
    if not pop:
        costs = [cost_of(g) for g in genes]
        raise ConfigError(
            f"cost_bounds ({lo:.6g}, {hi:.6g}) exclude every initial gene (costs {min(costs):.6g} to {max(costs):.6g})"
        )
    history = [IterationRecord(0, tuple(pop), staircase_area(pop), len(evaluated))]
    cache.flush()

    def breed(size: int, make: Callable[[list[Gene]], Gene | None], pool: list[Gene]) -> list[ParetoPoint]:
        """Accept up to ``size`` new feasible children of ``pool`` (each joins ``pool`` at once)."""
        children: list[ParetoPoint] = []
        for _ in range(_TRIES_PER_CHILD * size):
            if len(children) >= size:
                break
            child = make(pool)
            if child is not None and child not in evaluated and feasible(child):
                children.append(measure(child))
                pool.append(child)
        return children

    def mutant(pool: list[Gene]) -> Gene:
        return mutate(rng.choice(pool), rng, mutation_prob=mutation_prob, min_length=min_length, max_length=max_length)

    def cross(pool: list[Gene]) -> Gene | None:
        return crossover(*rng.sample(pool, 2)) if len(pool) >= 2 else None

    with tqdm(total=iterations, desc="length search", disable=not progress) as bar:
        for it in range(1, iterations + 1):
            pool = _select_parents(pop, parents)
            children = breed(mutation_size, mutant, pool)
            children += breed(crossover_size, cross, pool)
            pop = pareto_front(pop + children)
            history.append(IterationRecord(it, tuple(pop), staircase_area(pop), len(evaluated)))
            cache.flush()
            bar.update(1)
            bar.set_postfix(front=len(pop), evaluated=len(evaluated), area=f"{history[-1].area:.4g}")
            if not children:
                break
    return SearchResult(tuple(pop), full, tuple(evaluated.values()), tuple(history), (lo, hi), calls)
