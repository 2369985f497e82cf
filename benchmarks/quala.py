"""QuaLA results: run (or resume) ``recipes/quala-<task>.yaml`` and write ``benchmarks/results/quala-<task>.json``.

    SLIMFORMER_DATA=../shared/data python benchmarks/quala.py sst2 [--max-loss 1.0 | --budget-ms 8 | --max-flops 9e8]
    SLIMFORMER_DATA=../shared/data python benchmarks/quala.py squad
    SLIMFORMER_DATA=../shared/data python benchmarks/quala.py sst2 --variant lat --run-dir runs/quala-sst2-lat \
        --set stages.2.length.teacher_weight=0 --set stages.3.search.search_min_words=null

``--recipe NAME`` runs ``recipes/NAME.yaml`` instead (e.g. ``quala-sst2-truncation``, the pipeline without the
LengthDrop stage) and writes ``NAME.json``. ``--variant NAME --set KEY=VALUE ...`` runs the recipe with overrides
(as ``slimformer compress``) and writes ``<recipe>-<NAME>.json`` instead: an ablation beside the recipe's own results.

runs ``slimformer compress recipes/quala-<task>.yaml`` into ``runs/quala-<task>`` (completed stages are reused; see
the recipe for reusing the existing teacher), then copies the ``length_benchmark`` report into the results file
(DESIGN.md convention): reference rows and the pick's row (``length_config``, ``flops``, ``runtime``,
``metric_value``, ``latency_ms_bs1``, ``throughput_bs32``, ``size_mb``, ``seq_len``), every front configuration
re-scored on the int8 graph with its plain-truncation counterpart, the search split, the training budget of each
stage, and the two Pareto plots (copied to ``benchmarks/plots/``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_BUDGET = ("train_examples", "epochs", "max_steps", "learning_rate", "batch_size", "max_seq_length", "seed")
_STAGE_KEYS = {
    "finetune": _BUDGET,
    "distill": (*_BUDGET, "student_layers", "kd_losses", "steps"),
    "length": (*_BUDGET, "num_sandwich", "length_drop_ratio_bound", "layer_drop_prob", "kl_direction"),
}


def training_budget(model_dir: Path) -> dict[str, Any]:
    """Per training stage of the searched model, the settings that set its cost (from ``slimformer.json``)."""
    from slimformer.io import read_json

    out: dict[str, Any] = {}
    for rec in read_json(model_dir / "slimformer.json")["applied"]:
        keys = _STAGE_KEYS.get(rec.get("stage"))
        if keys:
            out[rec["stage"]] = {k: rec.get(k) for k in keys if k in rec}
    return out


def stage_metrics(run_dir: Path) -> dict[str, dict[str, float]]:
    """Dev metrics (PyTorch fp32, full length) each training stage of the run recorded in ``state.json``."""
    from slimformer.io import read_json

    stages = read_json(run_dir / "state.json")["stages"]
    return {
        st["name"]: st["outputs"]["metrics"]
        for st in stages
        if st["name"] in _STAGE_KEYS and "metrics" in st.get("outputs", {})
    }


def build_results(run_dir: Path, name: str, command: str, plot_dir: Path, recipe: str | None = None) -> dict[str, Any]:
    """The results dict of a finished QuaLA run folder; the plots are copied into ``plot_dir`` as ``<name>.*.png``.

    ``recipe``: the recipe's name under ``recipes/`` (default ``name``).
    """
    from slimformer.io import read_json

    report = read_json(run_dir / "report.json")
    front = read_json(run_dir / "search" / "front.json")
    plots = {}
    for key, src in report["plots"].items():
        dst = plot_dir / f"{name}.pareto_{key}.png"
        shutil.copyfile(src, dst)
        plots[key] = str(dst.relative_to(ROOT)) if dst.is_relative_to(ROOT) else str(dst)
    return {
        "benchmark": name,
        "command": command,
        "recipe": f"recipes/{recipe or name}.yaml",
        "machine": report["machine"],
        "task": report["task"],
        "metric": report["metric"],
        "eval_split": report["eval_split"],
        "eval_examples": report["eval_examples"],
        "search_split": front["search_split"],
        "search": {**front["search"], "cost": front["cost"], "gene_form": front["gene_form"]},
        "selected": front["selected"],
        "training": training_budget(Path(front["searched_model"])),
        "stage_metrics": stage_metrics(run_dir),
        "timing": report["timing"],
        "rows": report["rows"],
        "front": report["front"],
        "lengthdrop_vs_truncation": report["lengthdrop_vs_truncation"],
        "rank_correlation_search_dev": report.get("rank_correlation_search_dev"),  # reports before it: None
        **({"intervals": front["intervals"]} if "intervals" in front else {}),
        "plots": plots,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=["sst2", "squad"])
    parser.add_argument("--run-dir", help="run folder (default: runs/quala-<task>)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--max-loss", type=float)
    budget.add_argument("--budget-ms", type=float)
    budget.add_argument("--max-flops", type=float)
    parser.add_argument("--recipe", help="recipe name under recipes/ (default: quala-<task>)")
    parser.add_argument("--variant", help="ablation name: results go to quala-<task>-<variant>.json")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    parser.add_argument("--rerun-from", metavar="STAGE", help="rerun this recipe stage and the later ones")
    args = parser.parse_args(argv)
    if args.set and not args.variant:
        parser.error("--set changes the recipe: name the result with --variant")

    from slimformer.api import compress
    from slimformer.io import atomic_write_json

    recipe = args.recipe or f"quala-{args.task}"
    name = f"{recipe}-{args.variant}" if args.variant else recipe
    picked = {k: getattr(args, k) for k in ("max_loss", "budget_ms", "max_flops") if getattr(args, k) is not None}
    ctx = compress(
        ROOT / "recipes" / f"{recipe}.yaml",
        overrides=args.set,
        run_dir=args.run_dir,
        rerun_from=args.rerun_from,
        budget=picked or None,
    )
    flags = "".join(f" --{k.replace('_', '-')} {v:g}" for k, v in picked.items())
    if args.recipe:
        flags += f" --recipe {args.recipe}"
    if args.variant:
        flags += f" --variant {args.variant}" + "".join(f" --set {kv}" for kv in args.set)
    if args.run_dir:
        flags += f" --run-dir {args.run_dir}"
    if args.rerun_from:
        flags += f" --rerun-from {args.rerun_from}"
    command = f"SLIMFORMER_DATA=../shared/data python benchmarks/quala.py {args.task}{flags}"
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_dir = ROOT / "benchmarks" / "plots"  # results/ holds only the JSON results files
    plot_dir.mkdir(parents=True, exist_ok=True)
    results = build_results(ctx.run_dir, name, command, plot_dir, recipe=recipe)
    if args.set:
        results["overrides"] = args.set
    out = atomic_write_json(out_dir / f"{name}.json", results)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
