"""Run (or resume) a recipe and turn its report into ``benchmarks/results/<name>.json``, then refresh the tables.

    SLIMFORMER_DATA=../shared/data python benchmarks/recipe_results.py sst2-int8

runs ``slimformer compress recipes/<name>.yaml`` (completed stages of an existing run folder are reused;
pass ``--restart`` to retrain), copies the run's ``report.json`` rows into the results file with the command,
the machine and the training budget, and regenerates the tables of README.md and docs/results.md
(``benchmarks/update_readme.py``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_COMMON = ("train_examples", "epochs", "max_steps", "learning_rate", "batch_size", "max_seq_length", "seed")
_TRAINING_KEYS = {False: _COMMON, True: (*_COMMON, "squad_split", "doc_stride")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="recipe name (recipes/<name>.yaml)")
    parser.add_argument("--run-dir", help="run folder (default: runs/<name>)")
    parser.add_argument("--restart", action="store_true", help="rerun every stage")
    parser.add_argument("--rebench", action="store_true", help="re-time the run (benchmark stage) on this machine now")
    args = parser.parse_args(argv)

    from slimformer.api import compress
    from slimformer.io import atomic_write_json, read_json

    recipe = ROOT / "recipes" / f"{args.name}.yaml"
    ctx = compress(recipe, run_dir=args.run_dir, restart=args.restart)
    if args.rebench:
        from slimformer.api import benchmark

        bench_cfg = next(cfg for name, cfg in ctx.recipe.stages if name == "benchmark")
        benchmark(ctx.run_dir, bench_cfg)
    report = read_json(ctx.run_dir / "report.json")
    finetune = next((o for k, o in ctx.outputs.items() if k.endswith("-finetune")), {})
    applied = read_json(Path(finetune["model_dir"]) / "slimformer.json")["applied"] if finetune else []
    train_meta = next((a for a in applied if a.get("stage") == "finetune"), {})
    results = {
        "benchmark": args.name,
        "command": f"SLIMFORMER_DATA=../shared/data python benchmarks/recipe_results.py {args.name}"
        + (" --rebench" if args.rebench else ""),
        "recipe": f"recipes/{args.name}.yaml",
        "machine": report["machine"],
        "task": report["task"],
        "metric": report["metric"],
        "training": {k: train_meta.get(k) for k in _TRAINING_KEYS[report["task"] == "squad"]},
        "rows": report["rows"],
    }
    for key in ("eval_split", "eval_examples", "int8", "timing"):
        if key in report:
            results[key] = report[key]
    out = atomic_write_json(ROOT / "benchmarks" / "results" / f"{args.name}.json", results)
    print(f"wrote {out}")
    return subprocess.call([sys.executable, str(ROOT / "benchmarks" / "update_readme.py")])


if __name__ == "__main__":
    sys.exit(main())
