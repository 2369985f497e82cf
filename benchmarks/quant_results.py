"""Low-bit QAT comparison matrices on one task at a small, equal training budget -> ``benchmarks/results/<name>.json``.

    SLIMFORMER_DATA=../shared/data python benchmarks/quant_results.py ternary-kd --task sst2 --max-steps 300
    SLIMFORMER_DATA=../shared/data python benchmarks/quant_results.py sdq --task mrpc --teacher runs/teachers/mrpc

``ternary-kd`` (METHODS §4): ternary weights + 8-bit activations, trained without KD and with each KD-QAT loss set
(TernaryBERT's score MSE, attention map, attention output, map + output). ``ternary-table``: the TernaryBERT-style
set with the word-embedding table trained quantized too (ternary / int4 per row), for a ≥ 10x smaller folder.
``sdq`` (METHODS §5, our reconstruction): int8 and 4-bit weights, PTQ (no training) vs plain QAT vs QAT + the SDQ
losses vs SDQ (Quant-Noise + self-distillation). Every trained row uses the same budget (steps, examples, batch, lr,
length, seed), stated in the file; the teacher row is evaluated with the same length and examples. Rows of other
tasks already in the file are kept when the budget matches (run the script once per task). Accuracy is measured in
PyTorch on the converted model (fake-quant numerics); ONNX Runtime accuracy and latency come from
``benchmarks/quant_deploy.py`` (run after this script). Model folders go to ``runs/quant-bench/<name>/<task>/``.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TEACHERS = {"sst2": "runs/sst2-int8/finetune", "mrpc": "runs/teachers/mrpc", "cola": "runs/teachers/cola"}
DATA = {"sst2": "glue_data/SST-2", "mrpc": "glue_data/MRPC", "cola": "glue_data/CoLA"}
SEQ_LEN = {"sst2": 64, "mrpc": 128, "cola": 64}  # KD-QAT's max_seq per task (METHODS §4(c))
# how the default teachers were fine-tuned from minilm-l6 (made by ensure_teacher when the folder is missing);
# the SST-2 one is the finetune stage of recipes/sst2-int8.yaml
TEACHER_FINETUNE = {
    "sst2": {"epochs": 1, "learning_rate": 5e-5, "batch_size": 32, "warmup_ratio": 0.06, "max_seq_length": 128},
    "mrpc": {"epochs": 5, "learning_rate": 5e-5, "max_seq_length": 128},
    "cola": {"epochs": 4, "learning_rate": 5e-5, "max_seq_length": 64},
}
PRED_REP = {"prediction": 1.0, "hidden_mse": 1.0}
SDQ_LOSSES = {"logits_kd": 1.0, "sdq_attention_kl": 1.0}
_PLAIN = {"kd_losses": {}, "gt_weight": 1.0}

# (row name, stage ("qat" / "sdq" / "ptq"), stage options) -- the comparison matrices, as data
MATRICES: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "ternary-kd": [
        ("W2A8 QAT, ground truth only", "qat", {"weight_quantizer": "ternary", **_PLAIN}),
        ("W2A8 KD TernaryBERT (pred+rep+score)", "qat", {"kd_losses": {**PRED_REP, "attention_score_mse": 1.0}}),
        ("W2A8 KD Map (pred+rep+map)", "qat", {"kd_losses": {**PRED_REP, "attention_map_kl": 1.0}}),
        ("W2A8 KD Output (pred+rep+out)", "qat", {"kd_losses": {**PRED_REP, "attention_output_mse": 1.0}}),
        (
            "W2A8 KD Map+Output (pred+rep+map+out)",
            "qat",
            {"kd_losses": {**PRED_REP, "attention_map_kl": 1.0, "attention_output_mse": 1.0}},
        ),
    ],
    "ternary-table": [  # the TernaryBERT-style loss set (best in ternary-kd) + a word-embedding table trained quantized
        (
            f"W2A8 KD TernaryBERT (pred+rep+score), {label} table trained",
            "qat",
            {"kd_losses": {**PRED_REP, "attention_score_mse": 1.0}, "embedding_bits": bits},
        )
        for label, bits in (("ternary", 2), ("int4", 4))
    ],
    "sdq": [
        (f"W{b}A8 {name}", stage, {"weight_quantizer": "uniform", "weight_bits": b, **opts})
        for b in (8, 4)
        for name, stage, opts in (
            ("PTQ (round to nearest, no training)", "ptq", _PLAIN),
            ("QAT, ground truth only", "qat", _PLAIN),
            ("QAT + self-distillation (no noise)", "qat", {"kd_losses": SDQ_LOSSES, "gt_weight": 1.0}),
            ("SDQ (Quant-Noise + self-distillation)", "sdq", {}),
        )
    ],
}


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", choices=sorted(MATRICES))
    p.add_argument("--task", required=True, choices=sorted(TEACHERS))
    p.add_argument("--teacher", help="fine-tuned teacher folder (default: runs/<known teacher of the task>)")
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--max-train-examples", type=int, default=4800)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--learning-rate", type=float, default=5e-5)
    p.add_argument("--seq-len", type=int, help="max_seq_length of training and evaluation (default: KD-QAT's)")
    p.add_argument("--max-eval-examples", type=int, default=None, help="cap on dev examples (default: all)")
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="TEXT",
        help="leave out the matrix rows whose name contains TEXT (repeatable; rows are optional ablations)",
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--run-dir", default=str(ROOT / "runs" / "quant-bench"))
    p.add_argument("--out", help="results file (default: benchmarks/results/<name>.json)")
    return p.parse_args(argv)


def ensure_teacher(task: str, folder: Path, data_root: str | None) -> None:
    """Fine-tune the default teacher of ``task`` into ``folder`` (:data:`TEACHER_FINETUNE`) when it is missing."""
    if (folder / "model.safetensors").is_file():
        return
    from slimformer.stages.finetune import FinetuneConfig, finetune

    print(f"{folder}: no teacher yet; fine-tuning minilm-l6 on {task} ({TEACHER_FINETUNE[task]})", flush=True)
    cfg = FinetuneConfig(model="minilm-l6", task=task, data=DATA[task], **TEACHER_FINETUNE[task])
    finetune(cfg, folder, data_root=data_root, resume=True)


def _budget(a: argparse.Namespace) -> dict[str, Any]:
    return {
        "max_steps": a.max_steps,
        "max_train_examples": a.max_train_examples,
        "batch_size": a.batch_size,
        "learning_rate": a.learning_rate,
        "max_eval_examples": a.max_eval_examples,
        "warmup_ratio": 0.1,
    }  # the seed and the sequence length are per row (tasks differ): runs with the same budget add rows


def _ptq(cfg: Any, out: Path, *, teacher: str, data_root: str | None) -> dict[str, Any]:
    """Prepare + convert without training (round-to-nearest PTQ in the same numerics as the QAT rows)."""
    from slimformer.checkpoint import save_model
    from slimformer.quant import convert_qat_, prepare_qat_
    from slimformer.stages._kd import evaluate_model, load_teacher, student_meta
    from slimformer.stages.qat import describe_qat_config

    loaded = load_teacher(teacher, cfg.task)
    model = convert_qat_(prepare_qat_(copy.deepcopy(loaded.model), cfg.qat_config())).eval()
    metrics = evaluate_model(model, loaded.tokenizer, cfg, teacher_meta=loaded.meta, data_root=data_root)
    quant = describe_qat_config(cfg.qat_config())
    record = {"stage": "ptq", "teacher": teacher, "quantization": quant, "steps": 0, "train_examples": 0}
    save_model(model, loaded.tokenizer, out, student_meta(loaded.meta, cfg, record))
    bits = {"weight": quant["weight"]["bits"], "activation": cfg.act_bits}
    return {"model_dir": str(out), "metrics": metrics, "bits": bits, "kd_losses": {}, "steps": 0, "train_examples": 0}


def _rel(path: str) -> str:
    """``path`` relative to the repository when it lies inside it (results files carry no machine paths)."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def _row(name: str, method: str, task: str, metric: str, res: dict[str, Any], size: float, **extra: Any) -> dict:
    return {
        "name": name,
        "runtime": "pytorch-fp32" if method == "teacher" else "pytorch-fake-quant",
        "metric_value": res["metrics"]["main"],
        "latency_ms_bs1": None,
        "throughput_bs32": None,
        "size_mb": round(size, 2),
        "task": task,
        "metric": metric,
        "method": method,
        "metrics": res["metrics"],
        **extra,
    }


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    a.seq_len = a.seq_len or SEQ_LEN[a.task]
    import os

    from slimformer.bench.machine import file_size_mb, machine_info
    from slimformer.io import atomic_write_json, read_json
    from slimformer.stages._kd import evaluate_model, load_teacher
    from slimformer.stages.qat import QATStageConfig, run_qat
    from slimformer.stages.sdq import SDQStageConfig
    from slimformer.tasks import get_task

    data_root = os.environ.get("SLIMFORMER_DATA")
    teacher = a.teacher or str(ROOT / TEACHERS[a.task])
    if not a.teacher:
        ensure_teacher(a.task, Path(teacher), data_root)
    budget = _budget(a)
    metric = get_task(a.task).main_metric
    base = {"task": a.task, "data": DATA[a.task], "threads": a.threads, "logging_steps": 50, **budget, "seed": a.seed,
            "max_seq_length": a.seq_len}  # fmt: skip
    run_dir = Path(a.run_dir) / a.name / a.task / f"seed-{a.seed}"

    loaded = load_teacher(teacher, a.task)
    t_cfg = QATStageConfig(**base, kd_losses={}, gt_weight=1.0)
    t_metrics = evaluate_model(loaded.model, loaded.tokenizer, t_cfg, teacher_meta=loaded.meta, data_root=data_root)
    notes = "the fine-tuned teacher, evaluated at the benchmark's sequence length"
    rows = [_row("teacher fp32", "teacher", a.task, metric, {"metrics": t_metrics}, file_size_mb(teacher),
                 bits={"weight": 32, "activation": 32}, kd_losses={}, seed=loaded.meta.seed, seq_len=a.seq_len,
                 notes=notes, teacher=_rel(teacher))]  # fmt: skip
    for name, stage, options in MATRICES[a.name]:
        if any(text in name for text in a.skip):
            continue
        cls = SDQStageConfig if stage == "sdq" else QATStageConfig
        cfg = cls(**{**base, **options})
        out = run_dir / "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
        print(f"== {a.task}: {name}", flush=True)
        res = (_ptq if stage == "ptq" else run_qat)(cfg, out, teacher=teacher, data_root=data_root)
        bits = res["bits"]
        rows.append(
            _row(
                name, stage, a.task, metric, res, file_size_mb(out),
                bits=bits, kd_losses=res["kd_losses"], gt_weight=cfg.gt_weight, seed=a.seed, seq_len=a.seq_len,
                steps=res["steps"], train_examples=res["train_examples"], model_dir=_rel(res["model_dir"]),
                notes="size_mb: the saved folder's weight files (codes packed at the weight bit width, rest fp32)",
            )
        )  # fmt: skip

    out_file = Path(a.out) if a.out else ROOT / "benchmarks" / "results" / f"{a.name}.json"
    old = read_json(out_file) if out_file.is_file() else {}
    keep = old.get("budget") == budget
    if old and not keep:
        print(f"{out_file}: recorded budget differs from this run's; earlier rows dropped")
    same_run = [a.task, a.seed]  # the teacher row is shared by the seeds of a task: keep one
    rows = [
        r
        for r in old.get("rows", [])
        if keep
        and [r.get("task"), r.get("seed")] != same_run
        and not (r["method"] == "teacher" and r["task"] == a.task)
    ] + rows
    command = " ".join(["benchmarks/quant_results.py", *(argv if argv is not None else sys.argv[1:])])
    commands = dict(old.get("commands", {})) if keep else {}
    commands[f"{a.task} seed {a.seed}"] = f"SLIMFORMER_DATA=../shared/data python {command}"
    tasks = sorted({r["task"] for r in rows})
    results = {
        "benchmark": a.name,
        "command": " && ".join(commands.values()),
        "commands": commands,
        "machine": machine_info(a.threads),
        "task": tasks[0] if len(tasks) == 1 else ",".join(tasks),
        "metric": metric if len(tasks) == 1 else "each row's task main metric (rows[].metric)",
        "budget": budget,
        "max_seq_length": {**old.get("max_seq_length", {}), a.task: a.seq_len} if keep else {a.task: a.seq_len},
        "pivot": {
            "columns": [t for t in ("sst2", "mrpc", "cola") if t in tasks],
            "headers": {"sst2": "SST-2 dev acc.", "mrpc": "MRPC dev F1", "cola": "CoLA dev MCC"},
            "size": True,
        },
        "columns": [
            ["task", "task"],
            ["name", "row"],
            ["seed", "seed"],
            ["metric_value", "dev metric"],
            ["size_mb", "size MB"],
            ["steps", "steps"],
        ],  # fmt: skip
        "rows": rows,
    }
    if keep and old.get("deploy_commands"):  # ONNX Runtime rows of quant_deploy.py: kept for the other tasks / seeds
        deployed = {k: v for k, v in old["deploy_commands"].items() if k != f"{a.task} seed {a.seed}"}
        results.update({k: v for k, v in old.items() if k.startswith("deploy_")}, deploy_commands=deployed)
    atomic_write_json(out_file, results)
    print(f"wrote {out_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
