"""Learning curves of run folders: the dev metric after each epoch of every training stage, as results and a plot.

    python benchmarks/learning_curves.py --run runs/issue14-full/quala-sst2-la-full \
        --run runs/issue14-full/quala-sst2-la-full-seed43 --name learning-curves-sst2-la-full

Every training stage (finetune, distill, qat, sdq, length) records ``learning_curve`` in its outputs in the run's
``state.json`` (:mod:`slimformer.train.curves`): one point per epoch, ``{"epoch", "step", "metrics"}``, the last
point being the stage's final dev metrics. This script reads them back; it trains and scores nothing. For the
``length`` stage the points are the full-length dev metric (every token kept), the model the search then runs on.

Writes ``benchmarks/results/<name>.json`` (one row per run, stage and point, rendered by
``benchmarks/update_readme.py`` into the ``<!-- results:<name> -->`` block of docs/results.md) and
``benchmarks/plots/<name>.png`` (the main metric against epochs, one line per run and stage). A stage that
finished before learning curves were recorded (an older run) has no points and is listed under ``without_curve``.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def collect(run: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The learning-curve points of every stage of ``run`` (a run folder with a ``state.json``).

    Returns:
        ``(rows, without_curve)``: one row per point, ``{"run", "task", "stage", "epoch", "step", "metric", "value",
        "metrics"}`` (``metric`` the task's main metric name where the point names it, ``value`` its value;
        GLUE metrics are fractions, SQuAD points), in stage and epoch order; and the names of training stages
        whose outputs hold ``learning_curve`` empty or not at all (finished before curves were recorded).

    Raises:
        FileNotFoundError: ``run/state.json`` does not exist.
    """
    from slimformer.io import read_json

    state = read_json(run / "state.json")
    task = next((s["outputs"]["task"] for s in state["stages"] if "task" in (s.get("outputs") or {})), None)
    rows: list[dict[str, Any]] = []
    without: list[str] = []
    for stage in state["stages"]:
        outputs = stage.get("outputs") or {}
        if "metrics" not in outputs or "model_dir" not in outputs:  # not a training stage
            continue
        curve = outputs.get("learning_curve") or []
        if not curve:
            without.append(stage["name"])
            continue
        main = _main_metric(outputs["metrics"])
        for point in sorted(curve, key=lambda p: (p["epoch"], p["step"])):
            metrics = {k: v for k, v in point["metrics"].items() if k != "main"}
            rows.append(
                {
                    "run": run.name,
                    "task": task,
                    "stage": stage["name"],
                    "epoch": round(float(point["epoch"]), 3),
                    "step": int(point["step"]),
                    "metric": main,
                    "value": point["metrics"].get("main", point["metrics"].get(main)),
                    "metrics": metrics,
                }
            )
    return rows, without


def _main_metric(metrics: dict[str, float]) -> str | None:
    """The name of the metric whose value ``metrics["main"]`` repeats (``None`` when there is no ``main``)."""
    if "main" not in metrics:
        return None
    return next((k for k, v in metrics.items() if k != "main" and v == metrics["main"]), "main")


def plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """The main metric against epochs, one line (with markers) per run and stage. ``None`` when nothing to draw."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from slimformer.io import atomic_write_bytes

    lines: dict[tuple[str, str], list[tuple[float, float]]] = {}
    metric = None
    for r in rows:
        if r["value"] is not None:
            lines.setdefault((r["run"], r["stage"]), []).append((r["epoch"], r["value"]))
            metric = metric or r["metric"]
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (run, stage), pts in lines.items():
        ax.plot([e for e, _ in pts], [v for _, v in pts], marker="o", label=f"{run}: {stage}")
    ax.set_xlabel("epochs trained")
    ax.set_ylabel(f"dev {metric or 'metric'} (PyTorch fp32, full length)")
    ax.set_title("Learning curves: dev metric after each epoch")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, action="append", required=True, help="a run folder (repeatable)")
    parser.add_argument("--name", default="learning-curves", help="results name: results/<name>.json, plots/<name>.png")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--plots-dir", type=Path, default=ROOT / "benchmarks" / "plots")
    parser.add_argument(
        "--trained-on",
        help="where the runs were trained, when not on the machine that reads them back (e.g. the lent GPU machine): "
        "stated in the results file, whose `machine` is then only the reader",
    )
    args = parser.parse_args(argv)

    from slimformer.bench.machine import machine_info
    from slimformer.io import atomic_write_json

    rows: list[dict[str, Any]] = []
    without: dict[str, list[str]] = {}
    for run in args.run:
        if not (run / "state.json").is_file():
            parser.error(f"{run}: no state.json (not a run folder, or the run has not started)")
        got, missing = collect(run)
        rows += got
        if missing:
            without[run.name] = missing
    if not rows:
        parser.error(f"no learning curves in {', '.join(map(str, args.run))} (stages without one: {without})")
    png = plot(rows, args.plots_dir / f"{args.name}.png")
    results = {
        "benchmark": "learning-curves",
        "command": f"python benchmarks/learning_curves.py {' '.join(f'--run {_rel(r)}' for r in args.run)}"
        + (f" --name {args.name}" if args.name != "learning-curves" else "")
        + (f" --trained-on '{args.trained_on}'" if args.trained_on else ""),
        "machine": machine_info(1),  # the machine the runs were made on when read back where they were trained
        **({"trained_on": args.trained_on} if args.trained_on else {}),
        "task": ", ".join(dict.fromkeys(r["task"] for r in rows if r["task"])),
        "metric": rows[0]["metric"],
        "notes": "Dev metric (PyTorch fp32; the length stage at full length) after each epoch; the last point of a "
        "stage is its final evaluation." + (f" Plot: `{_rel(png)}`." if png else ""),
        "columns": [[k, k] for k in ("run", "stage", "epoch", "step", "metric", "value")],
        "rows": rows,
        "without_curve": without,
    }
    out = atomic_write_json(args.results_dir / f"{args.name}.json", results)
    print(f"wrote {out}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
