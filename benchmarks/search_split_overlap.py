"""How much of a length search's split the student has read inside longer training examples (SST-2 phrases).

    SLIMFORMER_DATA=../shared/data python benchmarks/search_split_overlap.py \
        --run runs/issue14-full/quala-sst2-l3b-train05-ho --name search-split-overlap-sst2-l3b-train05-ho

SST-2's training file holds the parse-tree phrases of its review sentences: a phrase drawn for the search split
(``length: {hold_out: N}`` keeps it out of training) still has its parent sentence and sibling phrases, labelled,
among the examples the student trained on. This replays the run's split (``split_indices`` of
``lengthdrop_vs_truncation.py``) and the examples its training stages saw (:func:`student_seen`: a stage's
``hold_out_context`` examples are not seen), and sorts the split into examples that occur, word for word, *inside* a
seen training example (a contiguous run of its words, or the same text) and the rest. The run's searched model is
scored (PyTorch fp32) at full length and at the search's pick on each part and on dev: the loss of the pick (points,
full length minus pick) on each part says which part, if any, judges a configuration as dev does. The 95% intervals
are percentile bootstraps of the paired loss (:func:`slimformer.bench.stats.paired_bootstrap_ci`).

Writes ``benchmarks/results/<name>.json`` (rows: the parts and dev), rendered by ``benchmarks/update_readme.py``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lengthdrop_vs_truncation import SearchedRun, split_indices  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def word_spans(texts: Iterable[str], min_words: int) -> set[str]:
    """Every contiguous run of at least ``min_words`` words of each text (the text itself included), space-joined.

    Memory grows with the sum over texts of ``(n - min_words + 1)(n - min_words + 2) / 2`` for ``n`` words.
    """
    spans: set[str] = set()
    for text in texts:
        w = text.split()
        for i in range(len(w) - min_words + 1):
            for j in range(i + min_words, len(w) + 1):
                spans.add(" ".join(w[i:j]))
    return spans


def inside_seen(split_texts: Sequence[str], seen_texts: Iterable[str]) -> np.ndarray:
    """``(n,)`` bool: split text ``k`` occurs word for word inside a seen text (or equals one).

    Whitespace-split words, compared as they are (SST-2's training file is already lower-cased and tokenized).
    """
    shortest = min((len(t.split()) for t in split_texts), default=1)
    spans = word_spans(seen_texts, max(1, shortest))
    return np.array([" ".join(t.split()) in spans for t in split_texts], dtype=bool)


def student_seen(records: Sequence[dict], num_examples: int, task: str, data: Path) -> set[int]:
    """Training-file indices the model's capped or holding-out stages trained on (uncapped stages, such as the
    teacher's fine-tuning, are left out: the question is what the *student* read).

    A stage with ``held_out_context`` (``hold_out_context``) did not train on those examples either: they are
    replayed (:func:`slimformer.length.search_split.context_indices`) and taken out of that stage's examples.
    """
    from slimformer.length.search_split import context_indices, seen_by_training
    from slimformer.stages import training_stages

    seen: set[int] = set()
    for rec in records:
        stage, _ = seen_by_training(num_examples, [rec], training_stages=training_stages())
        if rec.get("held_out_context") and rec.get("held_out"):
            stage -= set(context_indices(task, data, rec["held_out"]))
        seen |= stage
    return seen


def main(argv: list[str] | None = None) -> int:
    """Sort the split, score the parts, write the results file; returns the exit status (0).

    Raises:
        ConfigError: ``--run`` has no finished search, or searched a non-GLUE task or the eval split.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="a run folder with a finished search stage (a GLUE task)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-root", default=None, help="default: $SLIMFORMER_DATA")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--name", required=True, help="results file name (without .json)")
    p.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)

    import torch

    from slimformer import tasks
    from slimformer.bench.machine import machine_info
    from slimformer.bench.stats import paired_bootstrap_ci
    from slimformer.checkpoint import load_model
    from slimformer.config import resolve_data_path
    from slimformer.errors import ConfigError
    from slimformer.io import atomic_write_json
    from slimformer.length.evaluate import evaluate_config_scores
    from slimformer.length.search_split import example_text
    from slimformer.length.selection import gene_config
    from slimformer.tasks.data import TaskData, load_eval_set

    torch.set_num_threads(args.threads)
    run = SearchedRun.load(args.run)
    spec = tasks.get_task(run.front["task"])
    if spec.kind == "qa":
        raise ConfigError(f"{args.run}: search_split_overlap.py compares sentences of a GLUE task, not {spec.name!r}")
    data = resolve_data_path(run.data, args.data_root)
    train = tasks.read_glue(spec, data, "train")
    idx = split_indices(run, args.data_root)
    loaded = load_model(run.model_dir)
    model, tok, meta = loaded.model.eval(), loaded.tokenizer, loaded.meta
    seen = student_seen(meta.applied, len(train), spec.name, data) - set(idx)  # only *other* examples contain it

    chosen = [train[i] for i in idx]
    inside = inside_seen([example_text(e) for e in chosen], (example_text(train[i]) for i in sorted(seen)))
    msl = meta.max_seq_length or spec.max_seq_length
    feats = tasks.encode_glue(chosen, spec, tok, msl)
    split_data = TaskData(spec, feats, chosen, "search")
    dev = load_eval_set(spec.name, data, tok, max_seq_length=msl)
    n, form = run.front["seq_len"], run.front["gene_form"]
    pick = tuple(run.front["selected"]["length_config"])
    pad = tok.pad_token_id or 0

    def scored(d: TaskData) -> tuple[np.ndarray, np.ndarray]:
        full = evaluate_config_scores(model, d, None, pad_token_id=pad)[1]
        cut = evaluate_config_scores(model, d, gene_config(pick, form, n), pad_token_id=pad)[1]
        if full.scores is None or cut.scores is None:
            raise ConfigError(f"{spec.name}: its metric {full.metric!r} is not a mean of per-example scores")
        return full.scores, cut.scores

    sf, sc = scored(split_data)
    df, dc = scored(dev)
    parts = [
        ("search split: inside a seen training example", sf[inside], sc[inside]),
        ("search split: the rest", sf[~inside], sc[~inside]),
        ("search split: all", sf, sc),
        ("dev", df, dc),
    ]
    rows = []
    for name, full, cut in parts:
        if len(full) == 0:
            continue
        _, lo, hi = paired_bootstrap_ci(full, cut, n_boot=args.n_boot, seed=0)
        loss = 100 * float(full.mean() - cut.mean())
        rows.append(
            {
                "name": name,
                "runtime": "pytorch-fp32",
                "examples": int(len(full)),
                "full_metric": round(float(full.mean()), 4),
                "metric_value": round(float(cut.mean()), 4),
                "loss_points": round(loss, 2),
                "loss_ci": f"{100 * lo:.2f} to {100 * hi:.2f}",
            }
        )
        print(f"{name}: {len(full)} examples, full {full.mean():.4f}, pick {cut.mean():.4f}, loss {loss:.2f}")
    results = {
        "benchmark": "search-split-overlap",
        "command": f"SLIMFORMER_DATA=../shared/data python benchmarks/search_split_overlap.py --run {args.run} "
        f"--name {args.name}",
        "machine": machine_info(args.threads),
        "run": str(args.run),
        "task": spec.name,
        "metric": spec.main_metric,
        "pick": list(pick),
        "inside_fraction": round(float(inside.mean()), 4),
        "columns": [
            ["name", "examples scored"],
            ["examples", "examples"],
            ["full_metric", f"{spec.main_metric}, full length"],
            ["metric_value", f"{spec.main_metric}, pick {pick}"],
            ["loss_points", "loss (points)"],
            ["loss_ci", "95% interval of the loss"],
        ],
        "rows": rows,
        "notes": f"{args.run}: its searched model (PyTorch fp32) at full length and at the search's pick {pick}. "
        f"{int(inside.sum())} of the {len(idx)} search-split examples ({100 * inside.mean():.0f}%) occur word for "
        f"word inside one of the {len(seen)} other training examples its stages trained on.",
    }
    atomic_write_json(args.results_dir / f"{args.name}.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
