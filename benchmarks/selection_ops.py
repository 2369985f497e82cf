"""ONNX Runtime cost of the token-selection ops of a length-adaptive graph: before and after LENGTH_GRAPH_VERSION 2.

    python benchmarks/selection_ops.py            # writes benchmarks/results/selection-ops.json

Each op is exported alone (TorchScript exporter, opset 17, as ``export_length_onnx``) in two forms and timed
in ONNX Runtime (CPU, fp32; these ops stay fp32 in the int8 graph), interleaved over rounds, medians reported:

* significance (attention each token receives, summed over heads and real queries, ``(B, H, n, n) -> (B, n)``):
  elementwise mask product + ``ReduceSum`` over two axes (v1) vs one ``MatMul`` of the mask row with the
  probabilities (v2, :func:`slimformer.length.selector.token_significance`);
* row gather (kept tokens' hidden states, ``(B, n, D) -> (B, k, D)``): ``GatherElements`` with the index expanded
  over ``D`` (v1) vs advanced indexing, a ``Gather`` of whole rows (v2);
* Drop-and-Restore write (``(B, k, D)`` rows back into the ``(B, n, D)`` buffer): ``ScatterElements`` (v1) vs
  ``index_put``, a ``ScatterND`` of whole rows (v2).

Shapes are MiniLM-L6's (12 heads, hidden 384) at the QuaLA sequence lengths (128 SST-2, 256 SQuAD), ``k = 0.8 n``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from slimformer.length.selector import token_significance
from slimformer.models.encoder import _gather_rows, _scatter_rows

ROOT = Path(__file__).resolve().parents[1]

HEADS, HIDDEN = 12, 384
#: the ops a variant is told apart by, listed per row
MAIN_OPS = {"ReduceSum", "MatMul", "GatherElements", "Gather", "ScatterElements", "ScatterND"}


class SignificanceV1(nn.Module):
    """The v1 form: ``(probs * mask[:, None, :, None]).sum(dim=(1, 2))`` (and the same padding/[CLS] ranking)."""

    def forward(self, probs: Tensor, mask: Tensor) -> Tensor:
        m = mask.to(probs.dtype)
        scores = (probs * m[:, None, :, None]).sum(dim=(1, 2))
        pos = torch.cumsum(torch.ones_like(m), dim=1) - 1
        scores = torch.where(mask.bool(), scores, -1.0 - pos)
        return torch.where(pos == 0, torch.full_like(scores, torch.finfo(scores.dtype).max), scores)


class SignificanceV2(nn.Module):
    def forward(self, probs: Tensor, mask: Tensor) -> Tensor:
        return token_significance(probs, mask)


class GatherV1(nn.Module):
    def forward(self, x: Tensor, idx: Tensor) -> Tensor:
        return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class GatherV2(nn.Module):
    def forward(self, x: Tensor, idx: Tensor) -> Tensor:
        return _gather_rows(x, idx)


class RestoreV1(nn.Module):
    def forward(self, buffer: Tensor, idx: Tensor, rows: Tensor) -> Tensor:
        return buffer.scatter(1, idx.unsqueeze(-1).expand(-1, -1, rows.shape[-1]), rows)


class RestoreV2(nn.Module):
    def forward(self, buffer: Tensor, idx: Tensor, rows: Tensor) -> Tensor:
        return _scatter_rows(buffer, idx, rows)


def _inputs(op: str, bsz: int, n: int, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    k = int(0.8 * n)
    idx = torch.stack([torch.sort(torch.randperm(n, generator=g)[:k]).values for _ in range(bsz)])
    if op == "significance":
        probs = torch.softmax(torch.randn(bsz, HEADS, n, n, generator=g), dim=-1)
        return {"probs": probs, "mask": torch.ones(bsz, n, dtype=torch.long)}
    if op == "row gather":
        return {"x": torch.randn(bsz, n, HIDDEN, generator=g), "idx": idx}
    return {"buffer": torch.randn(bsz, n, HIDDEN, generator=g), "idx": idx, "rows": torch.randn(bsz, k, HIDDEN)}


def _session(module: nn.Module, inputs: dict[str, Tensor], path: Path, threads: int):  # noqa: ANN202
    import onnx
    import onnxruntime as ort

    names = list(inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(inputs.values()),
            str(path),
            input_names=names,
            dynamic_axes={k: {0: "batch", 1: "n"} for k in names},
            opset_version=17,
            dynamo=False,
        )
    ops = sorted({n.op_type for n in onnx.load(str(path)).graph.node} & MAIN_OPS)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]), ops


VARIANTS = {
    "significance": (SignificanceV1, SignificanceV2),
    "row gather": (GatherV1, GatherV2),
    "Drop-and-Restore write": (RestoreV1, RestoreV2),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="ORT intra-op threads (default: physical cores)")
    args = parser.parse_args(argv)

    from slimformer.bench.machine import machine_info, physical_cores
    from slimformer.io import atomic_write_json

    threads = args.threads or physical_cores()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for op, (v1, v2) in VARIANTS.items():
            for n in (128, 256):
                for bsz in (1, 32):
                    inputs = _inputs(op, bsz, n)
                    feeds = {k: v.numpy() for k, v in inputs.items()}
                    sessions = {}
                    for ver, cls in (("v1", v1), ("v2", v2)):
                        sess, ops = _session(cls().eval(), inputs, Path(tmp) / f"{ver}.onnx", threads)
                        out = sess.run(None, feeds)[0]
                        ref = cls()(*inputs.values()).numpy()
                        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)  # both forms compute the same
                        sessions[ver] = (sess, ops)
                    times: dict[str, list[float]] = {"v1": [], "v2": []}
                    iters = 50 if bsz == 1 else 10
                    for _ in range(args.rounds):
                        for ver, (sess, _) in sessions.items():
                            sess.run(None, feeds)
                            for _ in range(iters):
                                t0 = time.perf_counter()
                                sess.run(None, feeds)
                                times[ver].append((time.perf_counter() - t0) * 1e3)
                    ms = {ver: float(np.median(t)) for ver, t in times.items()}
                    rows.append(
                        {
                            "op": op,
                            "seq_len": n,
                            "batch": bsz,
                            "v1_onnx_ops": ", ".join(sessions["v1"][1]),
                            "v1_ms": round(ms["v1"], 4),
                            "v2_onnx_ops": ", ".join(sessions["v2"][1]),
                            "v2_ms": round(ms["v2"], 4),
                            "speedup": round(ms["v1"] / ms["v2"], 2),
                        }
                    )
                    print(rows[-1])
    cols = ["op", "seq_len", "batch", "v1_onnx_ops", "v1_ms", "v2_onnx_ops", "v2_ms", "speedup"]
    heads = ["op", "N", "batch", "v1 ops", "v1 ms", "v2 ops", "v2 ms", "v1 / v2"]
    results = {
        "benchmark": "selection-ops",
        "command": "python benchmarks/selection_ops.py",
        "machine": machine_info(threads),
        "task": "sst2, squad",  # no task data: MiniLM shapes at SST-2's (128) and SQuAD's (256) sequence lengths
        "metric": "ms",
        "notes": (
            f"Each op alone in ONNX Runtime fp32, MiniLM shapes ({HEADS} heads, hidden {HIDDEN}), k = 0.8 N kept "
            f"rows, median of {args.rounds} interleaved rounds. A 3-layer length-adaptive graph runs significance "
            "and the row gather at every layer, and the Drop-and-Restore write at every layer for span QA."
        ),
        "columns": [list(c) for c in zip(cols, heads)],
        "rows": rows,
    }
    out = atomic_write_json(ROOT / "benchmarks" / "results" / "selection-ops.json", results)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
