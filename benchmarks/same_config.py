"""Runs of one task compared at the same length configurations on dev, paired, against a reference run per seed.

    python benchmarks/same_config.py --name layerdrop-same-config-sst2 --reference 0.2 \
        --run 42 0 runs/issue14/quala-sst2-la-full-ld0 --run 42 0.1 runs/issue14/quala-sst2-la-full-ld01 \
        --run 42 0.2 runs/issue14/quala-sst2-la-full  --run 43 0 ... (the same for seed 43)

Where ``benchmarks/lengthdrop_vs_truncation.py`` lets each model pick its own configuration within a FLOPs budget,
this script holds the configuration fixed: every run of a seed is scored at full length and at each configuration
of the reference run's search front (``--max-configs`` evenly spaced ones when capped), on the same dev examples, and
compared with the reference run by :func:`slimformer.bench.stats.paired_test` (McNemar for accuracy, a paired
bootstrap for F1). It answers "which training makes the better model at these configurations" (the LayerDrop
ablation of issue 14: LayerDrop 0 and 0.1 against the depth default 0.2), where the matched-budget driver answers
"which model wins at this budget". Nothing is selected on dev: the configurations come from the reference's front,
searched on held-out training data.

Writes ``benchmarks/results/<name>.json``: one row per seed, run and configuration (``task``, ``seed``, ``label``,
``reference``, ``length_config``, ``flops``, ``metric_value``, ``reference_metric``, ``p_value``, ``test``) and a
summary per label (better / worse than the reference with ``p < 0.05``, over seeds and configurations).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lengthdrop_vs_truncation import ALPHA, DevScorer, SearchedRun, paired_test  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def configs_of(
    reference: SearchedRun, max_configs: int | None, extra: Sequence[Sequence[int]] = ()
) -> list[dict[str, Any]]:
    """Full length, then the reference's front configurations from the cheapest up (``max_configs``: at most that
    many front points, evenly spaced in FLOPs order, the cheapest and the costliest kept; 0: none), then ``extra``
    (genes in the front's form, e.g. configurations outside the searched range; their ``flops`` computed here).

    Returns:
        ``[{"length_config": [...], "flops": float, "full": bool}, ...]``.

    Raises:
        ConfigError: an ``extra`` gene that is not a valid configuration of the reference model.
    """
    front = sorted(reference.front["front"], key=lambda p: p["flops"])
    if max_configs is not None and len(front) > max_configs:
        idx = sorted({int(round(i)) for i in np.linspace(0, len(front) - 1, max_configs)}) if max_configs else []
        front = [front[i] for i in idx]
    full = reference.front["full"]
    rows = [{"length_config": list(full["length_config"]), "flops": full["flops"], "full": True}]
    rows += [{"length_config": list(p["length_config"]), "flops": p["flops"], "full": False} for p in front]
    if extra:
        from slimformer.checkpoint import load_model
        from slimformer.length.flops import EncoderDims, config_flops

        dims = EncoderDims.from_model(load_model(reference.model_dir).model)
        seq_len = reference.front["seq_len"]
        for gene in extra:
            flops = float(config_flops(list(gene), seq_len, dims))
            rows.append({"length_config": [int(x) for x in gene], "flops": flops, "full": False})
    return rows


def compare(
    runs: Sequence[tuple[int, str, Path]],
    *,
    reference: str,
    runtime: str = "pytorch",
    data_root: str | None = None,
    max_eval_examples: int | None = None,
    batch_size: int = 64,
    n_boot: int = 1000,
    threads: int = 1,
    max_configs: int | None = None,
    extra_configs: Sequence[Sequence[int]] = (),
    front_of: str | None = None,
    scorer: Callable[..., DevScorer] = DevScorer,
) -> list[dict[str, Any]]:
    """Score every ``(seed, label, run folder)`` at its seed's configurations (full length, the front of the run
    labelled ``front_of``, default the reference, and ``extra_configs``) and test it against the reference run of
    that seed.

    Raises:
        ConfigError: a seed has no run labelled ``reference`` (or ``front_of``), or the runs of a seed searched other
            tasks, sequence lengths or gene forms (their configurations would not mean the same).
    """
    from slimformer.errors import ConfigError

    by_seed: dict[int, list[tuple[str, SearchedRun]]] = {}
    for seed, label, run in runs:
        by_seed.setdefault(seed, []).append((label, SearchedRun.load(run)))
    rows: list[dict[str, Any]] = []
    kw = {"runtime": runtime, "data_root": data_root, "max_eval_examples": max_eval_examples}
    for seed, members in by_seed.items():
        refs = [r for label, r in members if label == reference]
        if len(refs) != 1:
            raise ConfigError(f"seed {seed}: {len(refs)} runs labelled {reference!r} (--reference); expected one")
        ref = refs[0]
        for label, run in members:
            for key in ("task", "seq_len", "gene_form"):
                if run.front.get(key) != ref.front.get(key):
                    raise ConfigError(
                        f"{run.run_dir} and {ref.run_dir} searched differently: {key} "
                        f"{run.front.get(key)!r} vs {ref.front.get(key)!r}"
                    )
        fronts = [r for label, r in members if label == (front_of or reference)]
        if len(fronts) != 1:
            raise ConfigError(f"seed {seed}: {len(fronts)} runs labelled {front_of!r} (--front-of); expected one")
        configs = configs_of(fronts[0], max_configs, extra_configs)
        ref_scorer = scorer(ref, batch_size=batch_size, threads=threads, **kw)
        for label, run in members:
            if run is ref:
                continue
            s = scorer(run, batch_size=batch_size, threads=threads, **kw)
            for c in configs:
                x, y = s.scores(c["length_config"]), ref_scorer.scores(c["length_config"])
                p, test = paired_test(x, y, n_boot=n_boot, seed=seed)
                rows.append(
                    {
                        "task": ref.front["task"],
                        "seed": seed,
                        "label": label,
                        "reference": reference,
                        "length_config": c["length_config"],
                        "full": c["full"],
                        "flops": c["flops"],
                        "metric": ref.front["metric"],
                        "metric_value": x.value(),
                        "reference_metric": y.value(),
                        "p_value": p,
                        "test": test,
                        "dev_examples": x.num_examples,
                        "run": str(run.run_dir),
                        "reference_run": str(ref.run_dir),
                    }
                )
    return rows


def summarize(rows: Sequence[dict[str, Any]], alpha: float = ALPHA) -> list[dict[str, Any]]:
    """Per label: configurations (over seeds) where it is better / worse than the reference with ``p < alpha``, and
    its full-length dev metric per seed next to the reference's."""
    out = []
    for label in dict.fromkeys(r["label"] for r in rows):
        rs = [r for r in rows if r["label"] == label]
        out.append(
            {
                "label": label,
                "reference": rs[0]["reference"],
                "comparisons": len(rs),
                "seeds": sorted({r["seed"] for r in rs}),
                "better": sum(r["p_value"] < alpha and r["metric_value"] > r["reference_metric"] for r in rs),
                "worse": sum(r["p_value"] < alpha and r["metric_value"] < r["reference_metric"] for r in rs),
                "full_length": {
                    str(r["seed"]): [r["metric_value"], r["reference_metric"], r["p_value"]] for r in rs if r["full"]
                },
                "mean_difference": float(np.mean([r["metric_value"] - r["reference_metric"] for r in rs])),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run",
        nargs=3,
        action="append",
        required=True,
        metavar=("SEED", "LABEL", "RUN"),
        help="a run folder with a finished search, its seed and label (repeat)",
    )
    parser.add_argument("--reference", required=True, help="the label every run of a seed is compared with")
    parser.add_argument("--name", required=True, help="results name: benchmarks/results/<name>.json")
    parser.add_argument("--runtime", choices=("pytorch", "int8"), default="pytorch")
    parser.add_argument("--front-of", default=None, help="the label whose search front gives the configurations")
    parser.add_argument("--max-configs", type=int, default=None, help="front configurations per seed (default all)")
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        help="an extra configuration, per-layer lengths at the search's seq_len, e.g. 64,32,16,8,4,2 (repeat)",
    )
    parser.add_argument("--data-root", default=os.environ.get("SLIMFORMER_DATA"))
    parser.add_argument("--max-eval-examples", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--trained-on", help="where the runs were trained and searched, when not on this machine")
    args = parser.parse_args(argv)

    from slimformer.bench.machine import machine_info
    from slimformer.errors import ConfigError
    from slimformer.io import atomic_write_json

    try:
        seeds = [int(s) for s, _, _ in args.run]
    except ValueError:
        parser.error(f"--run SEED must be an integer, got {[s for s, _, _ in args.run]}")
    try:
        extra = [[int(x) for x in c.split(",")] for c in args.config]
    except ValueError:
        parser.error(f"--config must be comma-separated integers, got {args.config}")
    try:
        rows = compare(
            [(seed, label, Path(run)) for seed, (_, label, run) in zip(seeds, args.run, strict=True)],
            reference=args.reference,
            runtime=args.runtime,
            data_root=args.data_root,
            max_eval_examples=args.max_eval_examples,
            batch_size=1 if args.runtime == "int8" else 64,
            n_boot=args.n_boot,
            threads=args.threads,
            max_configs=args.max_configs,
            extra_configs=extra,
            front_of=args.front_of,
        )
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = summarize(rows)
    results = {
        "benchmark": "same-config",
        "command": "python benchmarks/same_config.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(args.threads),
        **({"trained_on": args.trained_on} if args.trained_on else {}),
        "task": sorted({r["task"] for r in rows}),
        "metric": rows[0]["metric"] if rows else None,
        "runtime": args.runtime,
        "alpha": ALPHA,
        "configurations": f"full length, then the search front of the run labelled {args.front_of or args.reference!r} "
        "(searched on held-out training data)" + (f", then {args.config}" if args.config else ""),
        "summary": summary,
        "rows": rows,
    }
    out = atomic_write_json(args.results_dir / f"{args.name}.json", results)
    for s in summary:
        print(
            f"{s['label']} vs {s['reference']}: better {s['better']}, worse {s['worse']} of {s['comparisons']} "
            f"(p < {ALPHA}); mean difference {s['mean_difference']:+.4f}"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
