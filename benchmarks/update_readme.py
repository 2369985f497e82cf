"""Regenerate the README's results tables from ``benchmarks/results/*.json``.

    python benchmarks/update_readme.py

Each results file ``<name>.json`` fills the block between ``<!-- results:<name> -->`` and
``<!-- /results:<name> -->`` in README.md with its table, the command that made it and the machine.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cell(v: object) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def render_columns(results: dict) -> str:
    """A table of the ``columns`` a results file names (``[[key, header], ...]``), one line per row."""
    cols = results["columns"]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(k)) for k, _ in cols) + " |" for r in results["rows"]]
    extra = results.get("deployed")
    if extra:
        lines += ["", "Deployed files (whole model):", "", f"| row | runtime | {results['metric']} | size MB |"]
        lines += ["|---|---|---|---|"] + [
            f"| {d['name']} | {d['runtime']} | {_cell(d['metric_value'])} | {_cell(d['size_mb'])} |" for d in extra
        ]
    if results.get("notes"):
        lines += ["", results["notes"]]
    return "\n".join(lines)


def render_pivot(results: dict) -> str:
    """Rows x tasks: mean over seeds of each row's metric, the per-seed values after it.

    ``results["pivot"]``: ``{"columns": [task, ...], "headers": {task: header}, "size": bool}``; rows are grouped by
    ``name`` (teacher rows first, then in order of first appearance) and by ``task``. A second table lists
    the rows with timings (``latency_ms_bs1``), when there are any.
    """
    spec = results["pivot"]
    tasks = spec["columns"]
    groups: dict[str, dict[str, list[tuple[object, float]]]] = {}
    sizes: dict[str, set[float]] = {}
    for r in results["rows"]:
        if r.get("metric_value") is not None:
            groups.setdefault(r["name"], {}).setdefault(r["task"], []).append((r.get("seed"), r["metric_value"]))
            sizes.setdefault(r["name"], set()).add(r.get("size_mb"))
    groups = dict(sorted(groups.items(), key=lambda kv: not kv[0].startswith("teacher")))  # teacher rows on top
    heads = [spec.get("headers", {}).get(t, t) for t in tasks]
    with_size = bool(spec.get("size"))
    heads += ["size MB"] if with_size else []
    lines = ["| row | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for name, by_task in groups.items():
        cells = []
        for t in tasks:
            vals = [v for _, v in sorted(by_task.get(t, []), key=lambda sv: str(sv[0]))]
            if not vals:
                cells.append("–")
            elif len(vals) == 1:
                cells.append(f"{vals[0]:.4f}")
            else:
                cells.append(f"**{sum(vals) / len(vals):.4f}** ({', '.join(f'{v:.4f}' for v in vals)})")
        if with_size:  # one size per row name (e.g. the same packed layout on every task), else a range
            vals = sorted(v for v in sizes[name] if v is not None)
            cells.append("–" if not vals else _cell(vals[0]) if len(vals) == 1 else f"{vals[0]}-{vals[-1]}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    timed = [r for r in results["rows"] if r.get("latency_ms_bs1") is not None]
    if timed:
        lines += [
            "",
            "| task | row | runtime | metric | bs-1 ms | bs-32 seq/s | size MB |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['task']} | {r['name']} | {r['runtime']} | {_cell(r.get('metric_value'))} | "
            f"{_cell(r['latency_ms_bs1'])} | {_cell(r.get('throughput_bs32'))} | {_cell(r.get('size_mb'))} |"
            for r in timed
        ]
    if results.get("notes"):
        lines += ["", results["notes"]]
    return "\n".join(lines)


def render(results: dict) -> str:
    from slimformer.bench.report import render_markdown_table

    m = results["machine"]
    machine = ", ".join(f"{k} {m[k]}" for k in ("cpu", "threads", "torch", "onnxruntime") if k in m)
    train = results.get("training") or results.get("budget") or {}
    budget = ", ".join(f"{k} {v}" for k, v in train.items() if v is not None)
    if "pivot" in results:
        table = render_pivot(results)
    elif "columns" in results:
        table = render_columns(results)
    else:
        table = render_markdown_table(results["rows"], results["metric"])
    lines = [
        table.rstrip(),
        "",
        f"Command: `{results['command']}`  ",
        f"Machine: {machine}.  ",
    ]
    if results.get("deploy_commands"):
        lines.insert(-1, f"ONNX Runtime rows: `{' && '.join(results['deploy_commands'].values())}`  ")
    if budget:
        lines.append(f"Training budget: {budget}.  ")
    if results.get("stage_metrics"):
        stages = "; ".join(
            f"{stage} " + ", ".join(f"{k} {v:.4g}" for k, v in m.items() if k != "main")
            for stage, m in results["stage_metrics"].items()
        )
        lines.append(f"Dev metrics after each training stage (PyTorch fp32, full length): {stages}.  ")
    seq = results.get("max_seq_length")
    if isinstance(seq, dict):
        lines.append("Sequence length per task: " + ", ".join(f"{k} {v}" for k, v in seq.items()) + ".  ")
    per_row = [r for r in results["rows"] if len(r.get("metrics") or {}) > 2]  # more than the main metric
    if "pivot" in results:
        per_row = []  # every metric of every row is in the results file
    if per_row:
        lines.append(
            "All metrics: "
            + "; ".join(
                f"{r['name']}: " + ", ".join(f"{k} {v:.4g}" for k, v in r["metrics"].items() if k != "main")
                for r in per_row
            )
            + "."
        )
    return "\n".join(lines)


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        name = path.stem
        block = re.compile(rf"(<!-- results:{re.escape(name)} -->\n).*?(<!-- /results:{re.escape(name)} -->)", re.S)
        if not block.search(text):
            print(f"README.md has no block for {name}; skipped")
            continue
        table = render(json.loads(path.read_text(encoding="utf-8")))
        text = block.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text)
    readme.write_text(text, encoding="utf-8")
    print("README.md tables refreshed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
