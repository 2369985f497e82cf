"""Regenerate the results tables of README.md and docs/results.md from ``benchmarks/results/*.json``.

    python benchmarks/update_readme.py            # rewrite the tables in place
    python benchmarks/update_readme.py --check    # exit 1 when a file would change (writes nothing)

Each results file ``<name>.json`` fills the block between ``<!-- results:<name> -->`` and
``<!-- /results:<name> -->`` with its table, the command that made it and the machine, in whichever of
:data:`DOCS` holds that block (every one that does). Text outside the blocks is left as it is.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/results.md")  # the files whose results blocks are filled, relative to ROOT


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


def _block(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- results:{re.escape(name)} -->\n).*?(<!-- /results:{re.escape(name)} -->)", re.S)


def fill(text: str, tables: dict[str, str]) -> str:
    """``text`` with the block of every name in ``tables`` that it holds replaced by that table."""
    for name, table in tables.items():
        text = _block(name).sub(lambda m, table=table: m.group(1) + table + "\n" + m.group(2), text)
    return text


def update(root: Path = ROOT, docs: tuple[str, ...] = DOCS, check: bool = False) -> list[str]:
    """Fill the results blocks of ``docs`` (paths relative to ``root``) from ``root/benchmarks/results/*.json``.

    Returns the docs whose text changed (with ``check``, would change; nothing is written then). A doc that
    does not exist is skipped; a results file that no doc has a block for is reported and skipped.
    """
    texts = {d: (root / d).read_text(encoding="utf-8") for d in docs if (root / d).exists()}
    tables = {}
    for path in sorted((root / "benchmarks" / "results").glob("*.json")):
        name = path.stem
        if not any(_block(name).search(text) for text in texts.values()):
            print(f"no block for {name} in {', '.join(texts)}; skipped")
            continue
        tables[name] = render(json.loads(path.read_text(encoding="utf-8")))
    changed = []
    for doc, text in texts.items():
        new = fill(text, tables)
        if new != text:
            changed.append(doc)
            if not check:
                (root / doc).write_text(new, encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a file would change; write nothing")
    args = parser.parse_args(argv)
    changed = update(check=args.check)
    if args.check:
        for doc in changed:
            print(f"{doc} is out of date: run python benchmarks/update_readme.py")
        return 1 if changed else 0
    print(f"tables refreshed; changed: {', '.join(changed) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
