"""A searched run's whole front scored on dev, beside its search-split metrics: does the search rank like dev?

    SLIMFORMER_DATA=../shared/data python benchmarks/front_on_dev.py \
        --run runs/issue14-full/quala-sst2-l3b-train05-ho --name front-on-dev-sst2-l3b-train05-ho

Every point of the run's ``front.json`` (and its full-length point) is scored on the dev split per example, with
the search's int8 ONNX Runtime length graph (``--runtime int8``, batch 64, what is deployed) or fp32 eager
(``pytorch``), by the scorer of ``benchmarks/lengthdrop_vs_truncation.py``. Rows: configuration, FLOPs, the search
split's metric and the lower end of its paired 95% interval (the ``max_loss`` rule), and the dev metric; the notes
give Spearman's rho between search-split and dev metrics over the points
(:func:`slimformer.bench.stats.spearman_rank_correlation`) and the pick. Nothing is selected on dev.

``--int8-mode static`` (or ``dynamic``) scores another int8 post-training quantization of the same searched model
instead of the search's own graph: exported once into ``<run>/search/onnx-<mode>`` (static: calibrated on 256
training examples, so its activation scales do not follow the batch). ``--batch-size 1`` scores one sentence per
request, as served.

Writes ``benchmarks/results/<name>.json``, rendered into docs/results.md by ``benchmarks/update_readme.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lengthdrop_vs_truncation import DevScorer, SearchedRun  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    """Score the run's front on dev and write the results file; returns the exit status (0).

    Raises:
        ConfigError: ``--run`` has no ``state.json`` or no finished ``search`` stage (:meth:`SearchedRun.load`).
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="a run folder with a finished search stage")
    p.add_argument("--runtime", choices=("int8", "pytorch"), default="int8")
    p.add_argument("--batch-size", type=int, default=64, help="dev scoring batch (default 64; 1: as served)")
    p.add_argument(
        "--int8-mode",
        choices=("search", "dynamic", "static"),
        default="search",
        help="int8 graph scored: the search's own (default), or a PTQ of that mode in <run>/search/onnx-<mode>",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-root", default=None, help="default: $SLIMFORMER_DATA")
    p.add_argument("--name", required=True, help="results file name (without .json)")
    p.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)

    from slimformer.bench.machine import machine_info
    from slimformer.bench.stats import spearman_rank_correlation
    from slimformer.io import atomic_write_json

    run = SearchedRun.load(args.run)
    int8_mode = run.front.get("search", {}).get("settings", {}).get("int8", "dynamic")
    if args.runtime == "int8" and args.int8_mode != "search":
        from slimformer.stages._length_artifacts import export_length_int8

        int8_mode = args.int8_mode
        _, graph = export_length_int8(
            run.model_dir, run.run_dir / "search" / f"onnx-{int8_mode}", mode=int8_mode, data_root=args.data_root
        )
        run.onnx_int8 = str(graph)
    runtime = f"int8-{int8_mode}" if args.runtime == "int8" else args.runtime
    scorer = DevScorer(
        run, runtime=args.runtime, data_root=args.data_root, max_eval_examples=None,
        batch_size=args.batch_size, threads=args.threads,
    )  # fmt: skip
    front, picked = run.front, list(run.front["selected"]["length_config"])
    rows = []
    for point in run.points():  # the front, cheapest first, then the full-length point
        config = list(point["length_config"])
        dev = scorer.scores(config).value()
        rows.append(
            {
                "name": str(tuple(config)),
                "runtime": runtime,
                "length_config": config,
                "flops": point["flops"],
                "gflops": round(point["flops"] / 1e9, 3),
                "search_metric": point["metric"],
                "search_lower": point.get("metric_lower", point["metric"]),
                "metric_value": dev,
                "picked": "yes" if config == picked else "",
            }
        )
        print(f"{tuple(config)} {point['flops']:.3g} FLOPs: search {point['metric']:.4f}, dev {dev:.4f}")
    rho: float | None = spearman_rank_correlation([r["search_metric"] for r in rows], [r["metric_value"] for r in rows])
    rho = None if rho != rho else rho  # NaN (a constant column: no ranking) is written as null
    results = {
        "benchmark": "front-on-dev",
        "command": f"SLIMFORMER_DATA=../shared/data python benchmarks/front_on_dev.py --run {args.run}"
        + (f" --runtime {args.runtime}" if args.runtime != "int8" else "")
        + (f" --int8-mode {args.int8_mode}" if args.int8_mode != "search" else "")
        + (f" --batch-size {args.batch_size}" if args.batch_size != 64 else "")
        + f" --name {args.name}",
        "machine": machine_info(args.threads),
        "run": str(args.run),
        "task": front["task"],
        "metric": front["metric"],
        "spearman_rho": rho,
        "columns": [
            ["name", "length configuration"],
            ["gflops", "FLOPs (1e9)"],
            ["search_metric", f"search split {front['metric']}"],
            ["search_lower", "lower end of the 95% interval"],
            ["metric_value", f"dev {front['metric']} ({runtime}, batch {args.batch_size})"],
            ["picked", "picked"],
        ],
        "rows": rows,
        "notes": f"{args.run}: every front point and the full-length point of front.json, the search split "
        f"({front.get('search_split', {}).get('examples', '?')} training examples) beside dev; "
        f"Spearman's rho between the two over the {len(rows)} points: "
        + (f"{rho:.2f}" if rho is not None else "undefined (a constant column)")
        + f". Picked by the search "
        f"(max_loss on the interval's lower end): {tuple(picked)}.",
    }
    atomic_write_json(args.results_dir / f"{args.name}.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
