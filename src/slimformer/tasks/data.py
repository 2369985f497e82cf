"""From a task name and a data path to model-ready features (train) and evaluation sets, for every task.

GLUE: ``data`` is the task folder in the glue_data layout (``train.tsv``, ``dev.tsv`` ...).
SQuAD: ``data`` is a SQuAD v1.1 json file or a folder holding it. With the named split
``dev-article-split`` (default; SQuAD train is not available offline) the train and eval parts are the two
article-disjoint parts of ``dev-v1.1.json``; with ``official`` they are ``train-v1.1.json`` and
``dev-v1.1.json`` of the folder.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import slimformer.tasks as tasks
from slimformer.errors import ConfigError, DataError
from slimformer.tasks.userdata import read_user_qa

__all__ = [
    "TaskData",
    "load_train_features",
    "load_eval_set",
    "compute_task_metrics",
    "check_task_data",
    "MODEL_INPUTS",
]

#: Keys of a feature dict that are model inputs (everything else is bookkeeping).
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class TaskData:
    """Features of one split, plus what evaluation needs to score them.

    Attributes:
        spec: the task.
        features: one dict per model input sequence (``input_ids``, ``attention_mask`` [, ``token_type_ids``],
            and ``labels`` or ``start_positions``/``end_positions`` for training).
        examples: the raw examples (SQuAD post-processing maps features back to them).
        split: the split name.
    """

    spec: Any
    features: list[dict[str, Any]]
    examples: list[Any] = field(default_factory=list)
    split: str = ""


def _squad_file(data: Path, name: str) -> Path:
    if data.is_file():
        return data
    candidate = data / name
    if not candidate.is_file():
        raise DataError(f"{candidate}: SQuAD file not found (set the data root with --data-root or $SLIMFORMER_DATA)")
    return candidate


def _squad_examples(data: Path, split: str, squad_split: str) -> list[Any]:
    if squad_split == "official":
        name = "train-v1.1.json" if split == "train" else "dev-v1.1.json"
        return tasks.read_squad(_squad_file(data, name))
    if squad_split not in tasks.SQUAD_SPLITS:
        raise ConfigError(
            f"squad_split {squad_split!r} is unknown; expected 'official' or one of {sorted(tasks.SQUAD_SPLITS)}"
        )
    train, held_out = tasks.SQUAD_SPLITS[squad_split](tasks.read_squad(_squad_file(data, "dev-v1.1.json")))
    if split == "train":
        return train
    if split in ("dev", "eval", "validation"):
        return held_out
    raise ConfigError(f"split {split!r} is unknown for SQuAD; expected train or dev")


def _qa_examples(spec: Any, data: Path, split: str, squad_split: str) -> list[Any]:
    """The questions of ``split``: a user QA task's own files, else SQuAD's layout."""
    if spec.files is not None:
        return read_user_qa(spec, split)
    return _squad_examples(data, split, squad_split)


def _cap(items: list[Any], n: int | None, seed: int) -> list[Any]:
    if n is None or n >= len(items):
        return items
    rng = random.Random(seed)
    idx = sorted(rng.sample(range(len(items)), n))
    return [items[i] for i in idx]


def load_train_features(
    task: str,
    data: Path,
    tokenizer: Any,
    *,
    max_seq_length: int | None = None,
    max_examples: int | None = None,
    seed: int = 42,
    squad_split: str = "dev-article-split",
    doc_stride: int = 128,
    exclude: Collection[int] | None = None,
) -> TaskData:
    """Training features of ``task``: tokenized, truncated to ``max_seq_length``, not padded.

    ``max_examples`` keeps a seeded random subset of the training examples (before tokenization). ``exclude``:
    indices into the training file's example list (SQuAD: its questions) left out, e.g. a held-out split; the cap
    is not combined with it (``max_examples`` must then be ``None``).

    Raises:
        ConfigError: unknown task or split; ``exclude`` with ``max_examples``. DataError: missing or malformed data
            files.
    """
    spec = tasks.get_task(task)
    msl = max_seq_length or spec.max_seq_length
    if exclude is not None and max_examples is not None:
        raise ConfigError("training data: give max_examples or exclude, not both")

    def select(items: list[Any]) -> list[Any]:
        if exclude is None:
            return _cap(items, max_examples, seed)
        left_out = set(exclude)
        return [e for i, e in enumerate(items) if i not in left_out]

    if spec.kind == "qa":
        examples = select(_qa_examples(spec, data, "train", squad_split))
        feats = tasks.prepare_train_features(examples, tokenizer, max_seq_length=msl, doc_stride=doc_stride)
        return TaskData(spec, feats, examples, "train")
    examples = select(tasks.read_glue(spec, data, "train"))
    return TaskData(spec, tasks.encode_glue(examples, spec, tokenizer, msl), examples, "train")


def load_eval_set(
    task: str,
    data: Path,
    tokenizer: Any,
    *,
    split: str = "dev",
    max_seq_length: int | None = None,
    max_examples: int | None = None,
    squad_split: str = "dev-article-split",
    doc_stride: int = 128,
) -> TaskData:
    """Evaluation features of ``task`` (the first ``max_examples`` examples of the split when capped)."""
    spec = tasks.get_task(task)
    msl = max_seq_length or spec.max_seq_length
    if spec.kind == "qa":
        examples = _qa_examples(spec, data, split, squad_split)[: max_examples or None]
        feats = tasks.prepare_eval_features(examples, tokenizer, max_seq_length=msl, doc_stride=doc_stride)
        return TaskData(spec, feats, examples, split)
    examples = tasks.read_glue(spec, data, split)[: max_examples or None]
    return TaskData(spec, tasks.encode_glue(examples, spec, tokenizer, msl), examples, split)


def compute_task_metrics(data: TaskData, outputs: dict[str, np.ndarray]) -> dict[str, float]:
    """Official metrics of ``data``'s task from model outputs.

    Args:
        outputs: ``logits`` ``(n_features, num_labels)`` for GLUE, or ``start_logits``/``end_logits``
            ``(n_features, N)`` (padded with ``-inf``-like values past each feature's length) for SQuAD.

    Returns:
        ``{metric name: value}`` plus ``"main"`` (the task's headline metric). GLUE metrics are fractions;
        SQuAD ``exact_match``/``f1`` are points (0-100).
    """
    spec = data.spec
    if spec.kind == "qa":
        preds = tasks.postprocess_qa_predictions(
            data.examples, data.features, outputs["start_logits"], outputs["end_logits"]
        )
        result = dict(tasks.squad_evaluate(data.examples, preds))
    else:
        labels = np.array([f["labels"] for f in data.features])
        logits = outputs["logits"]
        preds = logits[:, 0] if spec.kind == "regression" else logits.argmax(-1)
        result = {name: float(tasks.METRICS[name](preds, labels)) for name in spec.metrics}
    result["main"] = float(result[spec.main_metric])
    return result


def check_task_data(spec: Any, data: str | Path, splits: tuple[str, ...]) -> None:
    """Cheap check, before anything runs, that the files of ``splits`` exist and have the columns the task reads.

    GLUE layouts: the split's file is found (:func:`slimformer.tasks.glue_file`) and its header names the text
    columns (and the label column, for a labelled split). SQuAD layout: the JSON file the split reads exists. A task
    described by the user's files was read when the recipe was parsed (:func:`slimformer.tasks.userdata.describe_task`).

    Raises:
        DataError: a missing file, or a header without a column the task needs (names the file and the column).
        ConfigError: a split the task does not have.
    """
    if spec.files is not None:
        return
    root = Path(data)
    if spec.kind == "qa":
        if not root.exists():
            raise DataError(
                f"{root}: SQuAD data folder not found (set the data root with --data-root or $SLIMFORMER_DATA)"
            )
        return
    for split in splits:
        path = tasks.glue_file(spec, root, split)
        with open(path, "rb") as f:
            first = f.readline(1 << 16).decode("utf-8", errors="replace").rstrip("\r\n")
        header = first.split("\t")
        needed = list(spec.text_fields)
        if split == "train" and spec.label_field:
            needed.append(spec.label_field)
        missing = [c for c in needed if c not in header]
        if missing and spec.name not in ("cola",):  # CoLA's files have no header row
            raise DataError(
                f"{path}: header has no column {missing[0]!r} (found {header[:6]}); task {spec.name} reads {needed}"
            )
