"""Reliability: the bad-input table run through the CLI, and kill -9 at points of a run then the same command; writes
``benchmarks/results/reliability.json``.

    python benchmarks/reliability.py                      # both parts
    python benchmarks/reliability.py --part kill_resume   # one part; the other's key is kept from the file

``bad_input``: runs every case of ``tests/bad_input_cases.py`` (hostile recipes, model folders, ONNX files, data,
budgets, paths; the table ``tests/test_bad_input.py`` asserts) in-process, each in a fresh temporary folder, and counts
how the CLI answered: ``clean`` (exit status 2, exactly one ``error:`` line naming what the case expects, no traceback,
no file that existed before changed, no temporary left), ``tracebacks``, ``wrong_exit`` (status other than 2),
``not_one_line``, ``files_lost`` (files that existed before the command and were changed or removed, all cases
together). Cases that rely on file permissions are skipped when run as root.

``kill_resume``: the tiny recipe of ``tests/kill_resume_helpers.py`` (finetune, distill, length, search, export +
int8, length_benchmark report) run once uninterrupted, then, for every point of ``KILL_POINTS`` in a fresh run folder,
``slimformer compress`` in a subprocess that SIGKILLs itself at that point (``SLIMFORMER_KILL_AT``,
``slimformer._faults``) and the same command again: ``killed`` (exit -9), ``resumed`` (the rerun exits 0, state.json
records every stage done, no temporary or partial folder left), ``metrics_equal`` (every stage's metrics, the search
front and pick, the report's accuracies (int8 included) and the sha256 of every trained model's weights equal the
uninterrupted run's; timings excluded). ``tests/test_kill_resume.py`` asserts the same.

Each part's key of the results file is replaced; other keys are kept.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "reliability.json"


def run_bad_input(verbose: bool = False) -> dict[str, Any]:
    """Run the table; the ``bad_input`` figures (counts, failing case ids, per-group counts, seconds)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from bad_input_cases import CASES, build_assets, run_case, runnable

    start = time.perf_counter()
    counts = {"cases": 0, "clean": 0, "tracebacks": 0, "wrong_exit": 0, "not_one_line": 0, "files_lost": 0}
    skipped, failed, groups = [], [], {}
    with tempfile.TemporaryDirectory(prefix="slimformer-reliability-") as tmp:
        assets = build_assets(Path(tmp) / "assets")
        for i, case in enumerate(CASES):
            if not runnable(case):
                skipped.append(case.id)
                continue
            root = Path(tmp) / f"case-{i:03d}"
            root.mkdir()
            out = run_case(case, root, assets)
            clean = out.clean and out.names(case)
            counts["cases"] += 1
            counts["clean"] += clean
            counts["tracebacks"] += out.traceback
            counts["wrong_exit"] += out.code != 2
            counts["not_one_line"] += not out.one_line
            counts["files_lost"] += len(out.changed)
            g = groups.setdefault(case.group, {"cases": 0, "clean": 0})
            g["cases"] += 1
            g["clean"] += clean
            if not clean:
                failed.append(case.id)
            if verbose or not clean:
                print(f"{'ok  ' if clean else 'FAIL'} {case.id}: {out.code} {out.stderr.strip()[:300]}")
    return {
        **counts,
        "skipped": skipped,
        "failed": failed,
        "groups": groups,
        "seconds": round(time.perf_counter() - start, 1),
        "checks": "exit status 2; exactly one line on stderr, starting with 'error:' and naming the file, "
        "field or value (stdout/stderr at Python, logging and file-descriptor level); no traceback; every file "
        "that existed before unchanged; no temporary left",
    }


def run_kill_resume(verbose: bool = False) -> tuple[list[dict[str, Any]], float]:
    """Kill at every point of ``KILL_POINTS`` (a fresh run folder each), rerun; the rows and the seconds taken."""
    sys.path.insert(0, str(ROOT / "tests"))
    from kill_resume_helpers import KILL_POINTS, KILLED, build_recipe, leftovers, metrics_of, run_compress, stages_done

    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="slimformer-kill-") as tmp:
        recipe = build_recipe(Path(tmp) / "assets")
        base = Path(tmp) / "uninterrupted"
        if run_compress(recipe, base) != 0:
            raise RuntimeError(f"the uninterrupted run failed; see {base}.log")
        expected = metrics_of(base)
        for i, (point, what) in enumerate(KILL_POINTS):
            run = Path(tmp) / f"kill-{i}"
            killed = run_compress(recipe, run, kill_at=point) == KILLED
            code = run_compress(recipe, run)
            left = leftovers(run) if run.is_dir() else []
            resumed = code == 0 and stages_done(run) and not left
            equal = resumed and metrics_of(run) == expected
            rows.append(
                {"point": point, "interrupts": what, "killed": killed, "resumed": resumed, "metrics_equal": equal}
            )
            if verbose or not (killed and resumed and equal):
                print(
                    f"{'ok  ' if killed and resumed and equal else 'FAIL'} {point}: killed={killed} "
                    f"rerun exit {code}, leftovers {left}, metrics_equal={equal}"
                )
    return rows, round(time.perf_counter() - start, 1)


def run_multiprocess(verbose: bool = False, quickstart: Path | None = None) -> dict[str, Any]:
    """The tiny recipe of ``tests/multiprocess_helpers.py`` on 1 and on 2 processes (the README's ``accelerate
    launch`` command), and, when ``quickstart`` holds the two SST-2 quickstart run folders, their metrics."""
    sys.path.insert(0, str(ROOT / "tests"))
    from multiprocess_helpers import (
        STAGES,
        TRAINED,
        build_recipe,
        max_weight_difference,
        metrics,
        run_compress,
        stage_records,
    )

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="slimformer-mp-") as tmp:
        recipe = build_recipe(Path(tmp) / "assets")
        runs = {}
        for processes in (1, 2):
            run = Path(tmp) / f"run-{processes}"
            proc = run_compress(recipe, run, processes)
            if proc.returncode != 0:
                raise RuntimeError(f"{processes} process(es): exit {proc.returncode}: {proc.stderr[-2000:]}")
            runs[processes] = (run, proc)
        one, two = metrics(runs[1][0]), metrics(runs[2][0])
        trained = {s["name"]: s["outputs"].get("processes") for s in stage_records(runs[2][0]) if s["name"] in TRAINED}
        logs = {n: runs[2][1].stdout.count(f"{n}: running") for n in (next(iter(e)) for e in STAGES)}
        tiny = {
            "recipe": "tests/multiprocess_helpers.py (finetune, distill, length, evaluate, export, quantize, qat)",
            "processes_per_training_stage": trained,
            "stage_runs_logged": logs,
            "metric_single": one["evaluate"]["accuracy"],
            "metric_multi": two["evaluate"]["accuracy"],
            "metrics_single": one,
            "metrics_multi": two,
            "max_weight_difference": {
                n: max_weight_difference(runs[1][0] / n, runs[2][0] / n) for n in ("finetune", "distill", "length")
            },
        }
    out: dict[str, Any] = {
        "processes": 2,
        "command": "accelerate launch --multi_gpu --num_processes 2 -m slimformer.cli compress RECIPE",
        "tiny": tiny,
        "seconds": round(time.perf_counter() - start, 1),
    }
    if quickstart is not None:
        out["sst2_quickstart"] = _quickstart(quickstart)
    src = out.get("sst2_quickstart") or tiny
    out["metric_single"], out["metric_multi"] = src["metric_single"], src["metric_multi"]
    out["metric_from"] = "sst2_quickstart" if "sst2_quickstart" in out else "tiny"
    if verbose:
        print(json.dumps(out, indent=2))
    return out


def _quickstart(folder: Path) -> dict[str, Any]:
    """Dev accuracy (PyTorch fp32 and ONNX Runtime int8) of ``folder/quickstart-1proc`` and ``-2proc``."""
    from slimformer.io import read_json

    rec: dict[str, Any] = {
        "recipe": "recipes/quickstart-sst2.yaml",
        "commands": [
            "OMP_NUM_THREADS=1 slimformer compress recipes/quickstart-sst2.yaml --run-dir runs/mp-compare/"
            "quickstart-1proc",
            "OMP_NUM_THREADS=1 accelerate launch --multi_gpu --num_processes 2 -m slimformer.cli compress "
            "recipes/quickstart-sst2.yaml --run-dir runs/mp-compare/quickstart-2proc",
        ],
    }
    rec["paired"] = _quickstart_paired(folder)
    for tag, n in (("single", 1), ("multi", 2)):
        stages = {s["name"]: s["outputs"] for s in read_json(folder / f"quickstart-{n}proc" / "state.json")["stages"]}
        rows = read_json(stages["benchmark"]["report_json"])["rows"] if "benchmark" in stages else []
        int8 = next((r.get("metric_value") for r in rows if r.get("runtime") == "onnxruntime-int8"), None)
        rec[f"metric_{tag}"] = stages["evaluate"]["metrics"]["accuracy"]
        rec[f"int8_{tag}"] = int8
        rec[f"train_processes_{tag}"] = stages["finetune"].get("processes", 1)
    return rec


def _quickstart_paired(folder: Path) -> dict[str, Any]:
    """McNemar on the SST-2 dev predictions of the fine-tuned models: 2 processes vs 1 (seed 42), and, as the
    yardstick of what data-parallel training changes (other dropout draws), 1 process seed 42 vs seed 43."""
    import os

    import slimformer.stages  # noqa: F401
    from slimformer.bench.stats import mcnemar
    from slimformer.checkpoint import load_model
    from slimformer.evaluate import evaluate_predictor_scores, torch_predictor
    from slimformer.tasks.data import load_eval_set

    data_root = Path(os.environ.get("SLIMFORMER_DATA", ROOT.parent / "shared" / "data"))
    correct: dict[str, Any] = {}
    for tag in ("1proc", "2proc", "1proc-seed43"):
        run = folder / f"quickstart-{tag}" / "finetune"
        if not run.is_dir():
            continue
        loaded = load_model(run)
        dev = load_eval_set("sst2", data_root / "glue_data" / "SST-2", loaded.tokenizer, max_seq_length=128)
        correct[tag] = evaluate_predictor_scores(torch_predictor(loaded.model), dev, progress=False)[1].scores
    out: dict[str, Any] = {"dev_accuracy": {k: float(v.mean()) for k, v in correct.items()}}
    for a, b in (("2proc", "1proc"), ("1proc-seed43", "1proc")):
        if a in correct and b in correct:
            out[f"{a}_vs_{b}"] = {
                "difference": float(correct[a].mean() - correct[b].mean()),
                "mcnemar_p": mcnemar(correct[a], correct[b]),
            }
    return out


def run_plan_failure() -> list[dict[str, Any]]:
    """Seconds until ``compress`` refuses a recipe whose third stage cannot work (real data, real MiniLM), and
    whether anything ran or was written before: the plan check (``slimformer.recipe.validate_plan``)."""
    import os
    import subprocess

    data_root = Path(os.environ.get("SLIMFORMER_DATA", ROOT.parent / "shared" / "data")).resolve()
    sst2 = data_root / "glue_data" / "SST-2"
    cases = []
    with tempfile.TemporaryDirectory(prefix="slimformer-plan-") as tmp:
        # a regression task over the user's own file (scores made from SST-2 labels: the layout, not the task)
        rows = sst2.joinpath("train.tsv").read_text(encoding="utf-8").splitlines()[1:2001]
        csv = Path(tmp) / "scores.csv"
        csv.write_text("text,score\n" + "".join(f'"{r.split(chr(9))[0]}",{float(r.split(chr(9))[1])}\n' for r in rows))
        recipes = {
            "regression KD with a softmax loss (stage 3: distill kd_losses.logits_kd)": {
                "name": "plan-regression",
                "task": {"name": "scores", "files": {"train": str(csv), "label_column": "score", "kind": "regression"}},
                "model": "minilm-l6",
                "stages": [
                    {"finetune": {"epochs": 3}},
                    {"evaluate": {}},
                    {"distill": {"student_layers": [0, 2, 5], "kd_losses": {"logits_kd": 1.0}}},
                ],
            },
            "GLUE's unlabelled test split (stage 3: evaluate split: test)": {
                "name": "plan-sst2",
                "task": "sst2",
                "model": "minilm-l6",
                "data": str(sst2),
                "stages": [{"finetune": {"epochs": 1}}, {"export": {}}, {"evaluate": {"split": "test"}}],
            },
        }
        for what, raw in recipes.items():
            path = Path(tmp) / f"{raw['name']}.yaml"
            path.write_text(json.dumps(raw), encoding="utf-8")
            run = Path(tmp) / raw["name"]
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "slimformer.cli", "compress", str(path), "--run-dir", str(run)],
                capture_output=True,
                text=True,
                env={**os.environ, "SLIMFORMER_DATA": str(data_root)},
                timeout=600,
            )
            seconds = time.perf_counter() - start
            err = [line for line in proc.stderr.splitlines() if line.strip()]
            written = sorted(str(p.relative_to(run)) for p in run.rglob("*")) if run.exists() else []
            cases.append(
                {
                    "case": what,
                    "seconds": round(seconds, 2),
                    "exit": proc.returncode,
                    "error": err[-1] if err else "",
                    "one_line": len(err) == 1,
                    "names_stage_and_key": "stages[2]." in (err[-1] if err else ""),
                    "files_written": written,
                }
            )
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file (default: %(default)s)")
    parser.add_argument(
        "--part",
        choices=["all", "bad_input", "kill_resume", "multiprocess", "plan"],
        default="all",
        help="what to run (default: all)",
    )
    parser.add_argument(
        "--quickstart-runs",
        type=Path,
        help="folder with the SST-2 quickstart run folders quickstart-1proc and quickstart-2proc (multiprocess part)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print every case's error line")
    args = parser.parse_args(argv)

    from slimformer.bench.machine import machine_info
    from slimformer.io import atomic_write_json

    results: dict[str, Any] = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
    ok = True
    if args.part in ("all", "bad_input"):
        b = results["bad_input"] = run_bad_input(args.verbose)
        ok &= b["clean"] == b["cases"]
        print(
            f"bad input: {b['clean']}/{b['cases']} clean, {b['tracebacks']} tracebacks, {b['wrong_exit']} wrong exit, "
            f"{b['files_lost']} files lost ({len(b['skipped'])} skipped, {b['seconds']} s)"
        )
    if args.part in ("all", "kill_resume"):
        kills, seconds = run_kill_resume(args.verbose)
        results["kill_resume"] = kills
        results["kill_resume_seconds"] = seconds
        good = sum(k["killed"] and k["resumed"] and k["metrics_equal"] for k in kills)
        ok &= good == len(kills)
        print(f"kill -9 then rerun: {good}/{len(kills)} points resumed with equal metrics ({seconds} s)")
    if args.part in ("all", "multiprocess"):
        m = results["multiprocess"] = run_multiprocess(args.verbose, args.quickstart_runs)
        print(f"2 processes: metric {m['metric_multi']} vs 1 process {m['metric_single']} ({m['metric_from']})")
    if args.part in ("all", "plan"):
        p = results["plan_failure"] = run_plan_failure()
        ok &= all(c["exit"] == 2 and c["names_stage_and_key"] and not c["files_written"] for c in p)
        for c in p:
            print(f"plan check: {c['case']}: exit {c['exit']} after {c['seconds']} s: {c['error']}")
    rows = [
        {"name": group, "metric_value": g["clean"] / g["cases"], "cases": g["cases"], "clean": g["clean"]}
        for group, g in results.get("bad_input", {}).get("groups", {}).items()
    ]
    if results.get("kill_resume"):
        kills = results["kill_resume"]
        good = sum(k["killed"] and k["resumed"] and k["metrics_equal"] for k in kills)
        rows.append(
            {"name": "kill -9 then rerun", "metric_value": good / len(kills), "cases": len(kills), "clean": good}
        )
    for g in rows:
        g["detail"] = "exit 2, one error: line, no traceback, no file changed"
    if results.get("kill_resume"):
        rows[-1]["detail"] = "SIGKILL at the point, same command again: exit 0, metrics and weights equal"
    if results.get("plan_failure"):
        p = results["plan_failure"]
        good = sum(c["exit"] == 2 and c["names_stage_and_key"] and not c["files_written"] for c in p)
        rows.append(
            {
                "name": "stage 3 cannot work: refused before stage 1",
                "metric_value": good / len(p),
                "cases": len(p),
                "clean": good,
                "detail": "; ".join(f"{c['case']}: {c['seconds']} s" for c in p),
            }
        )
    if results.get("multiprocess"):
        m = results["multiprocess"]
        qs = m.get("sst2_quickstart")
        worst = max(m["tiny"]["max_weight_difference"].values())
        detail = (
            f"tiny recipe (no dropout): dev accuracy {m['tiny']['metric_multi']:.4f} (2) vs "
            f"{m['tiny']['metric_single']:.4f} (1), weights within {worst:.1e}"
        )
        if qs:
            detail += (
                f"; SST-2 quickstart: fp32 {qs['metric_multi']:.4f} (2) vs {qs['metric_single']:.4f} (1), "
                f"int8 {qs['int8_multi']:.4f} vs {qs['int8_single']:.4f}"
            )
            pair = qs.get("paired", {})
            if "2proc_vs_1proc" in pair:
                detail += f", McNemar p {pair['2proc_vs_1proc']['mcnemar_p']:.3f}"
            if "1proc-seed43_vs_1proc" in pair:
                y = pair["1proc-seed43_vs_1proc"]
                detail += (
                    f"; yardstick, 1 process seed 43 vs 42: {y['difference'] * 100:+.2f} points "
                    f"(p {y['mcnemar_p']:.3f})"
                )
        rows.append({"name": "2 processes (accelerate launch)", "metric_value": None, "detail": detail})
    results.update(
        {
            "columns": [
                ["name", "check"],
                ["cases", "cases"],
                ["clean", "clean"],
                ["metric_value", "fraction clean"],
                ["detail", "what is checked / measured"],
            ],
            "benchmark": "reliability",
            "command": "python benchmarks/reliability.py",
            "machine": machine_info(),
            "task": "bad-input and kill -9",  # not a model task: the CLI on hostile inputs and interruptions
            "metric": "clean fraction (kill -9: killed, resumed, metrics equal)",
            "rows": rows,
        }
    )
    atomic_write_json(args.out, results)
    print(f"-> {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
