"""Pareto front, budget / loss picks, metric-unit conversion and the Pareto plot."""

from __future__ import annotations

import random
import sys

import pytest

from slimformer.errors import ConfigError
from slimformer.length.pareto import (
    ParetoPoint,
    dominates,
    loss_points_to_metric_units,
    metric_scale_for_task,
    pareto_front,
    pick_within_budget,
    pick_within_loss,
    staircase_area,
)


def _brute_force_front(points):
    """Non-dominated (cost, metric) pairs by the O(n^2) definition."""
    keep = set()
    for i, (c, m) in enumerate(points):
        if not any((c2 <= c and m2 >= m and (c2 < c or m2 > m)) for j, (c2, m2) in enumerate(points) if j != i):
            keep.add((c, m))
    return keep


def test_dominates_hand_cases():
    assert dominates((1, 0.9), (2, 0.9))  # cheaper, same metric
    assert dominates((1, 0.9), (1, 0.8))  # same cost, better metric
    assert not dominates((1, 0.9), (1, 0.9))  # identical: no one dominates
    assert not dominates((1, 0.8), (2, 0.9))  # a trade-off
    assert not dominates((2, 0.9), (1, 0.8))


@pytest.mark.parametrize("seed", range(20))
def test_pareto_front_matches_brute_force_with_ties(seed):
    rng = random.Random(seed)
    # small integer grid -> many equal costs, equal metrics and exact duplicates
    pts = [(rng.randint(0, 8), rng.randint(0, 8) / 8) for _ in range(rng.randint(1, 40))]
    front = pareto_front(pts)
    got = [(p.cost, p.metric) for p in front]
    assert len(got) == len(set(got)), "exact duplicates are collapsed"
    assert set(got) == _brute_force_front(pts)
    assert [c for c, _ in got] == sorted(c for c, _ in got)
    assert all(b[1] > a[1] and b[0] > a[0] for a, b in zip(got, got[1:])), "cost and metric strictly increase"


def test_pareto_front_keeps_first_duplicate_and_config():
    pts = [ParetoPoint(2.0, 0.5, (4, 4)), ParetoPoint(2.0, 0.5, (5, 3)), ParetoPoint(1.0, 0.4, (3, 3))]
    front = pareto_front(pts)
    assert front == [pts[2], pts[0]]
    assert pareto_front([]) == []


def test_pareto_front_rejects_nan():
    with pytest.raises(ConfigError, match="NaN"):
        pareto_front([(1.0, float("nan"))])


def test_staircase_area_hand_computed():
    # (cost, metric): (0, .5), (2, .7), (4, .9) -> (2*.5 + 2*.7) / 4 = 0.6
    assert staircase_area([(4, 0.9), (0, 0.5), (2, 0.7)]) == pytest.approx(0.6)
    assert staircase_area([(3, 0.8)]) == 0.8
    with pytest.raises(ConfigError):
        staircase_area([])


def test_loss_conversion_and_task_scale():
    assert loss_points_to_metric_units(1.0, "fraction") == pytest.approx(0.01)
    assert loss_points_to_metric_units(1.0, "points") == 1.0
    with pytest.raises(ConfigError, match=">= 0"):
        loss_points_to_metric_units(-1.0, "points")
    with pytest.raises(ConfigError, match="scale"):
        loss_points_to_metric_units(1.0, "percent")
    assert metric_scale_for_task("squad") == "points"
    assert metric_scale_for_task("sst2") == "fraction"


FRONT = [
    ParetoPoint(1.0, 0.80, (2,)),
    ParetoPoint(2.0, 0.89, (4,)),
    ParetoPoint(3.0, 0.895, (6,)),
    ParetoPoint(4.0, 0.90, (8,)),
]


def test_pick_within_loss_cheapest_qualifying_point():
    assert pick_within_loss(FRONT, 0.90, loss_points_to_metric_units(1.0, "fraction")).config == (4,)
    # float rounding: 0.5006 - 0.01 == 0.49060000000000004 > 0.4906, yet 0.4906 is exactly 1 point below
    near = [ParetoPoint(1.0, 0.4906, (1,)), ParetoPoint(2.0, 0.5006, (2,))]
    assert 0.5006 - 0.01 > 0.4906
    assert pick_within_loss(near, 0.5006, 0.01).config == (1,)
    assert pick_within_loss(FRONT, 0.90, 0.0).config == (8,)
    assert pick_within_loss(FRONT, 0.90, 0.2).config == (2,)
    # dominated input points are never chosen
    assert pick_within_loss(FRONT + [ParetoPoint(5.0, 0.89, (9,))], 0.90, 0.01).config == (4,)


def test_pick_within_loss_unreachable():
    with pytest.raises(ConfigError, match=r"best available is 0\.9 "):
        pick_within_loss(FRONT, 0.95, 0.01)
    with pytest.raises(ConfigError, match="empty"):
        pick_within_loss([], 0.9, 0.01)


def test_pick_within_budget():
    assert pick_within_budget(FRONT, 2.5).config == (4,)
    assert pick_within_budget(FRONT, 4.0).config == (8,)
    assert pick_within_budget(FRONT, 100.0).config == (8,)


def test_pick_within_budget_impossible_names_budget_and_cheapest():
    with pytest.raises(ConfigError) as e:
        pick_within_budget(FRONT, 0.5, unit="MACs")
    msg = str(e.value)
    assert "0.5 MACs" in msg and "cheapest available costs 1 MACs" in msg and "\n" not in msg


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    from slimformer.length.plot import plot_pareto

    out = plot_pareto(
        tmp_path / "sub" / "front.png",
        FRONT,
        evaluated=FRONT + [(2.5, 0.7)],
        references={"teacher fp32": (5.0, 0.91), "teacher int8 ORT": (2.0, 0.905)},
        comparison={"plain truncation": [(1.0, 0.6), (4.0, 0.9)]},
        cost_label="MACs",
        metric_label="accuracy",
        title="test",
    )
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert [p.name for p in out.parent.iterdir()] == ["front.png"], "no temporary file left behind"


def test_plot_without_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    from slimformer.length.plot import plot_pareto

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"needs matplotlib: pip install matplotlib"):
        plot_pareto(tmp_path / "x.png", FRONT)
    assert not (tmp_path / "x.png").exists()
