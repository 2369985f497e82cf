"""Whole-folder size of ternary (W2A8) models with the token-embedding table quantized after training (issue 4).

    SLIMFORMER_DATA=../shared/data python benchmarks/ternary_size.py [--task sst2]

Reads the W2A8 KD models that ``benchmarks/quant_results.py ternary-kd`` trained (``runs/quant-bench/ternary-kd/
<task>/seed-*/``), quantizes their fp32 word-embedding table post-training (int8, int4, ternary; one scale per row,
:func:`slimformer.quant.quantize_embeddings_`), saves each packed and evaluates it on the dev set in PyTorch. The
embedding table is 11.7M of minilm-l6's 22.7M parameters, so the folder only gets ≥ 10x smaller than fp32 when
the table shrinks too. Writes ``benchmarks/results/ternary-size.json``.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = "w2a8-kd-map-output--pred-rep-map-out"  # the recipe's default loss set (map + output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--teacher", default=str(ROOT / "runs" / "sst2-int8" / "finetune"))
    args = parser.parse_args(argv)

    from slimformer.api import evaluate
    from slimformer.bench.machine import file_size_mb, machine_info
    from slimformer.checkpoint import load_model, save_model
    from slimformer.io import atomic_write_json
    from slimformer.quant.embedding import quantize_embeddings_
    from slimformer.quant.granularity import PerRow
    from slimformer.quant.modules import TernaryWeight, UniformWeight

    tables = {
        "int8 table": lambda: UniformWeight(8, PerRow()),
        "int4 table": lambda: UniformWeight(4, PerRow()),
        "ternary table": lambda: TernaryWeight(PerRow()),
    }
    teacher_mb = file_size_mb(args.teacher)
    rows = [{"name": "teacher fp32", "runtime": "pytorch-fp32", "size_mb": round(teacher_mb, 2), "task": args.task}]
    rows[0]["metric_value"] = evaluate(args.teacher)["main"]
    work = ROOT / "runs" / "quant-bench" / "ternary-size"
    for folder in sorted((ROOT / "runs" / "quant-bench" / "ternary-kd" / args.task).glob(f"seed-*/{ROW}")):
        seed = int(folder.parent.name.split("-")[1])
        loaded = load_model(folder)
        variants = {"fp32 table (as trained)": None, **tables}
        for label, make in variants.items():
            out = folder if make is None else work / f"seed-{seed}-{label.split()[0]}"
            if make is not None:
                model = quantize_embeddings_(copy.deepcopy(loaded.model), make())
                save_model(model, loaded.tokenizer, out, loaded.meta)
            size = file_size_mb(out)
            rows.append(
                {
                    "name": f"W2A8 KD map+output, {label}",
                    "runtime": "pytorch-fake-quant",
                    "metric_value": evaluate(out)["main"],
                    "size_mb": round(size, 2),
                    "ratio_vs_teacher": round(teacher_mb / size, 2),
                    "task": args.task,
                    "seed": seed,
                    "bits": {"weight": 2, "activation": 8, "embeddings": label.split()[0]},
                }
            )
            print(rows[-1], flush=True)
    shutil.rmtree(work, ignore_errors=True)
    results = {
        "benchmark": "ternary-size",
        "command": f"SLIMFORMER_DATA=../shared/data python benchmarks/ternary_size.py --task {args.task}",
        "machine": machine_info(),
        "task": args.task,
        "metric": "accuracy",
        "notes": "size_mb: the weight files (packed ternary codes + scales, the table as labelled, rest fp32); "
        "the table is quantized after QAT (not trained quantized).",
        "columns": [
            ["name", "model"],
            ["seed", "seed"],
            ["metric_value", "SST-2 dev acc."],
            ["size_mb", "size MB"],
            ["ratio_vs_teacher", "smaller than fp32"],
        ],  # fmt: skip
        "rows": rows,
    }
    out_file = atomic_write_json(ROOT / "benchmarks" / "results" / "ternary-size.json", results)
    print(f"wrote {out_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
