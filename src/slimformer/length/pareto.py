"""Pareto front of (cost, metric) points and the two ways a user picks one point from it.

A point is a *length configuration* (or any other model variant) with a **cost to minimise** (MACs, FLOPs,
latency in ms ...) and a **metric to maximise** (accuracy, F1 ...). Point ``a`` *dominates* ``b`` when it
is no more expensive and no less accurate, and strictly better in at least one of the two. The Pareto
front is the set of non-dominated points; sorted by cost, its metric is strictly increasing.

This is the frontier of the Length-Adaptive Transformer search (Kim & Cho, ACL 2021,
https://arxiv.org/abs/2010.07003, code ``evolution.py``) with the de-duplication rule it intended (among
equal costs keep the best metric; METHODS.md §1(f) pitfall 3), and the two questions of the
Dynamic-TinyBERT / QuaLA-MiniLM protocol (METHODS.md §1(d)): "the cheapest point within X points of
the full model" (:func:`pick_within_loss`) and "the best point under a cost budget"
(:func:`pick_within_budget`).

Metric units: slimformer metrics are either fractions (GLUE accuracy 0.912) or points (SQuAD F1 88.5);
see :mod:`slimformer.tasks.metrics`. ``max_loss`` is always in the metric's own units; a user-facing
"lose at most 1.0 point" is converted with :func:`loss_points_to_metric_units`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from slimformer.errors import ConfigError
from slimformer.tasks.registry import get_task

__all__ = [
    "MetricScale",
    "ParetoPoint",
    "PointLike",
    "as_point",
    "dominates",
    "pareto_front",
    "staircase_area",
    "loss_points_to_metric_units",
    "metric_scale_for_task",
    "pick_within_loss",
    "pick_within_budget",
]

MetricScale = Literal["fraction", "points"]

# Relative slack on the loss threshold, so 0.9 - 0.01 == 0.89 holds despite float rounding.
_REL_TOL = 1e-9


@dataclass(frozen=True)
class ParetoPoint:
    """One evaluated variant.

    Attributes:
        cost: the cost to minimise, in the caller's unit (MACs, FLOPs or ms; see ``cost_name`` of the search).
        metric: the metric to maximise, in its natural unit (fraction or points).
        config: the length configuration it was measured with (one kept-token count per layer,
            non-increasing), or ``None`` for a named reference point.
    """

    cost: float
    metric: float
    config: tuple[int, ...] | None = None


PointLike = ParetoPoint | tuple[float, float] | tuple[float, float, tuple[int, ...] | None]


def as_point(p: PointLike) -> ParetoPoint:
    """A :class:`ParetoPoint` from itself or a ``(cost, metric[, config])`` tuple.

    Raises:
        ConfigError: the cost or metric is NaN.
    """
    if isinstance(p, ParetoPoint):
        point = p
    else:
        point = ParetoPoint(float(p[0]), float(p[1]), tuple(p[2]) if len(p) > 2 and p[2] is not None else None)
    if math.isnan(point.cost) or math.isnan(point.metric):
        raise ConfigError(f"Pareto point {point} has a NaN cost or metric; every point needs finite numbers")
    return point


def dominates(a: PointLike, b: PointLike) -> bool:
    """Whether ``a`` dominates ``b``: ``a.cost <= b.cost`` and ``a.metric >= b.metric``, one strictly.

    Two points with equal cost and equal metric do not dominate each other.
    """
    a, b = as_point(a), as_point(b)
    return a.cost <= b.cost and a.metric >= b.metric and (a.cost < b.cost or a.metric > b.metric)


def pareto_front(points: Iterable[PointLike]) -> list[ParetoPoint]:
    """The non-dominated points, sorted by increasing cost (and so strictly increasing metric).

    Points with identical ``(cost, metric)`` are interchangeable; only the first one given is kept.
    Runs in ``O(n log n)``: sort by ``(cost, -metric)``, then keep a point only when its metric is
    strictly higher than every cheaper point kept so far.

    Args:
        points: :class:`ParetoPoint` objects or ``(cost, metric[, config])`` tuples.

    Returns:
        The front, cheapest first; empty for no points.

    Raises:
        ConfigError: a cost or metric is NaN.
    """
    pts = [as_point(p) for p in points]
    order = sorted(range(len(pts)), key=lambda i: (pts[i].cost, -pts[i].metric, i))
    front: list[ParetoPoint] = []
    for i in order:
        if not front or pts[i].metric > front[-1].metric:
            front.append(pts[i])
    return front


def staircase_area(front: Sequence[ParetoPoint]) -> float:
    """Normalised area under the front's staircase, the progress number the LAT search logs.

    ``sum_k (cost_{k+1} - cost_k) * metric_k / (cost_max - cost_min)`` over the front sorted by cost
    [code: clovaai/length-adaptive-transformer evolution.py]; the metric of the single point when all
    costs are equal. In metric units; larger is better.

    Raises:
        ConfigError: ``front`` is empty.
    """
    pts = sorted((as_point(p) for p in front), key=lambda p: p.cost)
    if not pts:
        raise ConfigError("cannot compute the area of an empty Pareto front")
    span = pts[-1].cost - pts[0].cost
    if span <= 0:
        return max(p.metric for p in pts)
    return sum((b.cost - a.cost) * a.metric for a, b in zip(pts, pts[1:])) / span


def loss_points_to_metric_units(points: float, scale: MetricScale) -> float:
    """Convert an allowed loss given in points (``--max-loss 1.0``) to the metric's own units.

    Args:
        points: the loss in points (percentage points for accuracy-like metrics).
        scale: ``"fraction"`` for metrics in ``[0, 1]`` (GLUE accuracy, F1, MCC, correlations) ->
            ``points / 100``; ``"points"`` for metrics already in ``[0, 100]`` (SQuAD EM/F1) -> unchanged.

    Raises:
        ConfigError: ``points`` is negative or ``scale`` is unknown.
    """
    if not points >= 0:
        raise ConfigError(f"max loss must be >= 0 points, got {points}")
    if scale == "fraction":
        return points / 100.0
    if scale == "points":
        return float(points)
    raise ConfigError(f"metric scale must be 'fraction' or 'points', got {scale!r}")


def metric_scale_for_task(task: str) -> MetricScale:
    """The unit of a registered task's main metric: ``"points"`` for span QA (SQuAD), else ``"fraction"``.

    Raises:
        ConfigError: unknown task name.
    """
    return "points" if get_task(task).kind == "qa" else "fraction"


def pick_within_loss(front: Iterable[PointLike], reference_metric: float, max_loss: float) -> ParetoPoint:
    """The cheapest point whose metric is at least ``reference_metric - max_loss``.

    This is the "N times faster, lose at most X" question (METHODS.md §1(d)); the reference is usually the
    full-length model's metric on the same split.

    Args:
        front: candidate points (a Pareto front or any set; dominated points are never chosen).
        reference_metric: the metric to compare against, in the metric's units.
        max_loss: the allowed drop in the *metric's own units* (use :func:`loss_points_to_metric_units`
            to turn "1.0 point" into 0.01 for an accuracy fraction).

    Returns:
        The lowest-cost qualifying point (the highest metric among equal costs).

    Raises:
        ConfigError: ``front`` is empty, ``max_loss`` is negative, or no point reaches the threshold
            (the message names the threshold and the best metric available).
    """
    pts = pareto_front(front)
    if not pts:
        raise ConfigError("cannot pick a length configuration from an empty Pareto front")
    if not max_loss >= 0:
        raise ConfigError(f"max loss must be >= 0 (metric units), got {max_loss}")
    threshold = reference_metric - max_loss
    slack = _REL_TOL * max(1.0, abs(threshold))
    for p in pts:  # cheapest first
        if p.metric >= threshold - slack:
            return p
    best = pts[-1]
    raise ConfigError(
        f"no point reaches metric {threshold:.6g} (reference {reference_metric:.6g} - max loss {max_loss:.6g}); "
        f"the best available is {best.metric:.6g} at cost {best.cost:.6g}"
    )


def pick_within_budget(front: Iterable[PointLike], max_cost: float, *, unit: str = "") -> ParetoPoint:
    """The highest-metric point whose cost is at most ``max_cost`` (the cheapest among equal metrics).

    Args:
        front: candidate points (a Pareto front or any set).
        max_cost: the budget, in the cost's unit.
        unit: the cost's unit for the error message (``"MACs"``, ``"ms"``).

    Raises:
        ConfigError: ``front`` is empty, or the budget is cheaper than every point (the message names the
            budget and the cheapest cost available).
    """
    pts = pareto_front(front)
    if not pts:
        raise ConfigError("cannot pick a length configuration from an empty Pareto front")
    within = [p for p in pts if p.cost <= max_cost]
    if not within:
        u = f" {unit}" if unit else ""
        raise ConfigError(
            f"cost budget {max_cost:.6g}{u} is below every point; the cheapest available costs {pts[0].cost:.6g}{u}"
        )
    return within[-1]  # the front's metric increases with cost
