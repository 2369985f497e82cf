"""Regenerate the results tables of README.md and docs/results.md from ``benchmarks/results/*.json``.

    python benchmarks/update_readme.py            # rewrite the tables in place
    python benchmarks/update_readme.py --check    # exit 1 when a file would change (writes nothing)

Each results file ``<name>.json`` fills the block between ``<!-- results:<name> -->`` and
``<!-- /results:<name> -->`` with its table, the command that made it and the machine, in whichever of
:data:`DOCS` holds that block (every one that does). Text outside the blocks is left as it is.

The block ``<!-- results:headline -->`` (README.md) gets :func:`render_headline`: a few rows picked from several
results files (:data:`HEADLINE`), each linked to the section of docs/results.md that holds its table.
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


def _machine(m: dict) -> str:
    return ", ".join(f"{k} {m[k]}" for k in ("cpu", "threads", "torch", "onnxruntime") if k in m)


def render(results: dict) -> str:
    from slimformer.bench.report import render_markdown_table

    machine = _machine(results["machine"])
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
    if results.get("trained_on"):
        lines.append(f"Trained on: {results['trained_on']}.  ")
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


# The README's headline rows: (results file, row, label). ``row`` is a row name; "pick" is the row with a
# ``length_config`` (the exported pick of a length search); "best:<task>" is the row name with the highest mean
# ``metric_value`` over seeds on <task>, teacher rows excepted. A row whose file, row or metric is missing is left out.
HEADLINE = (
    ("quickstart-sst2", "teacher fp32", "Quick start: fine-tuned MiniLM-L6, PyTorch fp32"),
    ("quickstart-sst2", "teacher int8 dynamic PTQ (ORT)", "Quick start: the same model, int8 ONNX Runtime"),
    ("quala-sst2-truncation-max-flops-9e8", "pick", "3-layer distilled student, length search, int8 (≤ 9e8 FLOPs)"),
    ("quala-squad-truncation", "pick", "3-layer distilled student, length search, int8"),
    ("ternary-kd", "best:sst2", "Ternary (W2A8) QAT with KD losses, best loss set"),
    ("embeddings", "ae-10x", "Token-embedding autoencoder, then fine-tuning"),
)
TASK_NAMES = {"sst2": "SST-2", "squad": "SQuAD v1.1", "mrpc": "MRPC", "cola": "CoLA"}


def github_anchor(heading: str, seen: dict[str, int] | None = None) -> str:
    """The fragment GitHub gives a markdown heading (lowercase, punctuation dropped, spaces to hyphens).

    ``seen`` counts the slugs met so far in one file: a repeated heading gets ``-1``, ``-2``, ...
    """
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link counts by its text
    slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
    if seen is None:
        return slug
    n = seen.get(slug, 0)
    seen[slug] = n + 1
    return slug if n == 0 else f"{slug}-{n}"


def section_anchors(text: str) -> dict[str, str]:
    """``{results name: anchor of the nearest heading above its block}`` for every results block of ``text``."""
    anchors: dict[str, str] = {}
    seen: dict[str, int] = {}
    current = ""
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (m := re.match(r"#{1,6} (.+)", line)):
            current = github_anchor(m.group(1), seen)
        elif m := re.match(r"<!-- results:(\S+) -->$", line.strip()):
            anchors.setdefault(m.group(1), current)
    return anchors


def _fmt_metric(v: float) -> str:
    return f"{v:.4f}" if abs(v) < 1.5 else f"{v:.2f}"  # fractions, or points (SQuAD F1), as in the tables


def _task(row: dict, results: dict) -> str | None:
    return row.get("task") or results.get("task")


def _pick_row(results: dict, row: str) -> tuple[dict, float, str] | None:
    """(the row, its metric value, a note) for a :data:`HEADLINE` row spec, or None when it is not there."""
    rows = [r for r in results["rows"] if r.get("metric_value") is not None]
    if row == "pick":
        found = [r for r in rows if r.get("length_config") is not None]
        return (found[-1], found[-1]["metric_value"], "") if found else None
    if row.startswith("best:"):
        task = row.split(":", 1)[1]
        by_name: dict[str, list[dict]] = {}
        for r in rows:
            if r.get("task") == task and not r["name"].startswith("teacher"):
                by_name.setdefault(r["name"], []).append(r)
        if not by_name:
            return None
        group = max(by_name.values(), key=lambda g: sum(r["metric_value"] for r in g) / len(g))
        mean = sum(r["metric_value"] for r in group) / len(group)
        return group[0], mean, f" (mean of {len(group)} seeds)" if len(group) > 1 else ""
    found = [r for r in rows if r["name"] == row]
    return (found[0], found[0]["metric_value"], "") if found else None


def render_headline(results: dict[str, dict], anchors: dict[str, str], link: str = "docs/results.md") -> str:
    """The README's short results table: the :data:`HEADLINE` rows found in ``results`` (``{name: results file}``).

    Each row: the row's metric, the fp32 reference of the same file and task (its first PyTorch fp32 row: the
    teacher, or the uncompressed model), the bs-32 throughput against that reference when both were timed, and
    the size (or the table compression ratio). ``anchors`` maps results names to the section of ``link`` that
    holds their table. The machine line names the machine(s) of the files used.
    """
    lines = [
        "| result | task | metric | fp32 reference | speed (bs 32) | size MB |",
        "|---|---|---|---|---|---|",
    ]
    machines: list[str] = []
    for name, row_spec, label in HEADLINE:
        res = results.get(name)
        picked = _pick_row(res, row_spec) if res else None
        if picked is None:
            why = f"no {row_spec!r} row with a metric in" if res else "no results file"
            print(f"headline: {why} {name}.json; row left out")
            continue
        row, value, note = picked
        task = _task(row, res)
        metric = row.get("metric") or res.get("metric")
        ref = next((r for r in res["rows"] if r.get("runtime") == "pytorch-fp32" and _task(r, res) == task), None)
        ref_value = _fmt_metric(ref["metric_value"]) if ref and ref.get("metric_value") is not None else "–"
        speed = "–"
        if ref and row.get("throughput_bs32") and ref.get("throughput_bs32"):
            speed = f"{row['throughput_bs32'] / ref['throughput_bs32']:.2f}x"
        if row.get("size_mb") is not None:
            size = _cell(row["size_mb"])
        elif row.get("compression_ratio") is not None:
            size = f"embedding table {row['compression_ratio']:.1f}x smaller"
        else:
            size = "–"
        anchor = anchors.get(name)
        target = f"{link}#{anchor}" if anchor else link
        lines.append(
            f"| [{label}]({target}) | {TASK_NAMES.get(task, task)} | {metric} {_fmt_metric(value)}{note} | "
            f"{ref_value} | {speed} | {size} |"
        )
        machine = _machine(res["machine"])
        if machine not in machines:
            machines.append(machine)
    lines += ["", f"Machine{'s' if len(machines) > 1 else ''}: {'; '.join(machines)}.  "]
    lines.append(f"Every table, the command that made it and what it shows: [{link}]({link}).")
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
    paths = sorted((root / "benchmarks" / "results").glob("*.json"))
    results = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in paths}
    tables = {}
    for name, res in results.items():
        if not any(_block(name).search(text) for text in texts.values()):
            print(f"no block for {name} in {', '.join(texts)}; skipped")
            continue
        tables[name] = render(res)
    hosts = [d for d, text in texts.items() if _block("headline").search(text)]
    if hosts:  # link each headline row to the first other doc holding its table
        anchors: dict[str, str] = {}
        link = {}
        for doc, text in texts.items():
            if doc not in hosts:
                for name, anchor in section_anchors(text).items():
                    if name not in anchors:
                        anchors[name], link[name] = anchor, doc
        target = next(iter(link.values()), "docs/results.md")
        tables["headline"] = render_headline(results, anchors, link=target)
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
    changed = update(ROOT, check=args.check)  # ROOT looked up now (tests point it elsewhere)
    if args.check:
        for doc in changed:
            print(f"{doc} is out of date: run python benchmarks/update_readme.py")
        return 1 if changed else 0
    print(f"tables refreshed; changed: {', '.join(changed) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
