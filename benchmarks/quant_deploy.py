"""ONNX Runtime rows of a low-bit QAT comparison: accuracy and speed of the deployed graphs -> the results file.

    SLIMFORMER_DATA=../shared/data python benchmarks/quant_deploy.py sdq --task sst2
    (after ``benchmarks/quant_results.py sdq --task sst2``, whose model folders it exports)

For one task and seed of ``benchmarks/results/<name>.json`` it adds, measured on an otherwise idle machine:

- the teacher's ONNX Runtime int8 post-training quantization, **dynamic** (weights int8 per channel, activation
  scales computed per call) and **static** (activation scales calibrated on ``--calibration-examples`` training
  examples, QDQ), exported from the fine-tuned fp32 teacher with the project's export + quantize stages;
- every QAT / SDQ / PTQ model folder of the matrix exported as a QDQ graph (int8 codes of the trained weights,
  4-bit codes held in int8 containers: ONNX Runtime has no 4-bit GEMM for activations, so a W4A8 graph runs the
  int8 kernels) and evaluated by ONNX Runtime; ``pytorch_metric`` is the same model's fake-quant PyTorch figure;
- timings for all of them and for the PyTorch eager fp32 teacher (its row gets them), interleaved rounds on
  the first 32 dev examples padded to the task's sequence length, batch-1 median ms and batch-32 seq/s.

Rows of this runtime, task and seed that the file already holds are replaced; the rest is kept.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from quant_results import DATA, SEQ_LEN, TEACHERS  # noqa: E402


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", choices=["sdq", "ternary-kd"])
    p.add_argument("--task", required=True, choices=sorted(TEACHERS))
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=None, help="threads of every runtime (default: physical cores)")
    p.add_argument("--calibration-examples", type=int, default=256)
    p.add_argument("--qat-atol", type=float, default=0.5, help="export parity bound of the QDQ graphs (logits)")
    p.add_argument("--iters", type=int, default=20, help="timed batch-1 calls per round (3 rounds)")
    p.add_argument("--min-time-s", type=float, default=0.5, help="minimum timed seconds per round and batch size")
    p.add_argument("--run-dir", default=str(ROOT / "runs" / "quant-bench"))
    p.add_argument("--out", help="results file (default: benchmarks/results/<name>.json)")
    return p.parse_args(argv)


def _teacher_ptq(teacher: str, work: Path, mode: str, n_calib: int, data_root: str | None) -> Path:
    """Export the fp32 teacher and quantize it with ONNX Runtime (``mode``: dynamic / static) -> int8 graph."""
    from slimformer.stages.export import ExportConfig, export_model
    from slimformer.stages.quantize import QuantizeConfig, quantize_model

    out = work / f"teacher-{mode}"
    if out.exists():
        shutil.rmtree(out)
    fp32 = export_model(teacher, ExportConfig(), out=out)["onnx_fp32"]
    cfg = QuantizeConfig(mode=mode, calibration_examples=n_calib)
    return Path(quantize_model(fp32, cfg, data_root=data_root)["onnx_int8"])


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    from slimformer.bench.latency import compare_runtimes
    from slimformer.bench.machine import file_size_mb, machine_info, physical_cores
    from slimformer.checkpoint import load_model
    from slimformer.config import resolve_data_path
    from slimformer.errors import ExportError
    from slimformer.evaluate import evaluate_predictor, pad_batch
    from slimformer.export import OrtModel
    from slimformer.io import atomic_write_json, read_json
    from slimformer.stages.export import ExportConfig, export_model
    from slimformer.tasks.data import load_eval_set

    data_root = os.environ.get("SLIMFORMER_DATA")
    out_file = Path(a.out) if a.out else ROOT / "benchmarks" / "results" / f"{a.name}.json"
    if not out_file.is_file():
        raise SystemExit(f"{out_file}: not found; run benchmarks/quant_results.py {a.name} --task {a.task} first")
    results = read_json(out_file)
    trained = [r for r in results["rows"] if r["task"] == a.task and r.get("seed") == a.seed and r.get("model_dir")]
    trained = [r for r in trained if r["runtime"] == "pytorch-fake-quant"]
    teacher_row = next((r for r in results["rows"] if r["task"] == a.task and r["method"] == "teacher"), None)
    if not trained or teacher_row is None:
        raise SystemExit(f"{out_file}: no {a.task} seed-{a.seed} rows with model_dir; run quant_results.py first")
    threads = a.threads or physical_cores()
    seq_len = teacher_row.get("seq_len") or SEQ_LEN[a.task]
    teacher = str(ROOT / (teacher_row.get("teacher") or TEACHERS[a.task]))
    work = Path(a.run_dir) / a.name / a.task / "onnx"
    work.mkdir(parents=True, exist_ok=True)

    loaded = load_model(teacher)
    tok = loaded.tokenizer
    dev = load_eval_set(a.task, resolve_data_path(DATA[a.task], data_root), tok, max_seq_length=seq_len)
    graphs: dict[str, tuple[dict[str, Any], Path]] = {}
    for mode in ("dynamic", "static"):
        path = _teacher_ptq(teacher, work, mode, a.calibration_examples, data_root)
        row = {"name": f"teacher int8 {mode} PTQ (ONNX Runtime)", "method": f"ort-ptq-{mode}", "kd_losses": {},
               "bits": {"weight": 8, "activation": 8}, "steps": 0, "train_examples": 0}  # fmt: skip
        if mode == "static":
            row["calibration_examples"] = a.calibration_examples
        graphs[row["name"]] = (row, path)
    failures: dict[str, str] = {}
    for r in trained:
        try:
            cfg = ExportConfig(qat_atol=a.qat_atol)
            exported = export_model(ROOT / r["model_dir"], cfg, out=ROOT / r["model_dir"] / "onnx")
        except ExportError as e:  # parity check failed: reported, the other rows still run
            failures[r["name"]] = str(e).replace(f"{ROOT}/", "")
            print(f"{r['name']}: {e}", file=sys.stderr)
            continue
        graphs[r["name"]] = (r, Path(exported["onnx_int8"]))

    sessions = {name: OrtModel(path, intra_op_num_threads=threads) for name, (_, path) in graphs.items()}
    pad = tok.pad_token_id or 0
    metrics = {name: evaluate_predictor(s, dev, pad_token_id=pad, progress=False) for name, s in sessions.items()}
    batch = pad_batch(dev.features[:32], pad, length=seq_len)
    timings = compare_runtimes({"teacher fp32": loaded.model.eval(), **sessions}, batch, seq_len=seq_len,
                               threads=threads, iters_bs1=a.iters, iters_bs32=3, min_time_s=a.min_time_s)  # fmt: skip

    t = timings["teacher fp32"]
    teacher_row.update(latency_ms_bs1=round(t.latency_ms_bs1, 3), throughput_bs32=round(t.throughput_bs32, 1))
    new_rows = []
    for name, (src, path) in graphs.items():
        t, m = timings[name], metrics[name]
        row = {k: v for k, v in src.items() if k not in ("metrics", "notes", "model_dir")}
        row.update(
            name=name if src["method"].startswith("ort-ptq") else f"{name} -> ONNX Runtime",
            runtime="onnxruntime-int8",
            metric_value=m["main"],
            latency_ms_bs1=round(t.latency_ms_bs1, 3),
            throughput_bs32=round(t.throughput_bs32, 1),
            speedup_bs1_vs_pytorch_fp32=round(timings["teacher fp32"].latency_ms_bs1 / t.latency_ms_bs1, 2),
            size_mb=round(file_size_mb(path), 2),
            task=a.task,
            metric=teacher_row["metric"],
            seed=a.seed,
            seq_len=seq_len,
            metrics=m,
            onnx=str(path),
            notes="size_mb: the ONNX graph; W4 codes run in int8 containers (same kernels as W8)",
        )
        if src.get("runtime") == "pytorch-fake-quant":
            row["pytorch_metric"] = src["metric_value"]
        new_rows.append(row)

    def same(r: dict[str, Any]) -> bool:
        return r["runtime"] == "onnxruntime-int8" and r["task"] == a.task and r.get("seed") == a.seed

    results["rows"] = [r for r in results["rows"] if not same(r)] + new_rows
    command = f"SLIMFORMER_DATA=../shared/data python benchmarks/quant_deploy.py {' '.join(argv or sys.argv[1:])}"
    results.setdefault("deploy_commands", {})[f"{a.task} seed {a.seed}"] = command
    results["deploy_machine"] = machine_info(threads)
    failed = {k: v for k, v in results.get("deploy_failures", {}).items() if not k.startswith(f"{a.task}: ")}
    results["deploy_failures"] = {**failed, **{f"{a.task}: {k}": v for k, v in failures.items()}}
    results["deploy_timing"] = {
        "inputs": f"first 32 dev examples padded to the task's seq_len ({a.task}: {seq_len})",
        "threads": threads,
        "iters_bs1": a.iters,
        "min_time_s": a.min_time_s,
        "rounds": 3,
    }
    atomic_write_json(out_file, results)
    print(f"wrote {len(new_rows)} ONNX Runtime rows for {a.task} to {out_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
