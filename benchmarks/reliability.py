"""Reliability: the bad-input table run through the CLI; writes ``benchmarks/results/reliability.json``.

    python benchmarks/reliability.py

Runs every case of ``tests/bad_input_cases.py`` (hostile recipes, model folders, ONNX files, data, budgets, paths; the
table ``tests/test_bad_input.py`` asserts) in-process, each in a fresh temporary folder, and counts how the CLI
answered: ``clean`` (exit status 2, exactly one ``error:`` line naming what the case expects, no traceback, no file
that existed before changed, no temporary left), ``tracebacks``, ``wrong_exit`` (status other than 2),
``not_one_line``, ``files_lost`` (files that existed before the command and were changed or removed, all cases
together). Cases that rely on file permissions are skipped when run as root.

The ``bad_input`` key of the results file is replaced; other keys (other reliability figures) are kept.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every case's error line")
    args = parser.parse_args(argv)

    from slimformer.bench.machine import machine_info
    from slimformer.io import atomic_write_json

    bad_input = run_bad_input(args.verbose)
    results: dict[str, Any] = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
    results.update(
        {
            "benchmark": "reliability",
            "command": "python benchmarks/reliability.py",
            "machine": machine_info(),
            "task": "bad-input",  # not a model task: the CLI on hostile inputs
            "metric": "clean fraction",
            "bad_input": bad_input,
            "rows": [
                {"name": group, "metric_value": g["clean"] / g["cases"], "cases": g["cases"], "clean": g["clean"]}
                for group, g in bad_input["groups"].items()
            ],
        }
    )
    atomic_write_json(args.out, results)
    b = bad_input
    print(
        f"bad input: {b['clean']}/{b['cases']} clean, {b['tracebacks']} tracebacks, {b['wrong_exit']} wrong exit, "
        f"{b['files_lost']} files lost ({len(b['skipped'])} skipped, {b['seconds']} s) -> {args.out}"
    )
    return 0 if b["clean"] == b["cases"] else 1


if __name__ == "__main__":
    sys.exit(main())
