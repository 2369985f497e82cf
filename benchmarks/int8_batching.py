"""int8 accuracy vs evaluation batching: the same graphs scored under several batchings of the same eval split.

    SLIMFORMER_DATA=../shared/data python benchmarks/int8_batching.py [--export runs/quickstart-sst2/export]
        [--threads 1] [--calibration-examples 256]

A dynamically quantized ONNX graph (ONNX Runtime dynamic int8 PTQ) computes each activation's int8 scale from the
whole batch tensor at run time, padding included, so one input's prediction depends on its batch mates: its
accuracy depends on how the evaluation batched. This script scores, on the model's eval split (SST-2 dev for the
quickstart model):

- the export folder's fp32 graph, its dynamic int8 graph (``model.int8.onnx``, re-quantized dynamic if it is not),
  and a static int8 graph (``quantize: {mode: static}``, calibrated on ``--calibration-examples`` training
  examples) built in a scratch copy (the export folder is only read);
- under each batching: batch size 1 (each input alone, unpadded: what a served request gets, the default for
  dynamic graphs), 1 padded to 128, 32 in file order, 32 length-sorted (padded to the longest of the batch), 32 in
  file order padded to 128, and 64 length-sorted (evaluation's batching before batch size 1 became the default);
- and the wall seconds of the batch-1 and batch-64 passes of the dynamic graph (is batch 1 affordable).

Writes ``benchmarks/results/int8-batching.json`` (rows: one per graph and batching).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "int8-batching.json"


#: The table ``benchmarks/update_readme.py`` renders into docs/results.md.
COLUMNS = [
    ["name", "graph"],
    ["batching_name", "evaluation batching"],
    ["metric_value", "accuracy"],
    ["eval_seconds", "eval s (1 thread)"],
]


def summary(results: dict) -> dict:
    """``columns`` and ``notes`` (the spread of each graph) of a results dict that has ``spread`` and ``rows``."""
    spread = "; ".join(
        f"{name} {s['min']:.4f}-{s['max']:.4f} (spread {100 * s['spread']:.2f} points)"
        for name, s in results["spread"].items()
    )
    secs = results["bs1_vs_bs64_seconds_dynamic"]
    return {
        "columns": COLUMNS,
        "notes": f"Range over the batchings: {spread}. The dynamic int8 graph's bs-1 pass took {secs['bs1']} s, "
        f"its bs-64 pass {secs['bs64']} s.",
    }


def _batchings(max_len: int) -> dict[str, object]:
    from slimformer.evaluate import EvalBatching

    return {
        "bs 1 (served)": EvalBatching(batch_size=1),
        f"bs 1, padded to {max_len}": EvalBatching(batch_size=1, padding="max_length", max_length=max_len),
        "bs 32, file order": EvalBatching(batch_size=32, order="file"),
        "bs 32, length-sorted": EvalBatching(batch_size=32),
        f"bs 32, file order, padded to {max_len}": EvalBatching(
            batch_size=32, order="file", padding="max_length", max_length=max_len
        ),
        "bs 64, length-sorted": EvalBatching(batch_size=64),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--export", default=str(ROOT / "runs" / "quickstart-sst2" / "export"), help="export folder")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--calibration-examples", type=int, default=256)
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args(argv)

    from slimformer.bench.machine import machine_info
    from slimformer.checkpoint import read_meta
    from slimformer.config import resolve_data_path
    from slimformer.evaluate import evaluate_predictor
    from slimformer.export import FP32_FILE, INT8_FILE, OrtModel
    from slimformer.io import atomic_write_json
    from slimformer.models.load import load_tokenizer
    from slimformer.stages.quantize import QuantizeConfig, quantize_model, training_data
    from slimformer.tasks.data import load_eval_set

    export = Path(a.export)
    meta = read_meta(export)
    task, data, ft = training_data(meta)
    max_len = meta.max_seq_length or 128
    with tempfile.TemporaryDirectory(prefix="slimformer-int8-batching-") as tmp:
        dyn, static = Path(tmp) / "dynamic", Path(tmp) / "static"
        shutil.copytree(export, dyn)
        shipped = dyn / INT8_FILE
        if not (shipped.is_file() and OrtModel(shipped).dynamic_activations):
            quantize_model(dyn / FP32_FILE, QuantizeConfig(mode="dynamic"))
        shutil.copytree(export, static, ignore=shutil.ignore_patterns(INT8_FILE))
        quantize_model(static / FP32_FILE, QuantizeConfig(mode="static", calibration_examples=a.calibration_examples))
        tok = load_tokenizer(str(dyn), True)
        eval_set = load_eval_set(
            task,
            resolve_data_path(data),
            tok,
            max_seq_length=max_len,
            squad_split=ft.get("squad_split", "dev-article-split"),
        )
        graphs = {
            "fp32 (ORT)": ("onnxruntime-fp32", OrtModel(dyn / FP32_FILE, intra_op_num_threads=a.threads)),
            "int8 dynamic PTQ (ORT)": ("onnxruntime-int8", OrtModel(dyn / INT8_FILE, intra_op_num_threads=a.threads)),
            "int8 static PTQ (ORT)": ("onnxruntime-int8", OrtModel(static / INT8_FILE, intra_op_num_threads=a.threads)),
        }
        assert graphs["int8 dynamic PTQ (ORT)"][1].dynamic_activations
        assert not graphs["int8 static PTQ (ORT)"][1].dynamic_activations
        pad = tok.pad_token_id or 0
        rows, seconds = [], {}
        for name, (runtime, session) in graphs.items():
            for label, batching in _batchings(max_len).items():
                start = time.perf_counter()
                m = evaluate_predictor(session, eval_set, batching=batching, pad_token_id=pad, progress=False)
                elapsed = time.perf_counter() - start
                seconds[(name, label)] = elapsed
                rows.append(
                    {
                        "name": name,
                        "runtime": runtime,
                        "batching_name": label,
                        "batching": batching.to_dict(),
                        "dynamic_activations": session.dynamic_activations,
                        "metric_value": m["main"],
                        "metrics": m,
                        "eval_seconds": round(elapsed, 2),
                    }
                )
                print(f"{name:24s} {label:34s} {m['main']:.4f}  ({elapsed:.1f}s)", flush=True)

    spread = {}
    for name in graphs:
        values = [r["metric_value"] for r in rows if r["name"] == name]
        spread[name] = {"min": min(values), "max": max(values), "spread": max(values) - min(values)}
    dyn_name = "int8 dynamic PTQ (ORT)"
    results = {
        "benchmark": "int8-batching",
        "command": f"SLIMFORMER_DATA=../shared/data python benchmarks/int8_batching.py --export {a.export} "
        f"--threads {a.threads} --calibration-examples {a.calibration_examples}",
        "machine": machine_info(a.threads),
        "task": task,
        "metric": eval_set.spec.main_metric,
        "eval_split": eval_set.split,
        "eval_examples": len(eval_set.examples),
        "model": str(export),
        "model_applied": [x.get("stage") for x in meta.applied],
        "max_seq_length": max_len,
        "static_calibration_examples": a.calibration_examples,
        "spread": spread,
        "bs1_vs_bs64_seconds_dynamic": {
            "bs1": round(seconds[(dyn_name, "bs 1 (served)")], 2),
            "bs64": round(seconds[(dyn_name, "bs 64, length-sorted")], 2),
        },
        "rows": rows,
    }
    results.update(summary(results))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out, results)
    print(json.dumps(spread, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
