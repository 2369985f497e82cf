"""Where the int8 graphs spend their time: ONNX Runtime's node profile, summed per op type, teacher vs pick.

    python benchmarks/op_profile.py --run runs/issue14-full/quala-sst2-l3b \\
        --out benchmarks/results/op-profile-sst2-l3b.json

For each run folder with a finished ``length_benchmark`` stage (the runs :mod:`quala_timing` times), the teacher's
int8 ONNX Runtime graph and the pick's int8 graph (its length configuration fed) run on the timing batch of
``quala_timing.py`` (32 rows of ``seq_len`` real tokens, no padding), alternately, ``--reps`` times each after
``--warmup`` unprofiled runs, with ONNX Runtime's profiler on (``SessionOptions.enable_profiling``). Each node's
kernel time is summed per op type (``DynamicQuantizeMatMul``, ``MatMul``, ``Add``, ...) and divided by the reps:
ms per batch. The table puts both graphs side by side, with each op type's share of its graph's kernel time and
the teacher/pick time ratio, and states the FLOPs ratio of the two (``length_benchmark``'s count: the encoder's
matrix products) next to the measured kernel-time ratio.

The profiler adds a little time per node, and one thread (the default) keeps the thread pool's waits out of the
kernel times, so the totals are not the throughput of ``quala_timing.py``; the shares and the ratio are what this
measures. Writes ``benchmarks/results/op-profile.json`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def op_times(events: Iterable[Mapping[str, Any]], reps: int, skip_runs: int = 0) -> dict[str, float]:
    """Kernel time per op type in ms per run, from ONNX Runtime profile events (the JSON list it writes).

    Args:
        events: the profiler's events; only ``cat == "Node"`` events named ``*_kernel_time`` count (not the
            ``*_fence_before`` / ``*_fence_after`` ones, nor session events).
        reps: how many runs are counted (> 0): those after the first ``skip_runs``.
        skip_runs: warm-up runs to leave out: node events that start before the end of the ``skip_runs``-th
            ``model_run`` session event (by ``ts``) do not count.

    Returns:
        ``{op type: ms per run}`` (the events' ``dur`` is in microseconds), largest first.

    Raises:
        ValueError: ``reps`` < 1, ``skip_runs`` < 0, or fewer ``model_run`` events than ``skip_runs + reps``.
    """
    if reps < 1 or skip_runs < 0:
        raise ValueError(f"reps {reps}, skip_runs {skip_runs}: expected at least 1 run counted, none negative")
    events = list(events)
    runs = sorted(
        (float(e["ts"]), float(e["ts"]) + float(e["dur"]))
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    if len(runs) < skip_runs + reps:
        raise ValueError(f"{len(runs)} model_run events in the profile: expected {skip_runs} warm-up + {reps} runs")
    cutoff = runs[skip_runs - 1][1] if skip_runs else float("-inf")
    total: Counter[str] = Counter()
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time") and float(e["ts"]) >= cutoff:
            total[str(e.get("args", {}).get("op_name", "?"))] += float(e["dur"])
    return {op: us / reps / 1000.0 for op, us in total.most_common()}


def profile_rows(teacher: Mapping[str, float], pick: Mapping[str, float], top: int = 10) -> list[dict[str, Any]]:
    """Table rows: the ``top`` op types by teacher time, the rest as ``other``, then ``total``.

    Args:
        teacher, pick: :func:`op_times` of the two graphs (ms per batch).
        top: how many op types are listed by name: the largest by teacher time (an op type the teacher lacks
            ranks by pick time, after the teacher's); the rest are summed in ``other``.

    Returns:
        Rows ``{"op", "teacher_ms", "teacher_share", "pick_ms", "pick_share", "ratio"}``; shares are percent of
        the graph's total kernel time, ``ratio`` is teacher ms / pick ms (``None`` where the pick has none).
    """
    t_total, p_total = sum(teacher.values()), sum(pick.values())
    named = sorted(set(teacher) | set(pick), key=lambda op: (-teacher.get(op, 0.0), -pick.get(op, 0.0), op))[:top]

    def row(op: str, t: float, p: float) -> dict[str, Any]:
        return {
            "op": op,
            "teacher_ms": round(t, 2),
            "teacher_share": round(100.0 * t / t_total, 1) if t_total else 0.0,
            "pick_ms": round(p, 2),
            "pick_share": round(100.0 * p / p_total, 1) if p_total else 0.0,
            "ratio": round(t / p, 2) if p else None,
        }

    rows = [row(op, teacher.get(op, 0.0), pick.get(op, 0.0)) for op in named]
    rest_t = t_total - sum(teacher.get(op, 0.0) for op in named)
    rest_p = p_total - sum(pick.get(op, 0.0) for op in named)
    if rest_t > 0 or rest_p > 0:
        rows.append(row("other", rest_t, rest_p))
    rows.append(row("total", t_total, p_total))
    return rows


def _session(path: Path, threads: int, prefix: str):  # noqa: ANN202 - onnxruntime.InferenceSession
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.enable_profiling = True
    so.profile_file_prefix = prefix
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def profile_run(run: Path, reps: int, warmup: int, threads: int) -> dict[str, Any]:
    """Profile one run folder's teacher int8 and pick int8 graphs (see the module notes)."""
    import tempfile

    from quala_timing import _artefacts, _rel

    from slimformer.export.length import length_feeds
    from slimformer.export.length_ort import full_length_batch
    from slimformer.io import read_json

    state = {s["name"]: s["outputs"] for s in read_json(run / "state.json")["stages"]}
    if "length_benchmark" not in state:
        raise SystemExit(f"{run}: no finished length_benchmark stage (run the recipe's export and length_benchmark)")
    report = read_json(state["length_benchmark"]["report_json"])
    a = _artefacts(run, report)
    vocab_size = int(read_json(Path(a["teacher"]) / "config.json")["vocab_size"])  # the batch only: no weights read
    batch = full_length_batch(vocab_size, a["seq_len"], 32)
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {
            "teacher": _session(a["teacher_int8"], threads, os.path.join(tmp, "teacher")),
            "pick": _session(a["pick_int8"], threads, os.path.join(tmp, "pick")),
        }
        feeds = {}
        for name, s in sessions.items():
            inputs = {i.name for i in s.get_inputs()}
            extra = length_feeds(a["config"], len(a["gene"])) if name == "pick" else {}
            feeds[name] = {k: v for k, v in {**batch, **extra}.items() if k in inputs}
        for _ in range(warmup + reps):
            for name, s in sessions.items():
                s.run(None, feeds[name])
        for name, s in sessions.items():
            with open(s.end_profiling()) as f:
                out[name] = op_times(json.load(f), reps, skip_runs=warmup)
    by_name = {r["name"]: r for r in report["rows"]}
    pick_row = next(r for r in report["rows"] if r["name"].startswith("QuaLA student"))
    flops = {"teacher": by_name["teacher int8 dynamic PTQ (ORT)"]["flops"], "pick": pick_row["flops"]}
    t_total, p_total = sum(out["teacher"].values()), sum(out["pick"].values())
    return {
        "run_dir": _rel(run),
        "length_config": list(a["gene"]),
        "task": a["task"],
        "seq_len": a["seq_len"],
        "reps": reps,
        "flops": flops,
        "flops_ratio": round(flops["teacher"] / flops["pick"], 2),
        "kernel_ms": {k: round(v, 2) for k, v in (("teacher", t_total), ("pick", p_total))},
        "kernel_time_ratio": round(t_total / p_total, 2),
        "op_ms": out,
        "rows": profile_rows(out["teacher"], out["pick"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, action="append", required=True, help="a run folder (repeatable)")
    parser.add_argument("--reps", type=int, default=8, help="profiled runs per graph (default 8)")
    parser.add_argument(
        "--warmup", type=int, default=2, help="warm-up runs per graph, left out of the profile (default 2)"
    )
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "op-profile.json")
    args = parser.parse_args(argv)
    if args.reps < 1 or args.warmup < 0 or args.threads < 1:
        parser.error(f"--reps {args.reps} --warmup {args.warmup} --threads {args.threads}: expected >= 1, >= 0, >= 1")

    from slimformer.bench.machine import machine_info
    from slimformer.io import atomic_write_json

    runs = [profile_run(r.resolve(), args.reps, args.warmup, args.threads) for r in args.run]
    from quala_timing import _rel

    rel = [_rel(r) for r in args.run]
    rows = [
        {
            "run": Path(r["run_dir"]).name,
            "length_config": str(tuple(r["length_config"])),
            **row,
            "ratio": "–" if row["ratio"] is None else f"{row['ratio']:.2f}x",
        }
        for r in runs
        for row in r["rows"]
    ]
    for r in runs:
        print(
            f"{r['run_dir']}: kernel time {r['kernel_ms']['teacher']:.0f} vs {r['kernel_ms']['pick']:.0f} ms per batch "
            f"({r['kernel_time_ratio']:.2f}x); FLOPs ratio {r['flops_ratio']:.2f}x"
        )
    cols = [
        ("run", "run"),
        ("length_config", "pick"),
        ("op", "op type"),
        ("teacher_ms", "teacher int8 ms"),
        ("teacher_share", "share %"),
        ("pick_ms", "pick int8 ms"),
        ("pick_share", "share %"),
        ("ratio", "teacher / pick"),
    ]
    summary = "; ".join(
        f"{Path(r['run_dir']).name}: kernel time ratio {r['kernel_time_ratio']:.2f}x, "
        f"FLOPs ratio {r['flops_ratio']:.2f}x"
        for r in runs
    )
    results = {
        "benchmark": "op-profile",
        "command": "SLIMFORMER_DATA=../shared/data python benchmarks/op_profile.py"
        + "".join(f" --run {r}" for r in rel)
        + (f" --reps {args.reps}" if args.reps != 8 else "")
        + (f" --warmup {args.warmup}" if args.warmup != 2 else "")
        + (f" --threads {args.threads}" if args.threads != 1 else "")
        + f" --out {_rel(args.out)}",
        "machine": machine_info(args.threads),
        "task": ", ".join(dict.fromkeys(r["task"] for r in runs)),
        "metric": "ms per batch",
        "notes": (
            f"ONNX Runtime kernel time per op type, ms per batch of 32 full-length rows (no padding), mean of "
            f"{args.reps} profiled runs per graph after {args.warmup} warm-up runs, {args.threads} thread(s); share: "
            f"percent of the graph's kernel time. {summary}."
        ),
        "columns": [list(c) for c in cols],
        "rows": rows,
        "runs": runs,
    }
    out = atomic_write_json(args.out, results)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
