"""Banking77 end to end: a user's fine-tuned model and CSV data, compressed with the one command, served.

    SLIMFORMER_DATA=../shared/data python benchmarks/banking77.py [--rounds 5] [--threads 2]

1. The teacher: ``recipes/banking77-teacher.yaml`` (minilm-l6 fine-tuned on ``banking77/train.csv`` through the
   user-data path: the task is its files and columns; eval = a seeded 10% stratified hold-out of train), run when
   ``runs/banking77-teacher`` does not hold it yet.
2. That teacher copied to a plain Hugging Face folder ``runs/banking77-hf-teacher`` (config.json with id2label,
   model.safetensors, tokenizer files; no slimformer.json).
3. The one command on that folder and the user's files (``slimformer compress --model ... --train ... --test ...
   --label-column category``), into ``runs/banking77``: teacher -> distilled student -> length search within
   ``--max-loss`` of the teacher on held-out training data -> int8 ONNX Runtime; falls back to a deeper student or
   the teacher's depth when a variant cannot meet the loss (``runs/banking77/variants.json``).
4. On ``test.csv`` (3,080 questions, never used for training, search or picking): accuracy and macro-F1 of the
   fp32 teacher (PyTorch eager), its int8 ONNX Runtime graph (dynamic PTQ) and the compressed model (int8 ONNX
   Runtime, the picked length configuration); batch-1 latency and batch-32 throughput of each, at real lengths
   (the first 32 test questions padded to the longest of them) and at 64 tokens, in ``--rounds`` interleaved rounds
   (median and range of the per-round ratios); ``slimformer.pipeline`` on the compressed folder from raw text.

Writes ``benchmarks/results/banking77.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEACHER_RUN = ROOT / "runs" / "banking77-teacher"
HF_TEACHER = ROOT / "runs" / "banking77-hf-teacher"
RUN = ROOT / "runs" / "banking77"
#: What a plain Hugging Face folder holds (a user's fine-tuned model); slimformer.json is deliberately left out.
HF_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


def _data_root() -> Path:
    return Path(os.environ.get("SLIMFORMER_DATA", ROOT.parent / "shared" / "data")).resolve()


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def _teacher() -> Path:
    folder = TEACHER_RUN / "finetune"
    if not (folder / "model.safetensors").is_file():
        _run(["slimformer", "compress", "recipes/banking77-teacher.yaml", "--run-dir", str(TEACHER_RUN)])
    return folder


def _plain_copy(folder: Path) -> Path:
    HF_TEACHER.mkdir(parents=True, exist_ok=True)
    for name in HF_FILES:
        if (folder / name).is_file():
            shutil.copy2(folder / name, HF_TEACHER / name)
    assert not (HF_TEACHER / "slimformer.json").exists()
    return HF_TEACHER


def _ratio_stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def add_columns(results: dict) -> dict:
    """The table docs/results.md shows: flat ``x (min-max)`` strings of the ratio dicts, and the ``columns`` list."""
    for row in results["rows"]:
        for key in (
            "throughput_x_eager",
            "throughput_x_int8_teacher",
            "throughput_x_eager_64",
            "throughput_x_int8_teacher_64",
        ):
            r = row.get(key)
            if isinstance(r, dict):
                row[f"{key}_text"] = f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})"
    results["columns"] = [
        ["name", "model"],
        ["metric_value", "test accuracy"],
        ["macro_f1", "macro-F1"],
        ["latency_ms_bs1", "bs-1 ms (real)"],
        ["throughput_bs32", "bs-32 seq/s (real)"],
        ["throughput_x_eager_text", "x eager fp32 (real)"],
        ["throughput_x_int8_teacher_text", "x int8 teacher (real)"],
        ["throughput_bs32_64", "bs-32 seq/s (64 tok)"],
        ["throughput_x_eager_64_text", "x eager fp32 (64 tok)"],
        ["throughput_x_int8_teacher_64_text", "x int8 teacher (64 tok)"],
        ["size_mb", "size MB"],
    ]
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-loss", type=float, default=1.0)
    a = p.parse_args(argv)

    import numpy as np

    import slimformer
    from slimformer.bench.latency import compare_runtimes
    from slimformer.bench.machine import file_size_mb, machine_info
    from slimformer.checkpoint import load_model
    from slimformer.evaluate import pad_batch, predict, torch_predictor
    from slimformer.export import OrtModel
    from slimformer.export.length_ort import LengthOrtModel
    from slimformer.io import atomic_write_json, read_json
    from slimformer.length.config import gene_config
    from slimformer.tasks import get_task
    from slimformer.tasks.data import compute_task_metrics, load_eval_set

    data = _data_root() / "banking77"
    teacher_dir = _teacher()
    hf = _plain_copy(teacher_dir)
    command = [
        "slimformer",
        "compress",
        "--model",
        str(hf.relative_to(ROOT)),
        "--train",
        str(data / "train.csv"),
        "--test",
        str(data / "test.csv"),
        "--text-column",
        "text",
        "--label-column",
        "category",
        "--task-name",
        "banking77",
        "--run-dir",
        str(RUN.relative_to(ROOT)),
        "--max-loss",
        str(a.max_loss),
    ]
    _run(command)

    variants = read_json(RUN / "variants.json")
    chosen = RUN / variants["chosen"]
    state = {s["name"]: s["outputs"] for s in read_json(chosen / "state.json")["stages"]}
    front = read_json(state["search"]["front_json"])
    selected = front["selected"]
    config = gene_config(selected["length_config"], front["gene_form"], front["seq_len"])
    teacher = load_model(state["teacher"]["model_dir"])
    spec = get_task("banking77")
    tok = teacher.tokenizer
    test = load_eval_set(spec.name, data, tok, split="test", max_seq_length=spec.max_seq_length)
    teacher_int8 = chosen / "length_benchmark" / "teacher-onnx" / "model.int8.onnx"
    pick_int8 = Path(state["export"]["onnx_int8"])
    threads = a.threads
    sessions = {
        "teacher fp32 (PyTorch eager)": teacher.model.eval(),
        "teacher int8 (ONNX Runtime, dynamic PTQ)": OrtModel(teacher_int8, intra_op_num_threads=threads),
        "compressed (int8 ONNX Runtime, picked length configuration)": LengthOrtModel(
            pick_int8, config, intra_op_num_threads=threads
        ),
    }
    pad = tok.pad_token_id or 0
    rows = []
    accuracy = {}
    for name, model in sessions.items():
        predictor = torch_predictor(model) if name.startswith("teacher fp32") else model
        out = predict(predictor, test.features, batch_size=32, pad_token_id=pad, progress=False)
        accuracy[name] = compute_task_metrics(test, out)
    pipe = slimformer.pipeline(Path(state["export"]["export_dir"]), threads=threads, batch_size=32)  # the pick
    preds = pipe([e.text_a for e in test.examples])
    pipeline_accuracy = float(np.mean([p["label"] == e.label for p, e in zip(preds, test.examples)]))

    timing: dict[str, dict[str, list]] = {}
    first = test.features[:32]
    real_len = max(len(f["input_ids"]) for f in first)
    for label, seq_len in (("real", real_len), ("64", 64)):
        batch = pad_batch(first, pad, length=seq_len)
        per_round = []
        for _ in range(a.rounds):
            per_round.append(compare_runtimes(sessions, batch, seq_len=seq_len, threads=threads, rounds=1))
        timing[label] = {"seq_len": seq_len, "rounds": per_round}

    names = list(sessions)
    eager, int8 = names[0], names[1]
    for name in names:
        row = {
            "name": name,
            "runtime": "pytorch-fp32" if name == eager else "onnxruntime-int8",
            "teacher_source": "hf-folder",
            "metric_value": accuracy[name]["accuracy"],
            "macro_f1": accuracy[name].get("macro_f1"),
            "size_mb": file_size_mb(teacher_dir if name == eager else (teacher_int8 if name == int8 else pick_int8)),
            "seq_len": spec.max_seq_length,
        }
        for label, t in timing.items():
            lat = [r[name].latency_ms_bs1 for r in t["rounds"]]
            thr = [r[name].throughput_bs32 for r in t["rounds"]]
            suffix = "" if label == "real" else "_64"
            row[f"latency_ms_bs1{suffix}"] = statistics.median(lat)
            row[f"throughput_bs32{suffix}"] = statistics.median(thr)
            for ref_name, ref in (("eager", eager), ("int8_teacher", int8)):
                ratios = [r[name].throughput_bs32 / r[ref].throughput_bs32 for r in t["rounds"]]
                row[f"throughput_x_{ref_name}{suffix}"] = _ratio_stats(ratios)
        if name == names[2]:
            row["length_config"] = selected.get("length_config")
            row["variant"] = variants["chosen"]
            row["pipeline_accuracy"] = pipeline_accuracy
        rows.append(row)
    loss_points = 100 * (accuracy[eager]["accuracy"] - accuracy[names[2]]["accuracy"])
    results = {
        "benchmark": "banking77",
        "command": "SLIMFORMER_DATA=../shared/data python benchmarks/banking77.py "
        f"--rounds {a.rounds} --threads {threads} --max-loss {a.max_loss}",
        "compress_command": " ".join(command),
        "machine": machine_info(threads),
        "task": "banking77",
        "metric": "accuracy",
        "eval_split": "test.csv (3,080; never used for training, search or picking)",
        "teacher_recipe": "recipes/banking77-teacher.yaml",
        "variants": variants,
        "timing": {
            "real": f"the first 32 test questions padded to the longest of them ({real_len} tokens); batch 1 = "
            "the first of them at that length",
            "64": "the same questions padded to 64 tokens",
            "rounds": a.rounds,
            "ratios": "median (min-max) of per-round throughput ratios; each round times every runtime once",
        },
        "loss_points_vs_teacher_fp32": loss_points,
        "targets": {
            "throughput_x_eager_ge_8": rows[2]["throughput_x_eager"]["median"] >= 8,
            "throughput_x_int8_teacher_ge_2": rows[2]["throughput_x_int8_teacher"]["median"] >= 2,
            "loss_le_1_point": loss_points <= 1.0,
        },
        "pipeline_reproduces_test_accuracy": abs(pipeline_accuracy - accuracy[names[2]]["accuracy"]) < 1e-9,
        "rows": rows,
    }
    atomic_write_json(ROOT / "benchmarks" / "results" / "banking77.json", add_columns(results))
    print(json.dumps({k: results[k] for k in ("loss_points_vs_teacher_fp32", "targets")}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
