"""The ``search`` stage's bookkeeping: front points with FLOPs and latency, the loss reference, the budget pick,
and ``front.json``.

``front.json`` (written atomically)::

    {"format": "slimformer.length-front", "task": "sst2", "metric": "accuracy", "seq_len": 128,
     "cost": "flops", "cost_name": "FLOPs-bs1-N128", "gene_form": "lengths", "searched_model": "...",
     "search_split": {...},
     "reference": {"kind": "full", "metric": 0.91},
     "full": {"length_config": [128, 128, 128], "metric": 0.91, "flops": ..., "latency_ms": ...},
     "front": [{"length_config": [...], "metric": ..., "flops": ..., "latency_ms": ...}, ...],  # cheapest first
     "selected": {..., "selected_by": {"max_loss": 1.0, "threshold": 0.90}},
     "search": {"settings": {...}, "evaluated": 412, "new_evaluations": 0, "iterations": 30, "areas": [...]}}

``length_config`` is the gene: tokens kept after each layer on a ``seq_len``-token input; ``gene_form`` says
whether it is applied as absolute lengths or as ratios (:func:`gene_config`). ``metric`` values are on the
search split (PyTorch fp32). ``flops`` = 2·MACs at batch 1 and ``seq_len`` real
tokens; ``latency_ms`` = median ms of the int8 ONNX Runtime graph at batch 1 on ``seq_len`` real tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from slimformer.errors import ConfigError
from slimformer.io import atomic_write_json
from slimformer.length.config import gene_config
from slimformer.length.pareto import (
    loss_points_to_metric_units,
    metric_scale_for_task,
    pick_within_budget,
    pick_within_loss,
)

__all__ = ["FRONT_FORMAT", "gene_config", "check_budget", "front_points", "reference_metric", "pick", "write_front"]

FRONT_FORMAT = "slimformer.length-front"
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


def reference_metric(config: Any, result: Any, split: Any, meta: Any, data_root: str | None) -> dict[str, Any]:
    """What ``max_loss`` is measured from: the full-length searched model, or the fp32 teacher, on the split.

    Raises:
        ConfigError: ``loss_reference: teacher`` and no teacher is configured or recorded by a distill stage.
    """
    if config.loss_reference == "full":
        return {"kind": "full", "metric": float(result.full.metric), "length_config": list(result.full.config)}
    from slimformer.checkpoint import load_model
    from slimformer.evaluate import evaluate_predictor, torch_predictor

    distill = meta.stage("distill") or {}
    teacher = config.teacher or distill.get("teacher")
    if not teacher:
        raise ConfigError("search: loss_reference: teacher needs teacher: <folder> (no distill stage recorded one)")
    loaded = load_model(teacher)
    metrics = evaluate_predictor(
        torch_predictor(loaded.model),
        split.data,
        batch_size=config.eval_batch_size,
        pad_token_id=loaded.tokenizer.pad_token_id or 0,
        progress=False,
    )
    return {"kind": "teacher", "metric": float(metrics["main"]), "model": str(teacher)}


def pick(points: list[dict[str, Any]], budget: Any, cost_kind: str, reference: float, task: str) -> dict[str, Any]:
    """The front point ``budget`` asks for (see :class:`~slimformer.stages.search.LengthBudget`).

    ``max_loss`` picks the cheapest point in the search's cost within ``max_loss`` points of ``reference``;
    ``budget_ms`` / ``max_flops`` the most accurate point within the budget.

    Raises:
        ConfigError: no point qualifies (the message names the budget and the best available).
    """
    front = [p for p in points if not p.get("full")] or points
    try:
        if budget.max_loss is not None:
            units = loss_points_to_metric_units(budget.max_loss, metric_scale_for_task(task))
            key = "latency_ms" if cost_kind == "latency" else "flops"
            best = pick_within_loss([(p[key], p["metric"], p["length_config"]) for p in front], reference, units)
            how = {"max_loss": budget.max_loss, "reference": reference, "threshold": reference - units}
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
    chosen = next(p for p in front if tuple(p["length_config"]) == best.config)
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
) -> Path:
    """Write ``front.json`` (layout in the module notes) and return its path."""
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
