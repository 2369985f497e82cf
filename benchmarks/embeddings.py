"""SVD vs direction-aware autoencoder for the token-embedding table of minilm-l6 (issue 5, METHODS.md §3).

    SLIMFORMER_DATA=../shared/data python benchmarks/embeddings.py [--ratios 2.5 5 10] [--restart] [--rebench]

For each method (svd, ae) and compression ratio of the table, runs ``recipes/embedding-<method>-sst2.yaml`` up to
``evaluate`` (compress the pretrained table, zero-shot checks, fine-tune on SST-2 with the recipe's budget, dev
accuracy) into ``runs/embeddings/<method>-<ratio>``; the uncompressed row fine-tunes minilm-l6 with the same
budget. The AE at 5x and the uncompressed model also run export -> int8 -> benchmark for the whole-model size and
accuracy on ONNX Runtime. Completed stages are reused. Writes ``benchmarks/results/embeddings.json`` and
refreshes its table in docs/results.md.
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "embeddings"
_BUDGET = ("train_examples", "epochs", "learning_rate", "batch_size", "max_seq_length", "seed")
_RUNTIME_LABEL = {
    "pytorch-fp32": "PyTorch fp32",
    "onnxruntime-fp32": "ONNX Runtime fp32",
    "onnxruntime-int8": "ONNX Runtime int8 (dynamic PTQ of the whole model)",
}
COLUMNS = [
    ["name", "row"],
    ["method", "method"],
    ["compression_ratio", "table ratio"],
    ["rank", "k"],
    ["mean_cosine", "row cosine"],
    ["mean_cosine_freq", "row cosine (freq.)"],
    ["relative_l2", "rel. L2"],
    ["fidelity", "zero-shot fidelity"],
    ["pair_auc", "MRPC AUC (zero-shot)"],
    ["metric_value", "SST-2 dev acc."],
    ["size_mb", "size MB"],
]


def _stages(raw: dict[str, Any], upto: str) -> list[Any]:
    names = [next(iter(s)) for s in raw["stages"]]
    return raw["stages"][: names.index(upto) + 1]


def _run(raw: dict[str, Any], name: str, restart: bool) -> Any:
    from slimformer.recipe import parse_recipe, run_recipe

    recipe = parse_recipe(raw, f"{raw['name']} ({name})")
    return run_recipe(recipe, run_dir=RUNS / name, restart=restart)


def _recipe(method: str | None, ratio: float | None, full: bool) -> dict[str, Any]:
    raw = yaml.safe_load((ROOT / "recipes" / f"embedding-{method or 'ae'}-sst2.yaml").read_text(encoding="utf-8"))
    raw = copy.deepcopy(raw)
    if not full:
        raw["stages"] = _stages(raw, "evaluate")
    if method is None:  # uncompressed: same fine-tuning from the pretrained model
        raw["stages"] = [s for s in raw["stages"] if "embeddings" not in s]
        raw["stages"][0]["finetune"]["model"] = raw["model"]
    else:
        raw["stages"][0]["embeddings"]["ratio"] = ratio
    return raw


def _row(name: str, method: str | None, ratio: float | None, ctx: Any) -> dict[str, Any]:
    from slimformer.io import read_json

    out = ctx.outputs
    emb = next((o["embeddings"] for k, o in out.items() if k.endswith("-embeddings")), None)
    ev = next(o for k, o in out.items() if k.endswith("-evaluate"))
    row: dict[str, Any] = {
        "name": name,
        "runtime": "pytorch-fp32",
        "method": method or "none",
        "compression_ratio": emb["compression_ratio"] if emb else 1.0,
        "rank": emb["rank"] if emb else None,
        "metric_value": ev["metrics"]["accuracy"],
        "seq_len": 64,
    }
    if emb:
        row.update({k: emb["reconstruction"][k] for k in ("mean_cosine", "mean_cosine_freq", "relative_l2")})
        row.update(fidelity=emb["fidelity"], pair_auc=emb["pair_auc"], pair_auc_original=emb["pair_auc_original"])
    report_path = ctx.run_dir / "report.json"
    if report_path.is_file():  # full recipe: sizes and int8 accuracy of the deployed files
        row["deployed"] = read_json(report_path)["rows"]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[2.5, 5.0, 10.0])
    parser.add_argument("--restart", action="store_true", help="rerun every stage")
    parser.add_argument("--rebench", action="store_true", help="re-time the deployed rows on this machine now")
    args = parser.parse_args(argv)

    from slimformer.bench.machine import machine_info
    from slimformer.io import atomic_write_json, read_json

    plan: list[tuple[str, str | None, float | None, bool]] = [("uncompressed", None, None, True)]
    for ratio in args.ratios:
        for method in ("svd", "ae"):
            plan.append((f"{method}-{ratio:g}x", method, ratio, method == "ae" and ratio == 5.0))
    rows, budget = [], {}
    for name, method, ratio, full in plan:
        ctx = _run(_recipe(method, ratio, full), name, args.restart)
        if full and args.rebench:
            from slimformer.api import benchmark

            benchmark(ctx.run_dir, next(cfg for stage, cfg in ctx.recipe.stages if stage == "benchmark"))
        rows.append(_row(name, method, ratio, ctx))
        ft = next(o for k, o in ctx.outputs.items() if k.endswith("-finetune"))
        applied = read_json(Path(ft["model_dir"]) / "slimformer.json")["applied"]
        rec = next(a for a in applied if a["stage"] == "finetune")
        budget = {k: rec.get(k) for k in _BUDGET}
    original_auc = next((r["pair_auc_original"] for r in rows if "pair_auc_original" in r), None)
    rows[0].update(fidelity=1.0, pair_auc=original_auc, mean_cosine=1.0, relative_l2=0.0)
    deployed = []  # size and accuracy of the deployed files; timings of separate runs are not comparable: dropped
    for row in rows:
        for d in row.pop("deployed", []):
            deployed.append(
                {
                    "name": f"{row['name']} · {_RUNTIME_LABEL[d['runtime']]}",
                    "runtime": d["runtime"],
                    "metric_value": d["metric_value"],
                    "size_mb": d["size_mb"],
                    "seq_len": d["seq_len"],
                    "method": row["method"],
                    "compression_ratio": row["compression_ratio"],
                }
            )
    results = {
        "benchmark": "embeddings",
        "command": "SLIMFORMER_DATA=../shared/data python benchmarks/embeddings.py" + (" --rebench" * args.rebench),
        "recipes": ["recipes/embedding-ae-sst2.yaml", "recipes/embedding-svd-sst2.yaml"],
        "machine": machine_info(threads=None),
        "task": "sst2",
        "metric": "accuracy",
        "training": budget,
        "notes": "compression_ratio is of the token-embedding table, V·d / (V·k + k·d). fidelity: mean cosine of "
        "mean-pooled sentence embeddings (SST-2 dev, 872 sentences) of the compressed vs the original pretrained "
        "encoder, no fine-tuning. pair_auc: zero-shot MRPC dev ROC-AUC of the two sentences' cosine similarity "
        "(the original encoder's is pair_auc_original). Accuracy: SST-2 dev after fine-tuning with the same budget.",
        "columns": COLUMNS,
        "rows": rows,
        "deployed": deployed,
    }
    out = atomic_write_json(ROOT / "benchmarks" / "results" / "embeddings.json", results)
    print(f"wrote {out}")
    return subprocess.call([sys.executable, str(ROOT / "benchmarks" / "update_readme.py")])


if __name__ == "__main__":
    sys.exit(main())
