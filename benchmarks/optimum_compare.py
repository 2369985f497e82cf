"""slimformer's int8 export against Optimum's documented path, and Optimum loading slimformer's export folder.

    SLIMFORMER_DATA=../shared/data python benchmarks/optimum_compare.py --teacher runs/banking77-hf-teacher \\
        --export runs/banking77/half-depth/export [--rounds 5]

Optimum (optimum-onnx 0.1.0) pins transformers < 4.58, so it runs in a virtual environment of its own
(``runs/venv-optimum``, made on first use: the CPU torch wheel, then ``optimum-onnx[onnxruntime]``); it is never a
dependency of the project. In that environment this script (``--optimum-side``):

1. exports the user's fine-tuned folder with ``ORTModelForSequenceClassification.from_pretrained(export=True)``,
   optimizes it with ``ORTOptimizer`` at level O2 and quantizes it with ``ORTQuantizer`` and
   ``AutoQuantizationConfig.avx512_vnni(is_static=False)`` (Optimum's documented int8 recipe);
2. loads slimformer's export folder with ``ORTModelForSequenceClassification`` (``model.int8.onnx`` and
   ``model.onnx``) and writes its logits on the test texts.

Back in the project's environment it checks that Optimum's logits on slimformer's files equal slimformer's own
session's, and times Optimum's int8 teacher against slimformer's int8 teacher (``slimformer export --int8 dynamic``
of the same folder) in ``--rounds`` interleaved rounds, at real lengths and at 64 tokens.
Writes ``benchmarks/results/optimum-compare.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "runs" / "venv-optimum"


def _optimum_side(a: argparse.Namespace) -> None:
    """Runs inside the Optimum environment."""
    import numpy as np
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTOptimizer, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig, AutoQuantizationConfig
    from transformers import AutoTokenizer

    out = Path(a.work)
    exported = ORTModelForSequenceClassification.from_pretrained(a.teacher, export=True)
    exported.save_pretrained(out / "fp32")
    ORTOptimizer.from_pretrained(exported).optimize(AutoOptimizationConfig.O2(), save_dir=out / "o2")
    quantizer = ORTQuantizer.from_pretrained(out / "o2", file_name="model_optimized.onnx")
    qconfig = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
    try:
        quantizer.quantize(qconfig, save_dir=out / "int8")
    except RuntimeError as e:  # recorded: the documented path fails on this onnxruntime
        (out / "optimum_int8_error.txt").write_text(" ".join(str(e).split()), encoding="utf-8")
    texts = json.loads(Path(a.texts).read_text(encoding="utf-8"))
    tok = AutoTokenizer.from_pretrained(a.export)
    logits = {}
    for name in ("model.int8.onnx", "model.onnx"):
        model = ORTModelForSequenceClassification.from_pretrained(a.export, file_name=name)
        rows = []
        for i in range(0, len(texts), 32):
            enc = tok(texts[i : i + 32], padding=True, truncation=True, max_length=a.max_length, return_tensors="np")
            rows.append(model(**enc).logits)
        logits[name] = np.concatenate(rows).tolist()
    (out / "optimum_logits.json").write_text(json.dumps(logits), encoding="utf-8")
    print("optimum side done")


def _ensure_venv() -> Path:
    py = VENV / "bin" / "python"
    if not py.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "optimum-onnx[onnxruntime]"], check=True)
    return py


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True, help="the user's fine-tuned Hugging Face folder")
    p.add_argument("--export", required=True, help="slimformer export folder (model.int8.onnx, config.json, tokenizer)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--texts", help="(internal) JSON list of texts")
    p.add_argument("--work", default=str(ROOT / "runs" / "optimum-compare"))
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--optimum-side", action="store_true", help="(internal) run inside the Optimum environment")
    a = p.parse_args(argv)
    if a.optimum_side:
        _optimum_side(a)
        return

    import numpy as np

    from slimformer.bench.latency import compare_runtimes
    from slimformer.bench.machine import machine_info
    from slimformer.checkpoint import read_meta
    from slimformer.evaluate import pad_batch
    from slimformer.export import OrtModel
    from slimformer.io import atomic_write_json
    from slimformer.serving import pipeline
    from slimformer.stages.export import ExportConfig, export_model
    from slimformer.tasks.data import load_eval_set

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    meta = read_meta(a.export)
    pipe = pipeline(a.export, runtime="int8", threads=a.threads)
    test = load_eval_set(meta.task, Path("."), pipe.tokenizer, split="test", max_seq_length=a.max_length)
    texts = [e.text_a for e in test.examples[:256]]
    (work / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    py = _ensure_venv()
    subprocess.run(
        [
            str(py),
            __file__,
            "--optimum-side",
            "--teacher",
            a.teacher,
            "--export",
            a.export,
            "--texts",
            str(work / "texts.json"),
            "--work",
            str(work),
            "--max-length",
            str(a.max_length),
        ],
        check=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    theirs = json.loads((work / "optimum_logits.json").read_text(encoding="utf-8"))
    agreement = {}
    for name in ("model.int8.onnx", "model.onnx"):
        ours = OrtModel(Path(a.export) / name, intra_op_num_threads=a.threads)
        rows = []
        for i in range(0, len(texts), 32):
            enc = pipe.tokenizer(
                texts[i : i + 32], padding=True, truncation=True, max_length=a.max_length, return_tensors="np"
            )
            rows.append(ours(dict(enc))["logits"])
        mine = np.concatenate(rows)
        other = np.asarray(theirs[name])
        agreement[name] = {
            "texts": len(texts),
            "max_abs_logit_diff": float(np.abs(mine - other).max()),
            "same_argmax": int((mine.argmax(-1) == other.argmax(-1)).sum()),
        }
    # speed: Optimum's O2 + avx512_vnni int8 teacher vs slimformer's int8 teacher of the same folder
    ours_dir = work / "slimformer-teacher"
    from slimformer.stages.teacher import TeacherConfig, import_teacher

    if not (ours_dir / "onnx" / "model.int8.onnx").is_file():
        import_teacher(TeacherConfig(model=a.teacher, task=meta.task, data="."), ours_dir / "model")
        export_model(ours_dir / "model", ExportConfig(int8="dynamic"), out=ours_dir / "onnx")
    error_file = work / "optimum_int8_error.txt"
    optimum_error = error_file.read_text(encoding="utf-8") if error_file.is_file() else None
    optimum_int8 = next((work / "int8").glob("*.onnx"), None) if optimum_error is None else None
    sessions = {
        "slimformer int8 teacher (export --int8 dynamic)": OrtModel(
            ours_dir / "onnx" / "model.int8.onnx", intra_op_num_threads=a.threads
        ),
    }
    if optimum_int8 is not None:
        sessions["Optimum int8 teacher (O2 + avx512_vnni dynamic)"] = OrtModel(
            optimum_int8, intra_op_num_threads=a.threads
        )
    first = test.features[:32]
    rows = []
    settings = (("real", max(len(f["input_ids"]) for f in first)), ("64", 64))
    for label, seq_len in settings if optimum_int8 is not None else ():  # nothing to compare when Optimum failed
        batch = pad_batch(first, pipe.tokenizer.pad_token_id or 0, length=seq_len)
        rounds = [
            compare_runtimes(sessions, batch, seq_len=seq_len, threads=a.threads, rounds=1) for _ in range(a.rounds)
        ]
        names = list(sessions)
        for name in names:
            ratio = [r[name].throughput_bs32 / r[names[-1]].throughput_bs32 for r in rounds]
            rows.append(
                {
                    "name": name,
                    "runtime": "onnxruntime-int8",
                    "inputs": label,
                    "seq_len": seq_len,
                    "latency_ms_bs1": statistics.median(r[name].latency_ms_bs1 for r in rounds),
                    "throughput_bs32": statistics.median(r[name].throughput_bs32 for r in rounds),
                    "throughput_x_optimum": {"median": statistics.median(ratio), "min": min(ratio), "max": max(ratio)},
                    "throughput_x_optimum_text": f"{statistics.median(ratio):.2f}x ({min(ratio):.2f}-{max(ratio):.2f})",
                }
            )
    atomic_write_json(
        ROOT / "benchmarks" / "results" / "optimum-compare.json",
        {
            "benchmark": "optimum-compare",
            "command": f"SLIMFORMER_DATA=../shared/data python benchmarks/optimum_compare.py --teacher {a.teacher} "
            f"--export {a.export} --rounds {a.rounds}",
            "machine": machine_info(a.threads),
            "task": meta.task,
            "metric": "accuracy",
            "optimum_loads_slimformer_export": agreement,
            "notes": "Optimum's ORTModelForSequenceClassification on slimformer's export folder: "
            + "; ".join(
                f"{k}: {v['same_argmax']}/{v['texts']} same arg-max, max |logit diff| {v['max_abs_logit_diff']:.3g}"
                for k, v in agreement.items()
            )
            + (f". Optimum's O2 + avx512_vnni int8 path failed here: {optimum_error}" if optimum_error else ""),
            "columns": [
                ["name", "int8 model"],
                ["inputs", "inputs"],
                ["seq_len", "tokens"],
                ["latency_ms_bs1", "bs-1 ms"],
                ["throughput_bs32", "bs-32 seq/s"],
                ["throughput_x_optimum_text", "x Optimum (median, range)"],
            ],
            "optimum_int8_error": optimum_error,
            "rows": rows,
        },
    )
    print(json.dumps({"agreement": agreement, "rows": rows}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
