"""Speed ratios of QuaLA picks with their spread: many interleaved rounds over the runs' own artefacts.

    python benchmarks/quala_timing.py                  # every run named in RUNS that exists
    python benchmarks/quala_timing.py --rounds 12 quala-sst2-truncation-max-flops-9e8

The ``length_benchmark`` stage times each runtime in 3 interleaved rounds and pools the samples; on this shared
2-core VM the int8 teacher's batch-32 throughput moved by up to 40% between such runs (151 to 212 seq/s on
SST-2), so a single ratio cannot say whether a 3x target is met. This script re-times, for each QuaLA results
file, the files its run folder holds (no retraining, no re-export, no accuracy): the fp32 teacher (PyTorch
eager), its int8 ONNX Runtime graph, and the exported pick with its length configuration fed, in ``--rounds``
rounds of :func:`~slimformer.bench.latency.compare_runtimes` (each round times every runtime once, in order).
A round's ratio compares runtimes timed seconds apart, so slow drifts of the machine cancel in it; the results
give the median, minimum and maximum of the per-round ratios, bs-32 throughput and bs-1 latency.

Writes ``benchmarks/results/quala-timing.json``. The run folders must hold what ``benchmarks/quala.py`` made
(the recipe command in each results file recreates them).

    python benchmarks/quala_timing.py --run runs/issue14/quala-sst2-l3b --out benchmarks/results/quala-targets.json

times run folders of any recipe that ends with ``export`` (int8) and ``length_benchmark`` instead: the pick and the
accuracies come from the run's own ``report.json``, the teacher is the distill stage's (else the run's fine-tuned
model). Each row then also states issue 14's speed targets (SST-2: >= 4.5x the int8 teacher's bs-32 throughput and
>= 14x its eager fp32 at <= 1.0 point loss; SQuAD: >= 1.5x and >= 8x at <= 1.0 F1) and whether the median meets them.

    python benchmarks/quala_timing.py --run runs/issue14-full/quala-squad-la-full --pick-graph --out ...

also exports the pick as the ``export`` stage does with ``length_graph: pick`` (selection ops only at the layers where
the pick drops tokens; into ``<run>/length_benchmark/pick-graph-onnx``) and times it in the same rounds as
``pick int8 (pick graph)``, with its own ratios, and the largest output difference between the two pick graphs on
the timing batch. Both pick graphs are also scored on the run's whole dev split (the report split, no cap), with a
paired test: int8 kernels fuse differently in the two graphs (the pick graph gets ``SkipLayerNormalization``), so
their dynamically quantized activations, hence outputs, differ slightly although the fp32 graphs agree exactly.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: results name -> run folder (relative to the repository) of the run that results file was measured on.
RUNS = {
    "quala-sst2": "runs/quala-sst2-long",
    "quala-sst2-truncation": "runs/quala-sst2-truncation",
    "quala-sst2-truncation-max-flops-9e8": "runs/quala-sst2-truncation",
    "quala-squad": "runs/quala-squad",
    "quala-squad-truncation": "runs/quala-squad-truncation",
}


def _artefacts(run: Path, results: dict) -> dict[str, object]:
    """The teacher folder, its int8 graph, the pick's int8 graph, the results file's pick, task and seq_len.

    The pick comes from the results file, not the run folder's last search (two budgets can share a run folder);
    the exported graph takes any configuration as an input.
    """
    from slimformer.checkpoint import load_model
    from slimformer.errors import ConfigError
    from slimformer.io import read_json
    from slimformer.length.config import LengthConfig

    state = {s["name"]: s["outputs"] for s in read_json(run / "state.json")["stages"]}
    if "length_benchmark" not in state:
        raise ConfigError(f"{run}: no finished length_benchmark stage; run benchmarks/quala.py for it first")
    front = read_json(state["search"]["front_json"])
    teacher = (load_model(front["searched_model"]).meta.stage("distill") or {}).get("teacher")
    teacher = teacher or state.get("finetune", {}).get("model_dir")  # no distillation: the fine-tuned model
    selected = results["selected"]
    return {
        "teacher": teacher,
        "teacher_int8": run / "length_benchmark" / "teacher-onnx" / "model.int8.onnx",
        "pick_int8": Path(state["export"]["onnx_int8"]),
        "gene": selected["length_config"],
        "config": LengthConfig.from_dict(selected["saved_config"], source=f"{results['benchmark']} selected"),
        "seq_len": front["seq_len"],
        "task": front["task"],
    }


def _rel(path: Path) -> str:
    p = path.resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(path)


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def _pick_graph(run: Path, a: dict[str, object]) -> Path:
    """The pick exported with ``length_graph: pick`` (the int8 mode of the run's own graph), reused when present."""
    from slimformer.errors import ConfigError
    from slimformer.io import read_json
    from slimformer.length.config import load_length_config
    from slimformer.stages._length_report import int8_mode
    from slimformer.stages.export import ExportConfig, export_model

    out = run / "length_benchmark" / "pick-graph-onnx"
    graph = out / "model.int8.onnx"
    model_dir = Path({s["name"]: s["outputs"] for s in read_json(run / "state.json")["stages"]}["search"]["model_dir"])
    if load_length_config(model_dir) != a["config"]:
        raise ConfigError(f"{model_dir}: its saved length configuration is not the results file's pick {a['gene']}")
    if not graph.is_file():
        export_model(model_dir, ExportConfig(int8=int8_mode(str(a["pick_int8"])), length_graph="pick"), out=out)
    return graph


def _dev_scores(run: Path, sessions: dict[str, object]) -> dict[str, object]:
    """Each session's main metric on the run's whole dev split (batch 32, length-sorted), and a paired test."""
    from slimformer.bench.stats import paired_test
    from slimformer.checkpoint import load_model
    from slimformer.config import resolve_data_path
    from slimformer.evaluate import evaluate_predictor_scores
    from slimformer.io import read_json
    from slimformer.tasks.data import load_eval_set
    from slimformer.yamlio import load_yaml_file

    state = {s["name"]: s["outputs"] for s in read_json(run / "state.json")["stages"]}
    front = read_json(state["search"]["front_json"])
    searched = load_model(front["searched_model"])
    ft = searched.meta.origin() or {}
    data = load_yaml_file(run / "recipe.resolved.yaml")["data"]
    eval_set = load_eval_set(
        front["task"],
        resolve_data_path(data),
        searched.tokenizer,
        max_seq_length=searched.meta.max_seq_length,
        squad_split=ft.get("squad_split", "dev-article-split"),
        doc_stride=ft.get("doc_stride", 128),
    )
    pad = searched.tokenizer.pad_token_id or 0
    scored = {
        k: evaluate_predictor_scores(m, eval_set, batch_size=32, pad_token_id=pad, progress=False)
        for k, m in sessions.items()
    }
    (ka, (ma, sa)), (kb, (mb, sb)) = scored.items()
    p_value, test = paired_test(sa, sb)
    return {
        "examples": sa.num_examples,
        "metric": {ka: ma["main"], kb: mb["main"]},
        "p_value": p_value,
        "test": test,
    }


def time_run(run: Path, results: dict, rounds: int, threads: int, pick_graph: bool = False) -> dict[str, object]:
    """Per-round timings of teacher fp32, teacher int8 and the pick; ratios per round with their spread."""
    import numpy as np
    import torch

    from slimformer.bench.latency import compare_runtimes
    from slimformer.checkpoint import load_model
    from slimformer.export.length_ort import LengthOrtModel, full_length_batch
    from slimformer.export.ort import OrtModel

    a = _artefacts(run, results)
    torch.set_num_threads(threads)
    teacher = load_model(a["teacher"]).model.eval()
    sessions = {
        "teacher fp32": teacher,
        "teacher int8": OrtModel(a["teacher_int8"], intra_op_num_threads=threads),
        "pick int8": LengthOrtModel(a["pick_int8"], a["config"], intra_op_num_threads=threads),
    }
    batch = full_length_batch(teacher.config.vocab_size, a["seq_len"], 32)
    extra: dict[str, object] = {}
    if pick_graph:
        graph = _pick_graph(run, a)
        fewer = LengthOrtModel(graph, a["config"], intra_op_num_threads=threads)
        sessions["pick int8 (pick graph)"] = fewer
        got, ref = fewer(batch), sessions["pick int8"](batch)
        extra["pick_graph"] = {
            "onnx_int8": _rel(graph),
            "select_layers": list(fewer.select_layers or []),
            "max_abs_diff_vs_any_graph": float(max(np.abs(got[k] - ref[k]).max() for k in ref)),
            "dev": _dev_scores(run, {"any graph": sessions["pick int8"], "pick graph": fewer}),
        }
    per_round = []
    for _ in range(rounds):
        t = compare_runtimes(
            sessions, batch, seq_len=a["seq_len"], threads=threads, rounds=1, iters_bs32=4, iters_bs1=20
        )
        per_round.append({k: (v.latency_ms_bs1, v.throughput_bs32) for k, v in t.items()})
    ratios = {
        "bs32 vs teacher int8": [r["pick int8"][1] / r["teacher int8"][1] for r in per_round],
        "bs32 vs teacher fp32": [r["pick int8"][1] / r["teacher fp32"][1] for r in per_round],
        "bs1 vs teacher int8": [r["teacher int8"][0] / r["pick int8"][0] for r in per_round],
        "bs1 vs teacher fp32": [r["teacher fp32"][0] / r["pick int8"][0] for r in per_round],
    }
    if pick_graph:
        p = "pick int8 (pick graph)"
        ratios.update(
            {
                "pick graph bs32 vs teacher int8": [r[p][1] / r["teacher int8"][1] for r in per_round],
                "pick graph bs32 vs teacher fp32": [r[p][1] / r["teacher fp32"][1] for r in per_round],
                "pick graph bs32 vs any graph": [r[p][1] / r["pick int8"][1] for r in per_round],
                "pick graph bs1 vs any graph": [r["pick int8"][0] / r[p][0] for r in per_round],
            }
        )
    return {
        "run_dir": str(run.relative_to(ROOT)) if run.is_relative_to(ROOT) else str(run),
        "task": a["task"],
        "seq_len": a["seq_len"],
        "length_config": list(a["gene"]),
        "rounds": rounds,
        "throughput_bs32": {k: _spread([r[k][1] for r in per_round]) for k in sessions},
        "latency_ms_bs1": {k: _spread([r[k][0] for r in per_round]) for k in sessions},
        "ratios": {k: _spread(v) for k, v in ratios.items()},
        **extra,
    }


#: Issue 14's speed targets per task: (bs-32 ratio over the int8 teacher, over the eager fp32 teacher, the most
#: metric points lost against the fp32 teacher).
TARGETS = {"sst2": (4.5, 14.0, 1.0), "squad": (1.5, 8.0, 1.0)}


def targets(row: dict, report: dict) -> dict[str, object]:
    """The pick's dev metric against the fp32 teacher's (points) and whether the median ratios meet the targets.

    With a timed pick graph (``row["pick_graph"]``, ``--pick-graph``), the same judgement for it too: its own dev
    metric (scored by :func:`_dev_scores`) and its ``pick graph bs32 vs ...`` ratios, under ``pick_graph_loss_points``
    and ``pick_graph_met``: the graph a user would deploy when it is the faster one.
    """
    by_name = {r["name"]: r for r in report["rows"]}
    teacher = by_name["teacher fp32"]["metric_value"]
    pick = next(r for r in report["rows"] if r["name"].startswith("QuaLA student"))["metric_value"]
    scale = 1.0 if report["task"] == "squad" else 100.0  # SQuAD F1 is in points, GLUE metrics are fractions
    loss = round((teacher - pick) * scale, 2)
    out: dict[str, object] = {"teacher_fp32_metric": teacher, "pick_int8_metric": pick, "loss_points": loss}
    if report["task"] in TARGETS:
        vs_int8, vs_fp32, max_loss = TARGETS[report["task"]]
        r = row["ratios"]

        def met(prefix: str, points: float) -> dict[str, bool]:
            return {
                "bs32_vs_teacher_int8": r[f"{prefix}bs32 vs teacher int8"]["median"] >= vs_int8,
                "bs32_vs_teacher_fp32": r[f"{prefix}bs32 vs teacher fp32"]["median"] >= vs_fp32,
                "loss": points <= max_loss,
            }

        out["targets"] = {"bs32_vs_teacher_int8": vs_int8, "bs32_vs_teacher_fp32": vs_fp32, "max_loss_points": max_loss}
        out["met"] = met("", loss)
        graph = row.get("pick_graph")
        if graph and "pick graph bs32 vs teacher int8" in r:
            out["pick_graph_loss_points"] = round((teacher - graph["dev"]["metric"]["pick graph"]) * scale, 2)
            out["pick_graph_met"] = met("pick graph ", out["pick_graph_loss_points"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"results names (default: {', '.join(RUNS)})")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="threads of every runtime (default: physical cores)")
    parser.add_argument(
        "--run",
        type=Path,
        action="append",
        default=[],
        help="a run folder with a finished length_benchmark stage, timed from its own report.json (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=None, help="results file (default: results/quala-timing.json)")
    parser.add_argument(
        "--pick-graph",
        action="store_true",
        help="also export and time each --run's pick with length_graph: pick (selection only where it drops tokens)",
    )
    args = parser.parse_args(argv)

    from slimformer.bench.machine import machine_info, physical_cores
    from slimformer.io import atomic_write_json, read_json

    unknown = [n for n in args.names if n not in RUNS]
    if unknown:
        parser.error(f"unknown results name(s) {unknown}; known: {list(RUNS)}")
    if args.run and args.names:
        parser.error("give results names or --run folders, not both")
    threads = args.threads or physical_cores()
    rows = []
    for run in args.run:
        run = run.resolve()
        state = {s["name"]: s["outputs"] for s in read_json(run / "state.json")["stages"]}
        if "length_benchmark" not in state:
            parser.error(f"{run}: no finished length_benchmark stage (run the recipe's export and length_benchmark)")
        report = read_json(state["length_benchmark"]["report_json"])
        row = {"results": run.name, **time_run(run, report, args.rounds, threads, args.pick_graph)}
        row.update(targets(row, report))
        keys = ("loss_points", "met", "pick_graph_loss_points", "pick_graph_met")
        print(run.name, row["ratios"], {k: row[k] for k in keys if k in row})
        rows.append(row)
    for name in [] if args.run else args.names or list(RUNS):
        run = ROOT / RUNS[name]
        if not (run / "state.json").is_file():
            print(f"{name}: {run} is missing; skipped (recreate it with the command in benchmarks/results/{name}.json)")
            continue
        results = read_json(ROOT / "benchmarks" / "results" / f"{name}.json")
        row = {"results": name, **time_run(run, results, args.rounds, threads)}
        print(name, row["ratios"])
        rows.append(row)
    flat = [
        {
            "results": r["results"],
            "task": r["task"],
            "length_config": str(tuple(r["length_config"])),
            **{k: f"{v['median']:.2f}x ({v['min']:.2f}-{v['max']:.2f})" for k, v in r["ratios"].items()},
            "teacher int8 seq/s": f"{r['throughput_bs32']['teacher int8']['median']:.0f} "
            f"({r['throughput_bs32']['teacher int8']['min']:.0f}-{r['throughput_bs32']['teacher int8']['max']:.0f})",
            **({"loss (points)": f"{r['loss_points']:.2f}"} if "loss_points" in r else {}),
            **({"targets met": ", ".join(k for k, v in r["met"].items() if v) or "none"} if "met" in r else {}),
            **(
                {"pick graph targets met": ", ".join(k for k, v in r["pick_graph_met"].items() if v) or "none"}
                if "pick_graph_met" in r
                else {}
            ),
        }
        for r in rows
    ]
    keys = list(flat[0]) if flat else []
    results = {
        "benchmark": "quala-timing",
        "command": "SLIMFORMER_DATA=../shared/data python benchmarks/quala_timing.py"
        + (f" --rounds {args.rounds}" if args.rounds != 10 else "")
        + (f" --threads {args.threads}" if args.threads else "")
        + "".join(f" --run {_rel(r)}" for r in args.run)
        + (" --pick-graph" if args.pick_graph else "")
        + (f" --out {_rel(args.out)}" if args.out else ""),
        "machine": machine_info(threads),
        "task": ", ".join(dict.fromkeys(r["task"] for r in rows)),  # per row in "task"
        "metric": "speed ratio",
        "notes": (
            f"Median (min-max) over {args.rounds} interleaved rounds of the pick's int8 ONNX Runtime speed over the "
            "teacher's: bs-32 throughput ratio and bs-1 latency ratio, on real-length inputs (no padding)."
        ),
        "columns": [[k, k] for k in keys],
        "rows": flat,
        "runs": rows,
    }
    out = atomic_write_json(args.out or ROOT / "benchmarks" / "results" / "quala-timing.json", results)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
