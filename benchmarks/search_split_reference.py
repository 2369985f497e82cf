"""A model's metric on the length search's split of given runs, drawn as their searches drew it (no run folder needed).

    SLIMFORMER_DATA=../shared/data python benchmarks/search_split_reference.py --model runs/sst2-int8/finetune \
        --task sst2 --data glue_data/SST-2 --seed 42 --seed 43 --seed 44 --distill-examples 32000 \
        --name search-split-teacher-sst2-issue-budget

Replays the records the search stage reads (:func:`slimformer.length.search_split.load_search_split`): a ``distill``
stage capped at ``--distill-examples`` with the run's seed, then a ``length`` stage on the whole file (the issue's
budget: no cap; a ``length`` stage with ``hold_out`` leaves the search the very same split, unseen). For each seed
it scores ``--model`` (PyTorch fp32) on that split (``--search-examples``, the task's default ``search_min_words``),
and states which training stages saw the split. Used to ask how far the search's reference is from the teacher there: a
search split that the student trained on (an uncapped ``length`` stage) is no held-out data for it.

Writes ``benchmarks/results/<name>.json``, rendered into docs/results.md by ``benchmarks/update_readme.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def records(seed: int, distill_examples: int | None) -> list[dict[str, Any]]:
    """The ``applied`` records the search of a run with ``seed`` reads: the teacher and length (uncapped), distill."""
    return [
        {"stage": "finetune", "seed": 42, "max_train_examples": None},
        {"stage": "distill", "seed": seed, "max_train_examples": distill_examples},
        {"stage": "length", "seed": seed, "max_train_examples": None},
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder scored on the splits (e.g. the teacher)")
    parser.add_argument("--task", required=True)
    parser.add_argument("--data", required=True, help="task data, relative to the data root")
    parser.add_argument("--data-root", default=None, help="default: $SLIMFORMER_DATA or ./data")
    parser.add_argument("--seed", type=int, action="append", required=True, help="a run's seed (repeatable)")
    parser.add_argument("--distill-examples", type=int, default=None, help="the distill stage's max_train_examples")
    parser.add_argument("--search-examples", type=int, default=2000)
    parser.add_argument("--name", required=True, help="results name: benchmarks/results/<name>.json")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from slimformer.bench.machine import machine_info
    from slimformer.checkpoint import load_model
    from slimformer.config import resolve_data_path
    from slimformer.evaluate import evaluate_predictor_scores, torch_predictor
    from slimformer.io import atomic_write_json
    from slimformer.length.search_split import DEFAULT_MIN_WORDS, load_search_split
    from slimformer.stages import training_stages
    from slimformer.tasks import get_task

    torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    model = loaded.model.eval()
    data = resolve_data_path(args.data, args.data_root)
    words = DEFAULT_MIN_WORDS.get(args.task)
    msl = loaded.meta.max_seq_length or get_task(args.task).max_seq_length
    rows = []
    for seed in args.seed:
        split = load_search_split(
            args.task,
            data,
            loaded.tokenizer,
            records=records(seed, args.distill_examples),
            training_stages=training_stages(),
            num_examples=args.search_examples,
            seed=seed,
            max_seq_length=msl,
            min_words=words,
        )
        metrics, _ = evaluate_predictor_scores(
            torch_predictor(model),
            split.data,
            batch_size=64,
            pad_token_id=loaded.tokenizer.pad_token_id or 0,
            progress=False,
        )
        rows.append(
            {
                "name": f"{Path(args.model).name} on the seed-{seed} search split",
                "runtime": "pytorch-fp32",
                "seed": seed,
                "examples": len(split.indices),
                "pool": split.pool,
                "seen_by": ", ".join(split.overlaps) or "none",
                "metric_value": metrics["main"],
            }
        )
        print(f"seed {seed}: {metrics['main']:.4f} on {len(split.indices)} examples (seen by {rows[-1]['seen_by']})")
    cmd = (
        f"SLIMFORMER_DATA=../shared/data python benchmarks/search_split_reference.py --model {args.model} "
        f"--task {args.task} --data {args.data} {' '.join(f'--seed {s}' for s in args.seed)}"
        + (f" --distill-examples {args.distill_examples}" if args.distill_examples else "")
        + (f" --search-examples {args.search_examples}" if args.search_examples != 2000 else "")
        + f" --name {args.name}"
    )
    results = {
        "benchmark": "search-split-reference",
        "command": cmd,
        "machine": machine_info(args.threads),
        "model": args.model,
        "task": args.task,
        "metric": get_task(args.task).main_metric,
        "min_words": words,
        "columns": [
            ["seed", "seed"],
            ["examples", "examples"],
            ["pool", "pool"],
            ["seen_by", "training stages that saw the split"],
            ["metric_value", f"{get_task(args.task).main_metric} (PyTorch fp32)"],
        ],
        "rows": rows,
        "notes": f"{args.model} scored on the search split each seed's run draws (search_split.py), "
        f"{args.search_examples} training examples of >= {words or 0} words outside the distill stage's sample.",
    }
    atomic_write_json(args.results_dir / f"{args.name}.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
