"""Pieces of the QuaLA report (``length_benchmark`` stage): re-scoring the front on the report split, LengthDrop
vs plain truncation, and the two Pareto plots.

METHODS.md §2(f) pitfall 2: the search ran on the fp32 model; every front configuration is re-scored here on the
int8 graph and on the report (dev) split. "Plain truncation" runs the same configurations on the model that had
no LengthDrop training (the distilled student), with the same token selection: it answers whether one
LengthDrop training is worth it at equal FLOPs. Each configuration's two scores are compared on the same examples
with a paired test (:func:`~slimformer.bench.stats.paired_test`: McNemar for accuracy, a paired bootstrap for F1).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from slimformer.bench.stats import paired_test, spearman_rank_correlation
from slimformer.errors import ConfigError
from slimformer.evaluate import evaluate_predictor_scores
from slimformer.export._proto import read_metadata
from slimformer.length.config import LengthConfig
from slimformer.length.pareto import pareto_front, staircase_area
from slimformer.length.plot import plot_pareto

__all__ = [
    "rescore_front",
    "truncation_summary",
    "rank_correlation_search_dev",
    "plot_report",
    "int8_mode",
    "check_pick_graph",
]


def rescore_front(
    front: Sequence[Mapping[str, Any]],
    lengthdrop: Any,
    plain: Any | None,
    eval_set: Any,
    *,
    to_config: Callable[[Sequence[int]], LengthConfig] = LengthConfig.from_lengths,
    pad_token_id: int,
    batch_size: int,
) -> list[dict[str, Any]]:
    """Each front configuration on the report split: the int8 metric, with and without LengthDrop training.

    Args:
        front: ``front.json`` points (``length_config``, ``metric`` on the search split, ``flops``).
        lengthdrop: :class:`~slimformer.export.length_ort.LengthOrtModel` of the LengthDrop model (int8).
        plain: the same for the model without LengthDrop, or ``None`` to skip the truncation comparison.
        eval_set: the report split (``TaskData``).
        to_config: gene -> :class:`LengthConfig` (absolute lengths, or ratios; see ``selection.gene_config``).

    Returns:
        One dict per point: ``length_config``, ``flops``, ``metric_search``, ``metric_value`` (report split,
        int8), ``truncation_metric_value``, ``p_value`` (two-sided, LengthDrop vs truncation on the same examples)
        and ``test`` (each ``None`` without ``plain``). Timings are added by the caller.
    """
    rows, kw = [], {"batch_size": batch_size, "pad_token_id": pad_token_id}
    saved = lengthdrop.config, plain.config if plain is not None else None
    try:
        for p in front:
            cfg = to_config(p["length_config"])
            lengthdrop.set_config(cfg)
            value, scores = evaluate_predictor_scores(lengthdrop, eval_set, progress=False, **kw)
            truncated, p_value, test = None, None, None
            if plain is not None:
                plain.set_config(cfg)
                truncated, plain_scores = evaluate_predictor_scores(plain, eval_set, progress=False, **kw)
                p_value, test = paired_test(scores, plain_scores)
            rows.append(
                {
                    "length_config": list(p["length_config"]),
                    "flops": p["flops"],
                    "metric_search": p["metric"],
                    "metric_value": value["main"],
                    "truncation_metric_value": None if truncated is None else truncated["main"],
                    "p_value": p_value,
                    "test": test,
                }
            )
    finally:
        lengthdrop.set_config(saved[0])
        if plain is not None:
            plain.set_config(saved[1])
    return rows


def truncation_summary(rows: Sequence[Mapping[str, Any]], alpha: float = 0.05) -> dict[str, Any] | None:
    """LengthDrop vs plain truncation over the same configurations (report split, int8).

    Returns:
        ``None`` without truncation values, else ``{"configs", "lengthdrop_better", "ties", "truncation_better",
        "mean_gain" (metric units, LengthDrop − truncation), "area_lengthdrop", "area_truncation" (staircase
        areas of each front over FLOPs; :func:`~slimformer.length.pareto.staircase_area`), "dominates"}``;
        ``dominates`` is true when LengthDrop is at least as good at every configuration. The counts compare the
        two values; with rows that carry a ``p_value`` the summary adds ``"alpha"``, ``"lengthdrop_better_significant"``
        and ``"truncation_better_significant"`` (better with ``p < alpha``), the counts a claim may rest on.
    """
    pairs = [
        (r["metric_value"], r["truncation_metric_value"]) for r in rows if r["truncation_metric_value"] is not None
    ]
    if not pairs:
        return None
    gains = [a - b for a, b in pairs]
    ld = pareto_front([(r["flops"], r["metric_value"]) for r in rows])
    tr = pareto_front([(r["flops"], r["truncation_metric_value"]) for r in rows])
    return {
        "configs": len(pairs),
        "lengthdrop_better": sum(g > 0 for g in gains),
        "ties": sum(g == 0 for g in gains),
        "truncation_better": sum(g < 0 for g in gains),
        "mean_gain": sum(gains) / len(gains),
        "area_lengthdrop": staircase_area(ld),
        "area_truncation": staircase_area(tr),
        "dominates": all(g >= 0 for g in gains),
        **_significant(rows, alpha),
    }


def _significant(rows: Sequence[Mapping[str, Any]], alpha: float) -> dict[str, Any]:
    """The better-with-``p < alpha`` counts of the rows that carry a paired test (none: {})."""
    tested = [r for r in rows if r.get("p_value") is not None and r["truncation_metric_value"] is not None]
    if not tested:
        return {}
    sig = [r["metric_value"] - r["truncation_metric_value"] for r in tested if r["p_value"] < alpha]
    return {
        "alpha": alpha,
        "lengthdrop_better_significant": sum(g > 0 for g in sig),
        "truncation_better_significant": sum(g < 0 for g in sig),
    }


def rank_correlation_search_dev(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """How well the search split ranks the front: Spearman's rho between each point's search-split metric
    (``metric_search``, PyTorch fp32) and its report-split metric (``metric_value``, int8).

    Returns:
        ``{"spearman": rho or None, "points": n}``; ``None`` with fewer than 2 points or a constant metric (rho is
        undefined). A rho near 1 means the search split orders configurations as the report split does; a low rho
        means its ranking (and the pick made on it) is mostly noise.
    """
    import math

    pairs = [(r["metric_search"], r["metric_value"]) for r in rows]
    rho = spearman_rank_correlation(*zip(*pairs)) if len(pairs) >= 2 else float("nan")
    return {"spearman": None if math.isnan(rho) else rho, "points": len(pairs)}


def plot_report(
    run_dir: Path,
    refs: Mapping[str, Mapping[str, Any]],
    front_rows: Sequence[Mapping[str, Any]],
    *,
    metric_label: str,
    seq_len: int,
) -> dict[str, str]:
    """``pareto_flops.png`` and ``pareto_latency.png`` in ``run_dir``: metric vs FLOPs and vs int8 latency.

    Args:
        refs: ``{name: row}`` reference points (rows with ``flops``, ``latency_ms_bs1``, ``metric_value``).
        front_rows: :func:`rescore_front` rows; every point is drawn, their Pareto front as a step line, and
            plain truncation as a dashed front.

    Returns:
        ``{"flops": path, "latency": path}``.
    """
    paths = {}
    for key, x, label in (
        ("flops", "flops", f"FLOPs (batch 1, {seq_len} tokens)"),
        ("latency", "latency_ms_bs1", f"latency, ms (batch 1, {seq_len} tokens, ONNX Runtime)"),
    ):
        pts = [(r[x], r["metric_value"], r["length_config"]) for r in front_rows]
        trunc = [(r[x], r["truncation_metric_value"]) for r in front_rows if r["truncation_metric_value"] is not None]
        references = {
            name: (row[x], row["metric_value"])
            for name, row in refs.items()
            if row.get(x) is not None and row.get("metric_value") is not None
        }
        paths[key] = str(
            plot_pareto(
                run_dir / f"pareto_{key}.png",
                pts,
                evaluated=pts,
                references=references,
                comparison={"plain truncation (no LengthDrop)": trunc} if trunc else None,
                cost_label=label,
                metric_label=metric_label,
                title=f"LengthDrop front vs references ({'FLOPs' if key == 'flops' else 'latency'})",
                label="LengthDrop front (int8)",
            )
        )
    return paths


def _metadata(onnx_path: str, key: str) -> dict[str, Any]:
    return json.loads(read_metadata(onnx_path).get(key, "{}"))


def int8_mode(onnx_int8: str) -> Literal["dynamic", "static"]:
    """The int8 mode recorded in the graph (``dynamic`` when unknown)."""
    return "static" if _metadata(onnx_int8, "slimformer.int8").get("mode") == "static" else "dynamic"


def _values(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k in ("lengths", "ratios")}


def check_pick_graph(onnx_int8: str | None, chosen: LengthConfig) -> None:
    """Check that ``onnx_int8`` is the exported pick (its default length configuration is ``chosen``).

    Raises:
        ConfigError: another default, or no graph (the recipe lacks an int8 ``export`` after ``search``).
    """
    default = None
    if onnx_int8 and Path(onnx_int8).is_file():
        default = _values(_metadata(onnx_int8, "slimformer.length_config"))
    if default != _values(chosen.to_dict()):
        raise ConfigError(
            f"length_benchmark needs an 'export' stage with int8 after 'search': the int8 graph {onnx_int8} has "
            f"default length configuration {default}, not the pick {_values(chosen.to_dict())}"
        )
