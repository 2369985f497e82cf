"""Deployment figures of QAT-converted models: folder / ONNX sizes, ORT latency, PyTorch-vs-ORT parity.

    OMP_NUM_THREADS=1 python benchmarks/qat_deploy.py --threads 1 \\
        --finetuned /path/to/sst2/finetune --data ../shared/data/glue_data/SST-2

1. sizes: MiniLM-L6 (real weights) converted with each weight scheme (no training: the conversion alone),
   saved with ``save_model`` with fp32 / int8 word embeddings; weight-file MB vs the fp32 folder, and the
   encoder-Linear bytes alone. ONNX file sizes of the fp32 graph and of the QDQ graphs.
2. latency: ONNX Runtime CPU, fp32 graph vs QDQ graphs (W8A8, W2A8 ternary) vs ORT dynamic int8 PTQ of the
   fp32 graph, at the MiniLM-L6 shape and at a tiny shape (random tokens, padded to ``--seq-len``),
   interleaved rounds (``slimformer.bench.latency.compare_runtimes``); batch-1 median ms, batch-32 seq/s.
3. parity (with ``--finetuned``): a fine-tuned SST-2 model converted W8A8 / ternary, evaluated on the full dev
   set by PyTorch and by ORT: accuracy of each, prediction agreement, max / mean |logit difference|, and the
   noise floor (PyTorch again with its embedding output perturbed by a relative 1e-7). Also the accuracy of
   the fp32 model with only its word-embedding table quantized (int8 / int4 / ternary per row).

Writes ``benchmarks/results/qat-deploy.json``. Conversions without QAT training are only a harness for the
deployment path: their accuracy is *not* the accuracy of a QAT-trained model.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimformer.bench.machine import file_size_mb, machine_info
from slimformer.checkpoint import load_model, load_pretrained, save_model
from slimformer.export import OrtModel, export_onnx, quantize_dynamic_int8
from slimformer.models import ModelMeta
from slimformer.quant import (
    BinaryWeight,
    PerRow,
    QATConfig,
    TernaryWeight,
    UniformWeight,
    convert_qat_,
    prepare_qat_,
    quantize_embeddings_,
)
from slimformer.quant.storage import quantized_modules

ROOT = Path(__file__).resolve().parents[1]
SCHEMES = {"int8": UniformWeight(8), "int4": UniformWeight(4), "ternary": TernaryWeight(), "binary": BinaryWeight()}


def _minilm(num_labels: int = 2) -> tuple[Any, Any]:
    return load_pretrained("minilm-l6", "classification", num_labels=num_labels, new_head=True)


EMBEDDINGS = {"": None, "+emb-int8": UniformWeight(8, PerRow()), "+emb-int4": UniformWeight(4, PerRow())}
EMBEDDINGS["+emb-ternary"] = TernaryWeight(PerRow())


def _convert(model: Any, weight_q: Any, emb_q: Any = None) -> Any:
    if weight_q is not None:
        convert_qat_(prepare_qat_(model, QATConfig(weight=weight_q)))
    return quantize_embeddings_(model, emb_q) if emb_q is not None else model


def sizes(tmp: Path) -> dict[str, Any]:
    from slimformer.quant.serialize import storage_bits

    model, tok = _minilm()
    meta = ModelMeta(head="classification")
    fp32 = file_size_mb(save_model(model, tok, tmp / "fp32", meta))
    out: dict[str, Any] = {"fp32_folder_mb": round(fp32, 2), "schemes": {}}
    variants = [(s, e) for s in SCHEMES for e in ("", "+emb-int8")]
    variants += [("ternary", "+emb-int4"), ("ternary", "+emb-ternary")]
    for name, emb in variants:
        m = _convert(_minilm()[0], SCHEMES[name], EMBEDDINGS[emb])
        linears = {n: q for n, q in quantized_modules(m).items() if "embeddings" not in n}
        n_lin = sum(q.weight_codes.numel() for q in linears.values())
        lin_bytes = sum(q.weight_codes.numel() * storage_bits(q.weight_q) / 8 for q in linears.values())
        folder = file_size_mb(save_model(m, tok, tmp / f"{name}{emb}", meta))
        out["schemes"][f"{name}{emb}"] = {
            "folder_mb": round(folder, 2),
            "folder_ratio": round(fp32 / folder, 2),
            "linear_weights_mb": round(lin_bytes / 1e6, 3),
            "linear_ratio_vs_fp32": round(n_lin * 4 / lin_bytes, 2),
        }
    return out


def _graphs(tmp: Path, model_fn: Any) -> dict[str, Path]:
    paths = {"ort-fp32": export_onnx(model_fn(), tmp / "fp32.onnx", validate=False)}
    paths["ort-int8-dynamic-ptq"] = quantize_dynamic_int8(paths["ort-fp32"], tmp / "ptq.onnx")
    for name, wq, emb in (
        ("ort-qdq-w8a8", UniformWeight(8), ""),
        ("ort-qdq-w8a8+emb-int8", UniformWeight(8), "+emb-int8"),
        ("ort-qdq-w2a8-ternary+emb-int8", TernaryWeight(), "+emb-int8"),
    ):
        model = _convert(model_fn(), wq, EMBEDDINGS[emb])
        paths[name] = export_onnx(model, tmp / f"{name}.onnx", validate=False)
    return paths


def latency(tmp: Path, threads: int, seq_len: int, iters: int) -> dict[str, Any]:
    from slimformer.bench.latency import compare_runtimes
    from slimformer.export.spec import DummyInputGenerator

    def tiny() -> Any:
        import sys

        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import make_tiny_model

        return make_tiny_model("classification", num_labels=2)

    out: dict[str, Any] = {}
    for shape, model_fn in (("minilm-l6", lambda: _minilm()[0]), ("tiny (hidden 32, 2 layers)", tiny)):
        sub = tmp / shape.split()[0]
        sub.mkdir()
        paths = _graphs(sub, model_fn)
        ref = model_fn()
        gen = DummyInputGenerator(ref.config, seed=0)
        batch = {k: v.numpy() for k, v in gen.generate(("input_ids", "attention_mask"), 32, seq_len).items()}
        batch["attention_mask"][:] = 1  # every row full length: timing of seq_len tokens
        sessions = {k: OrtModel(p, intra_op_num_threads=threads) for k, p in paths.items()}
        timings = compare_runtimes(sessions, batch, seq_len=seq_len, threads=threads, iters_bs1=iters, iters_bs32=3)
        base = timings["ort-fp32"].latency_ms_bs1
        out[shape] = {
            k: {
                "latency_ms_bs1": round(t.latency_ms_bs1, 3),
                "throughput_bs32": round(t.throughput_bs32, 1),
                "speedup_bs1_vs_fp32": round(base / t.latency_ms_bs1, 2),
                "onnx_mb": round(file_size_mb(paths[k]), 2),
            }
            for k, t in timings.items()
        }
    return out


def parity(tmp: Path, finetuned: str, data: str) -> dict[str, Any]:
    from slimformer.evaluate import predict, torch_predictor
    from slimformer.tasks.data import compute_task_metrics, load_eval_set

    base = load_model(finetuned)
    ev = load_eval_set("sst2", data, base.tokenizer, max_seq_length=base.meta.max_seq_length)
    fp32 = predict(torch_predictor(base.model), ev.features, progress=False)
    out: dict[str, Any] = {"examples": len(ev.features), "fp32_accuracy": compute_task_metrics(ev, fp32)["main"]}
    for emb in ("+emb-int8", "+emb-int4", "+emb-ternary"):  # embedding table alone, PyTorch, no training
        model = _convert(load_model(finetuned).model, None, EMBEDDINGS[emb])
        pt = predict(torch_predictor(model), ev.features, progress=False)
        out[f"fp32{emb}_accuracy"] = compute_task_metrics(ev, pt)["main"]
    for name, wq, emb in (
        ("w8a8", UniformWeight(8), ""),
        ("w8a8+emb-int8", UniformWeight(8), "+emb-int8"),
        ("w2a8-ternary", TernaryWeight(), ""),
        ("w2a8-ternary+emb-int8", TernaryWeight(), "+emb-int8"),
    ):
        model = _convert(load_model(finetuned).model, wq, EMBEDDINGS[emb])
        path = export_onnx(model, tmp / f"parity-{name}.onnx", validate=False)
        pt = predict(torch_predictor(model), ev.features, progress=False)["logits"]
        ox = predict(OrtModel(path), ev.features, progress=False)["logits"]
        torch.manual_seed(0)
        # noise floor: the same PyTorch model with its embedding output perturbed by a relative 1e-7
        hook = model.base.embeddings.register_forward_hook(lambda _m, _i, o: o * (1 + 1e-7 * torch.randn_like(o)))
        noisy = predict(torch_predictor(model), ev.features, progress=False)["logits"]
        hook.remove()
        diff = np.abs(pt - ox)
        out[name] = {
            "pytorch_perturbed_accuracy": compute_task_metrics(ev, {"logits": noisy})["main"],
            "perturbed_max_abs_logit_diff": float(np.abs(pt - noisy).max()),
            "pytorch_accuracy": compute_task_metrics(ev, {"logits": pt})["main"],
            "ort_accuracy": compute_task_metrics(ev, {"logits": ox})["main"],
            "agreement": float((pt.argmax(1) == ox.argmax(1)).mean()),
            "max_abs_logit_diff": float(diff.max()),
            "mean_abs_logit_diff": float(diff.mean()),
        }
    return out


def results_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """DESIGN.md ``rows`` from the sections: SST-2 dev accuracy of each converted model in PyTorch and in ONNX
    Runtime (``parity``), with its folder size (``sizes``); MiniLM latency rows (``latency``) carry no accuracy."""
    sizes = results.get("sizes", {}).get("schemes", {})
    folder = {"w8a8": "int8", "w8a8+emb-int8": "int8+emb-int8", "w2a8-ternary": "ternary"}
    folder["w2a8-ternary+emb-int8"] = "ternary+emb-int8"
    rows: list[dict[str, Any]] = []
    parity = results.get("parity", {})
    if "fp32_accuracy" in parity:
        fp32_mb = results.get("sizes", {}).get("fp32_folder_mb")
        rows.append({"name": "teacher fp32", "runtime": "pytorch-fp32", "metric_value": parity["fp32_accuracy"],
                     "size_mb": fp32_mb, "bits": {"weight": 32, "activation": 32}})  # fmt: skip
    for scheme, p in parity.items():
        if not isinstance(p, dict):
            continue
        size = sizes.get(folder.get(scheme, ""), {}).get("folder_mb")
        for runtime, key in (("pytorch-fake-quant", "pytorch_accuracy"), ("onnxruntime-int8", "ort_accuracy")):
            name = f"{scheme} (converted, no QAT training)"
            rows.append({"name": name, "runtime": runtime, "metric_value": p[key], "size_mb": size,
                         "max_abs_logit_diff": p["max_abs_logit_diff"]})  # fmt: skip
    for name, runtimes in results.get("latency", {}).get("minilm-l6", {}).items():
        rows.append({"name": f"minilm-l6 random weights, {name}", "runtime": "onnxruntime", "metric_value": None,
                     "latency_ms_bs1": runtimes["latency_ms_bs1"], "throughput_bs32": runtimes["throughput_bs32"],
                     "size_mb": runtimes["onnx_mb"]})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    from slimformer.io import atomic_write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--finetuned", help="a fine-tuned SST-2 model folder (for the parity section)")
    parser.add_argument("--data", help="the SST-2 folder (glue_data/SST-2)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["sizes", "latency", "parity"])
    parser.add_argument("--rows-only", action="store_true", help="only rebuild `rows` of the existing results file")
    args = parser.parse_args(argv)
    out_file = ROOT / "benchmarks" / "results" / "qat-deploy.json"
    if args.rows_only:
        from slimformer.io import read_json

        old = read_json(out_file)
        atomic_write_json(out_file, {**old, "task": "sst2", "metric": "accuracy", "rows": results_rows(old)})
        return 0
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {
        "benchmark": "qat-deploy",
        "command": "python benchmarks/qat_deploy.py " + " ".join(argv or __import__("sys").argv[1:]),
        "machine": machine_info(args.threads),
        "note": "random-token inputs for latency; conversions without QAT training (deployment path only)",
    }
    with tempfile.TemporaryDirectory() as tmp:
        if "sizes" not in args.skip:
            results["sizes"] = sizes(Path(tmp))
        if "latency" not in args.skip:
            results["latency"] = latency(Path(tmp), args.threads, args.seq_len, args.iters)
        if args.finetuned and "parity" not in args.skip:
            results["parity"] = parity(Path(tmp), args.finetuned, args.data)
    results.update(task="sst2", metric="accuracy", rows=results_rows(results))
    out = atomic_write_json(out_file, results)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
