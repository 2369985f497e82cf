"""Pareto plot of a length search: metric vs cost, with named reference points, written as a PNG.

matplotlib is a core dependency, imported only when a plot is drawn (with the non-interactive ``Agg`` backend), so
importing this module stays light.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from slimformer._faults import kill_point
from slimformer.io import clean_stale_temps, fsync_path, temp_prefix
from slimformer.length.pareto import PointLike, as_point, pareto_front

__all__ = ["plot_pareto"]


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("plotting a Pareto front needs matplotlib: pip install matplotlib") from e
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _xy(points: Iterable[PointLike]) -> tuple[list[float], list[float]]:
    front = pareto_front(points)
    return [p.cost for p in front], [p.metric for p in front]


def plot_pareto(
    path: str | os.PathLike[str],
    front: Iterable[PointLike],
    *,
    evaluated: Iterable[PointLike] = (),
    references: Mapping[str, tuple[float, float]] | None = None,
    comparison: Mapping[str, Iterable[PointLike]] | None = None,
    cost_label: str = "cost",
    metric_label: str = "metric",
    title: str | None = None,
    label: str = "length search front",
) -> Path:
    """Draw metric (y) vs cost (x) and save it as a PNG.

    Args:
        path: output file (``.png``); parent folders are created.
        front: the search's points; only their Pareto front is drawn, as a step line with markers.
        evaluated: every evaluated point, drawn as faint dots behind the front (optional).
        references: named single points ``{name: (cost, metric)}``, e.g. ``"teacher fp32"``,
            ``"teacher int8 ORT"``, ``"student int8, no LengthDrop"``; each gets its own marker and legend entry.
        comparison: further named series (e.g. ``{"plain truncation": points}``), each drawn as its own front.
        cost_label: x-axis label with unit (``"MACs"``, ``"latency (ms)"``).
        metric_label: y-axis label with unit (``"accuracy"``, ``"F1 (points)"``).
        title: figure title.
        label: legend entry of ``front``.

    Returns:
        The written path.

    Raises:
        ImportError: matplotlib is not installed (the message says how to install it).
        ConfigError: a point has a NaN cost or metric.
    """
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    try:
        cloud = [as_point(p) for p in evaluated]
        if cloud:
            ax.scatter([p.cost for p in cloud], [p.metric for p in cloud], s=8, c="0.75", label="evaluated", zorder=1)
        xs, ys = _xy(front)
        ax.step(xs, ys, where="post", marker="o", ms=4, label=label, zorder=3)
        for name, series in (comparison or {}).items():
            cx, cy = _xy(series)
            ax.step(cx, cy, where="post", marker="s", ms=3, ls="--", label=name, zorder=2)
        markers = "*^vDPX<>p"
        for i, (name, (c, m)) in enumerate((references or {}).items()):
            ax.scatter([c], [m], marker=markers[i % len(markers)], s=90, label=name, zorder=4)
        ax.set_xlabel(cost_label)
        ax.set_ylabel(metric_label)
        if title:
            ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small", loc="lower right")
        fig.tight_layout()
        # atomic, with the pid-tagged temporary name of slimformer.io (a killed draw's file is removed by the next)
        clean_stale_temps(path)
        fd, name = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".png", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            fig.savefig(tmp, format="png")
            fsync_path(tmp)
            kill_point("plot:before-rename")
            os.replace(tmp, path)  # a failed draw never replaces an earlier plot
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        plt.close(fig)
    return path
