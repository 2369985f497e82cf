"""The recipe of ``slimformer compress --model DIR --train FILE ...``: the user's model and data, one command.

:func:`new_recipe` writes the stages a user would otherwise write by hand, sized from the data:

1. ``teacher`` (the user's fine-tuned folder) or ``finetune`` (a base encoder such as ``minilm-l6``);
2. ``distill`` into a student of half the teacher's depth that keeps the bottom and top layers (``[0, 2, 5]`` of
   6), on the training examples the search split does not need;
3. ``search``: the evolutionary length search on that student (per-row ratios), cost = FLOPs at the task's
   sequence length, ``--max-loss`` measured against the **teacher** on held-out training data (``loss_reference:
   teacher``), int8 latency measured for every front point;
4. ``export`` (fp32 + int8 ONNX Runtime graph of the pick, parity-checked) and ``length_benchmark`` (the report:
   teacher fp32, teacher int8, the front, the pick; eval split, real lengths).

The recipe is plain YAML the user can read, edit and rerun (``slimformer compress run/recipe.yaml``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from slimformer.errors import ConfigError
from slimformer.models import resolve_model_path
from slimformer.stages.teacher import check_teacher_fits, task_head
from slimformer.tasks.userdata import DataFiles, describe_task, read_user_qa, read_user_split

__all__ = ["new_recipe", "student_layers", "sequence_length", "VARIANTS", "variant_layers"]


def student_layers(depth: int) -> list[int]:
    """Layers a half-depth student keeps: the bottom and the top one, the rest evenly spaced (0-based).

    ``6 -> [0, 2, 5]``, ``12 -> [0, 2, 4, 7, 9, 11]``; depths of 2 or less are kept whole.
    """
    if depth <= 2:
        return list(range(depth))
    k = max(2, depth // 2)
    return sorted({round(i * (depth - 1) / (k - 1)) for i in range(k)})


#: What the one command tries, in order, until a pick is within ``--max-loss`` of the teacher: a student of half the
#: teacher's depth, one of two thirds, then the teacher's own depth (no distillation: the length search and int8 on
#: the teacher itself; its full-length configuration is the teacher, so the loss can always be met).
VARIANTS = ("half-depth", "two-thirds-depth", "teacher-depth")


def variant_layers(variant: str, depth: int) -> list[int] | None:
    """The student layers of a :data:`VARIANTS` entry (None: no distillation, the teacher itself).

    Raises:
        ConfigError: an unknown variant.
    """
    if variant == "half-depth":
        return student_layers(depth)
    if variant == "two-thirds-depth":
        k = max(1, round(2 * depth / 3))
        return sorted({round(i * (depth - 1) / (k - 1)) for i in range(k)}) if k > 1 else [depth - 1]
    if variant == "teacher-depth":
        return None
    raise ConfigError(f"unknown variant {variant!r}; expected one of {list(VARIANTS)}")


def sequence_length(token_counts: list[int], *, cap: int = 512) -> int:
    """The task's sequence length: the 99th percentile of the training examples' token counts, rounded up to a
    multiple of 8 (at least 16, at most ``cap``). Longer inputs are truncated."""
    if not token_counts:
        return 128
    counts = sorted(token_counts)
    p99 = counts[min(len(counts) - 1, math.ceil(0.99 * len(counts)) - 1)]
    return int(min(cap, max(16, 8 * math.ceil(p99 / 8))))


def _model_depth(model: str) -> int:
    import json

    path = Path(resolve_model_path(model))
    config = json.loads((path / "config.json").read_text(encoding="utf-8")) if path.is_dir() else {}
    return int(config.get("num_hidden_layers", 6))


def new_recipe(
    *,
    model: str,
    files: DataFiles,
    name: str | None = None,
    main_metric: str | None = None,
    max_loss: float = 1.0,
    seed: int = 42,
    search_examples: int = 1000,
    variant: str = "half-depth",
) -> dict[str, Any]:
    """The raw recipe (YAML-ready) compressing ``model`` on the data ``files`` describes.

    Args:
        model: the user's fine-tuned Hugging Face folder (task head) or a base encoder (alias or folder).
        files: the data (train, optional eval / test, columns, kind).
        name: the task's and recipe's name (default: the training file's folder name).
        main_metric: the metric ``--max-loss`` is measured in (default: accuracy / Spearman / F1).
        max_loss: the largest loss against the teacher on held-out training data, in metric points.
        search_examples: training examples held out for the search (the distillation uses the rest).
        variant: which student (:data:`VARIANTS`); ``teacher-depth`` searches the teacher itself.

    Raises:
        ConfigError: too few training examples for a search split; a bad column or file (DataError).
    """
    from transformers import AutoTokenizer

    task_name = name or Path(files.train).expanduser().resolve().parent.name.replace(" ", "-") or "user-task"
    head = task_head(model)
    labels = None
    if head is not None:
        names = [head[1][i] for i in sorted(head[1])]
        if names and not all(n == f"LABEL_{i}" for i, n in enumerate(names)):
            labels = names
    spec = describe_task(task_name, files, labels=labels, main_metric=main_metric, register=False)
    if head is not None:
        check_teacher_fits(model, spec)  # head kind, label count and names: refused before anything is written
    tok = AutoTokenizer.from_pretrained(resolve_model_path(model), local_files_only=True, trust_remote_code=False)
    if spec.kind == "qa":
        train = read_user_qa(spec, "train")
        counts = [len(tok(e.question, e.context)["input_ids"]) for e in train[:2000]]
        msl = min(384, sequence_length(counts, cap=384))
    else:
        train = read_user_split(spec, "train")
        sample = train[:5000]
        enc = tok([e.text_a for e in sample], [e.text_b for e in sample] if sample and sample[0].text_b else None)
        msl = sequence_length([len(ids) for ids in enc["input_ids"]], cap=512)
    n_train = len(train)
    n_search = min(search_examples, n_train // 5)
    if n_search < 200:
        raise ConfigError(
            f"{files.train}: {n_train} training examples leave {n_search} for the length search; at least 1,000 "
            "training examples are needed (or compress with a recipe of your own: int8 alone)"
        )
    depth = _model_depth(model)
    distill_examples = n_train - n_search
    steps_per_epoch = max(1, distill_examples // 32)
    task: dict[str, Any] = {"name": task_name, "files": files.to_dict(), "max_seq_length": msl}
    if main_metric:
        task["main_metric"] = main_metric
    first = {"teacher": {}} if head is not None else {"finetune": {"epochs": 3, "max_seq_length": msl}}
    layers = variant_layers(variant, depth)
    distill = {
        "distill": {
            "student_layers": layers,
            "epochs": 3,
            "max_train_examples": distill_examples,
            "learning_rate": 1e-4,
            "batch_size": 32,
            "warmup_ratio": 0.06,
            "max_seq_length": msl,
            "save_steps": max(50, steps_per_epoch),
        }
    }
    student = f"{len(layers)}-layer distilled student" if layers else "the teacher itself"
    return {
        "name": f"{task_name}-{variant}",
        "description": f"{model} -> {student} -> length search "
        f"(within {max_loss} {spec.main_metric} points of the teacher on held-out training data) -> int8 ONNX Runtime",
        "task": task,
        "model": str(model),
        "seed": seed,
        "stages": [
            first,
            *([distill] if layers else []),
            {
                "search": {
                    "cost": "flops",
                    "seq_len": msl,
                    "gene_form": "ratios",
                    "search_examples": n_search,
                    # with a test file to report on, pick on the eval split: the teacher may have trained on every
                    # training example, so its accuracy on held-out *training* data is no reference for --max-loss
                    **({"search_split": "eval"} if files.test is not None else {}),
                    "loss_reference": "teacher" if layers else "full",  # teacher-depth: the full model is the teacher
                    "max_loss": max_loss,
                    "int8": "dynamic",
                    "population": 10,  # ~130 configurations (recipes/quala-sst2-truncation.yaml's budget)
                    "mutation_size": 10,
                    "crossover_size": 10,
                    "iterations": 6,
                }
            },
            {"export": {"int8": "dynamic"}},
            {"length_benchmark": {"iters": 20, "iters_bs32": 4}},
        ],
    }
