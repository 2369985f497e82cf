"""The ``search`` stage's bookkeeping: front points with FLOPs and latency, the loss reference, the budget pick,
and ``front.json``.

``front.json`` (written atomically)::

    {"format": "slimformer.length-front", "task": "sst2", "metric": "accuracy", "seq_len": 128,
     "cost": "flops", "cost_name": "FLOPs-bs1-N128", "gene_form": "ratios", "searched_model": "...",
     "search_split": {...},
     "reference": {"kind": "full", "metric": 0.91},
     "intervals": {"method": "percentile bootstrap", "resamples": 1000, "confidence": 0.95, "seed": 42, ...},
     "full": {"length_config": [128, 128, 128], "metric": 0.91, "flops": ..., "latency_ms": ..., ...},
     "front": [{"length_config": [...], "metric": ..., "flops": ..., "latency_ms": ...,   # cheapest first
                "metric_ci": [lo, hi], "difference_ci": [lo, hi], "metric_lower": ..., "p_value": ...}, ...],
     "selected": {..., "selected_by": {"max_loss": 1.0, "threshold": 0.90, "rule": "..."}},
     "search": {"settings": {...}, "evaluated": 412, "new_evaluations": 0, "iterations": 30, "areas": [...]}}

``length_config`` is the gene: tokens kept after each layer on a ``seq_len``-token input; ``gene_form`` says
whether it is applied as absolute lengths or as ratios (:func:`gene_config`). ``metric`` values are on the
search split (PyTorch fp32). ``flops`` = 2·MACs at batch 1 and ``seq_len`` real
tokens; ``latency_ms`` = median ms of the int8 ONNX Runtime graph at batch 1 on ``seq_len`` real tokens.

**Intervals** (:func:`add_intervals`): every front point and the full point carry the 95% percentile bootstrap
interval of their metric (``metric_ci``, 1,000 resamples of the search split's examples, SQuAD: questions), the
interval of their difference to the ``max_loss`` reference computed on the same resamples (``difference_ci``,
paired), ``metric_lower = reference + difference_ci[0]`` and a paired test against the reference (``p_value``:
McNemar for accuracy, the paired bootstrap otherwise). ``max_loss`` picks the cheapest point whose
``metric_lower`` reaches ``reference − max_loss`` (:func:`pick`; why paired: docs/length-search.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from slimformer.bench.stats import (
    bootstrap_ci,
    bootstrap_p_value,
    bootstrap_statistic_ci,
    mcnemar,
    paired_bootstrap,
    paired_bootstrap_ci,
)
from slimformer.checkpoint import load_model
from slimformer.errors import ConfigError
from slimformer.evaluate import ExampleScores, evaluate_predictor_scores, torch_predictor
from slimformer.io import atomic_write_json
from slimformer.length.config import gene_config
from slimformer.length.pareto import (
    loss_points_to_metric_units,
    metric_scale_for_task,
    pick_within_budget,
    pick_within_loss,
)

__all__ = [
    "FRONT_FORMAT",
    "BOOTSTRAP_SAMPLES",
    "CONFIDENCE",
    "gene_config",
    "check_budget",
    "front_points",
    "reference_metric",
    "add_intervals",
    "pick",
    "write_front",
]

FRONT_FORMAT = "slimformer.length-front"
#: Resamples of every bootstrap interval of the front.
BOOTSTRAP_SAMPLES = 1000
#: Coverage of the front's intervals; ``max_loss`` is decided on their lower ends.
CONFIDENCE = 0.95
Gene = tuple[int, ...]


def check_budget(budget: float, smallest_cost: float, smallest: Sequence[int], unit: str) -> None:
    """Refuse a budget below the cheapest configuration the search may return (its smallest gene).

    Raises:
        ConfigError: ``budget < smallest_cost`` (names both and the gene).
    """
    if budget < smallest_cost:
        raise ConfigError(
            f"budget {budget:.6g} {unit} is below the cheapest length configuration {tuple(smallest)} "
            f"({smallest_cost:.6g} {unit}); no configuration is that fast"
        )


def front_points(
    result: Any,
    cost_kind: str,
    flops_of: Callable[[Gene], float],
    ms_of: Callable[[Gene], float] | None,
) -> list[dict[str, Any]]:
    """The search front (cheapest first) and the full point as dicts with FLOPs and latency.

    The search's own cost is reused (never re-measured); the other quantity is computed (FLOPs) or measured
    (``ms_of``; ``None`` leaves ``latency_ms`` unset).
    """

    def row(p: Any) -> dict[str, Any]:
        gene = tuple(p.config)
        if cost_kind == "latency":
            flops, ms = float(flops_of(gene)), float(p.cost)
        else:
            flops, ms = float(p.cost), (float(ms_of(gene)) if ms_of is not None else None)
        return {"length_config": list(gene), "metric": float(p.metric), "flops": flops, "latency_ms": ms}

    return [row(p) for p in result.front] + [dict(row(result.full), full=True)]


def reference_metric(
    config: Any,
    result: Any,
    split: Any,
    meta: Any,
    data_root: str | None,
    *,
    scores_of: Callable[[Gene], ExampleScores] | None = None,
) -> tuple[dict[str, Any], ExampleScores | None]:
    """What ``max_loss`` is measured from: the full-length searched model, or the fp32 teacher, on the split.

    Args:
        scores_of: ``gene -> per-example results`` on the split (for the full gene's); ``None``: not computed.

    Returns:
        ``(reference, its per-example results or None)``.

    Raises:
        ConfigError: ``loss_reference: teacher`` and no teacher is configured or recorded by a distill stage.
    """
    if config.loss_reference == "full":
        full = tuple(result.full.config)
        info = {"kind": "full", "metric": float(result.full.metric), "length_config": list(full)}
        return info, (scores_of(full) if scores_of is not None else None)

    distill = meta.stage("distill") or {}
    teacher = config.teacher or distill.get("teacher")
    if not teacher:
        raise ConfigError("search: loss_reference: teacher needs teacher: <folder> (no distill stage recorded one)")
    loaded = load_model(teacher)
    metrics, scores = evaluate_predictor_scores(
        torch_predictor(loaded.model),
        split.data,
        batch_size=config.eval_batch_size,
        pad_token_id=loaded.tokenizer.pad_token_id or 0,
        progress=False,
    )
    return {"kind": "teacher", "metric": float(metrics["main"]), "model": str(teacher)}, scores


def _interval(scores: ExampleScores, n_boot: int, alpha: float, seed: int) -> tuple[float, float, float]:
    if scores.scores is not None:
        return bootstrap_ci(scores.scores, n_boot=n_boot, alpha=alpha, seed=seed)
    return bootstrap_statistic_ci(scores.value, scores.num_examples, n_boot=n_boot, alpha=alpha, seed=seed)


def _difference(a: ExampleScores, b: ExampleScores, n_boot: int, alpha: float, seed: int) -> tuple[float, float, float]:
    if a.scores is not None and b.scores is not None:
        return paired_bootstrap_ci(a.scores, b.scores, n_boot=n_boot, alpha=alpha, seed=seed)
    return bootstrap_statistic_ci(
        lambda idx: a.value(idx) - b.value(idx), a.num_examples, n_boot=n_boot, alpha=alpha, seed=seed
    )


def _p_value(a: ExampleScores, b: ExampleScores, n_boot: int, seed: int) -> tuple[float, str]:
    if a.metric == "accuracy" and a.scores is not None and b.scores is not None:
        return mcnemar(a.scores, b.scores), "mcnemar"
    if a.scores is not None and b.scores is not None:
        return paired_bootstrap(a.scores, b.scores, n_boot=n_boot, seed=seed), "paired bootstrap"
    p = bootstrap_p_value(lambda idx: a.value(idx) - b.value(idx), a.num_examples, n_boot=n_boot, seed=seed)
    return p, "paired bootstrap"


def add_intervals(
    points: list[dict[str, Any]],
    scores_of: Callable[[Gene], ExampleScores],
    reference: ExampleScores,
    reference_value: float,
    *,
    seed: int,
    n_boot: int = BOOTSTRAP_SAMPLES,
    confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """Add bootstrap intervals to every point (in place) and return what they are, for ``front.json``.

    Each point gets ``metric_ci`` (its own percentile interval), ``difference_ci`` (of ``metric − reference``,
    both scored on the same resampled examples: paired), ``metric_lower = reference_value + difference_ci[0]``,
    and ``p_value`` / ``test`` of the paired test against the reference (McNemar for accuracy, the paired
    bootstrap otherwise; :mod:`slimformer.bench.stats`). One ``seed`` for every point: the same resamples.

    Args:
        points: :func:`front_points` rows (``length_config``, ``metric``).
        scores_of: ``gene -> per-example results`` on the search split.
        reference: per-example results of the ``max_loss`` reference on the same split.
        reference_value: the reference's metric (``reference.value()`` up to rounding).
    """
    alpha = 1.0 - confidence
    for p in points:
        scores = scores_of(tuple(p["length_config"]))
        _, lo, hi = _interval(scores, n_boot, alpha, seed)
        _, dlo, dhi = _difference(scores, reference, n_boot, alpha, seed)
        p_value, test = _p_value(scores, reference, n_boot, seed)
        p.update(
            metric_ci=[lo, hi],
            difference_ci=[dlo, dhi],
            metric_lower=reference_value + dlo,
            p_value=p_value,
            test=test,
        )
    return {
        "method": "percentile bootstrap over the search split's examples (SQuAD: questions)",
        "resamples": n_boot,
        "confidence": confidence,
        "seed": seed,
        "max_loss_rule": "metric_lower = reference + lower end of the paired interval of (metric - reference)",
    }


def pick(points: list[dict[str, Any]], budget: Any, cost_kind: str, reference: float, task: str) -> dict[str, Any]:
    """The front point ``budget`` asks for (see :class:`~slimformer.stages.search.LengthBudget`).

    ``max_loss`` picks the cheapest point in the search's cost within ``max_loss`` points of ``reference``: whose
    ``metric_lower`` (the lower end of its paired interval, :func:`add_intervals`) is at least
    ``reference − max_loss``. With intervals the full point is a candidate too (last: it is the most expensive):
    when the split cannot show that any cheaper configuration loses at most ``max_loss``, the answer is the full
    length, not an error (its difference to a ``full`` reference is exactly 0). Points without intervals are
    judged on their ``metric``, among the front only. ``budget_ms`` / ``max_flops`` pick the most accurate point
    (point estimate) of the front within the budget.

    Raises:
        ConfigError: no point qualifies (the message names the budget and the best available).
    """
    front = [p for p in points if not p.get("full")] or points
    candidates = front
    try:
        if budget.max_loss is not None:
            units = loss_points_to_metric_units(budget.max_loss, metric_scale_for_task(task))
            key = "latency_ms" if cost_kind == "latency" else "flops"
            lower = all("metric_lower" in p for p in points)
            if lower:
                genes = {tuple(p["length_config"]) for p in front}
                candidates = front + [p for p in points if p.get("full") and tuple(p["length_config"]) not in genes]
            judged = [(p[key], p["metric_lower"] if lower else p["metric"], p["length_config"]) for p in candidates]
            try:
                best = pick_within_loss(judged, reference, units)
            except ConfigError as e:
                if lower:
                    raise ConfigError(
                        f"{e} (lower ends of {CONFIDENCE:.0%} paired bootstrap intervals on the search split; "
                        "more search_examples narrow them)"
                    ) from None
                raise
            how = {"max_loss": budget.max_loss, "reference": reference, "threshold": reference - units}
            if lower:
                how["rule"] = f"metric_lower (lower end of the {CONFIDENCE:.0%} paired interval) >= threshold"
        elif budget.budget_ms is not None:
            best = pick_within_budget(
                [(p["latency_ms"], p["metric"], p["length_config"]) for p in front], budget.budget_ms, unit="ms"
            )
            how = {"budget_ms": budget.budget_ms}
        else:
            best = pick_within_budget(
                [(p["flops"], p["metric"], p["length_config"]) for p in front], budget.max_flops, unit="FLOPs"
            )
            how = {"max_flops": budget.max_flops}
    except ConfigError as e:
        raise ConfigError(f"search: {e}") from None
    chosen = next(p for p in candidates if tuple(p["length_config"]) == best.config)
    return {**{k: v for k, v in chosen.items() if k != "full"}, "selected_by": how}


def write_front(
    path: Path,
    *,
    config: Any,
    result: Any,
    points: list[dict[str, Any]],
    chosen: dict[str, Any],
    budget: Any,
    reference: dict[str, Any],
    split: Any,
    seq_len: int,
    cost_name: str,
    model_dir: Path,
    intervals: dict[str, Any] | None = None,
) -> Path:
    """Write ``front.json`` (layout in the module notes) and return its path.

    ``config`` holds the settings the search ran with (defaults resolved; see ``stages.search``).
    """
    settings = config.model_dump(
        include={"population", "mutation_size", "crossover_size", "mutation_prob", "iterations", "parents"}
        | {"min_length", "length_drop_ratio", "min_cost", "max_cost", "seed", "int8"}
    )
    return atomic_write_json(
        path,
        {
            "format": FRONT_FORMAT,
            "task": config.task,
            "metric": split.data.spec.main_metric,
            "seq_len": seq_len,
            "cost": config.cost,
            "cost_name": cost_name,
            "gene_form": config.gene_form,
            "searched_model": str(model_dir),
            "search_split": split.describe(),
            "reference": reference,
            **({"intervals": intervals} if intervals is not None else {}),
            "budget": budget.model_dump(),
            "full": next(p for p in points if p.get("full")),
            "front": [p for p in points if not p.get("full")],
            "selected": chosen,
            "search": {
                "settings": settings,
                "evaluated": len(result.evaluated),
                "new_evaluations": result.new_evaluations,
                "iterations": len(result.history) - 1,
                "areas": [h.area for h in result.history],
                "cost_bounds": list(result.cost_bounds),
            },
        },
    )
