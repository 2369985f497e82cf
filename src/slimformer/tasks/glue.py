"""GLUE readers for the official ``glue_data`` layout, batch tokenization and the official metrics.

The layout is the one ``download_glue_data.py`` writes (Wang et al., 2019, https://arxiv.org/abs/1804.07461):
``<data>/glue_data/<Task>/{train,dev,test}.tsv`` (MNLI: ``dev_matched`` / ``dev_mismatched`` /
``test_matched`` / ``test_mismatched``). Files are tab-separated with no quoting (csv ``QUOTE_NONE``):
a line is split on ``\\t`` and nothing else, so quote characters are part of the text. Columns are
looked up by header name; CoLA train/dev have no header and four columns
(source, label, original label, sentence). A UTF-8 BOM (MRPC) is dropped; CRLF line ends are accepted.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from slimformer.errors import ConfigError, DataError
from slimformer.tasks.metrics import METRICS
from slimformer.tasks.registry import TaskSpec, get_task

__all__ = ["Example", "glue_file", "read_glue", "encode_glue", "compute_glue_metrics"]

logger = logging.getLogger(__name__)

_COLA_COLUMNS = ("source", "label", "original_label", "sentence")
_STSB_RANGE = (0.0, 5.0)


@dataclass(frozen=True)
class Example:
    """One GLUE example.

    Attributes:
        guid: ``"<split>-<id>"``; the id is the file's ``index``/``id`` column, else the 0-based row number.
        text_a: first sentence (or the only one).
        text_b: second sentence of a pair task, else ``None``.
        label: label string as in the file (classification), score (regression), ``None`` for test files.
    """

    guid: str
    text_a: str
    text_b: str | None
    label: str | float | None


def glue_file(task: TaskSpec | str, data_dir: str | os.PathLike[str], split: str) -> Path:
    """Locate the file of ``split`` for ``task``.

    Looks in ``data_dir/glue_data/<Task>/``, then ``data_dir/<Task>/``, then ``data_dir/`` itself, so
    ``data_dir`` may be the shared data root, the ``glue_data`` folder, or the task folder.

    Raises:
        ConfigError: ``task`` or ``split`` is unknown.
        DataError: the file is in none of those places.
    """
    spec = get_task(task)
    name = spec.split_file(split)
    root = Path(data_dir)
    candidates = [root / "glue_data" / spec.data_subdir / name, root / spec.data_subdir / name, root / name]
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(
        f"{spec.name} {split} file not found: looked for {candidates[1]} (also {candidates[0]} and "
        f"{candidates[2]}); set the data dir with --data or SLIMFORMER_DATA"
    )


def _decode(path: Path, lineno: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start} of the line)") from e


def _label(spec: TaskSpec, value: str, path: Path, lineno: int, column: str) -> str | float:
    if spec.kind == "regression":
        try:
            score = float(value)
        except ValueError:
            score = math.nan
        lo, hi = _STSB_RANGE
        if not lo <= score <= hi:
            raise DataError(f"{path}:{lineno}: {column!r} is {value!r}, expected a number in [{lo:g}, {hi:g}]")
        return score
    assert spec.labels is not None
    if value not in spec.labels:
        raise DataError(f"{path}:{lineno}: label {value!r} in column {column!r} is not one of {spec.labels}")
    return value


def read_glue(
    task: TaskSpec | str,
    data_dir: str | os.PathLike[str],
    split: str,
    *,
    skip_malformed: bool = False,
) -> list[Example]:
    """Read one split of a GLUE task, strictly checking the official layout.

    Args:
        task: a :class:`TaskSpec` or task name (``"sst2"``, ``"SST-2"``, ...).
        data_dir: data root (see :func:`glue_file`).
        split: ``"train"``, ``"dev"``, ``"test"`` (MNLI also ``"dev_mismatched"``, ``"test_mismatched"``).
            Test files have no label column; their examples have ``label=None``.
        skip_malformed: skip (and log the count of) lines whose column count differs from the header's,
            instead of raising. transformers' ``QqpProcessor`` skips such lines; the official QQP train
            file is the case that needs it. Default strict.

    Returns:
        The examples in file order.

    Raises:
        ConfigError: unknown task or split, or a QA task.
        DataError: (one line naming the file and line number) the file is missing, a line is not UTF-8,
            a line is empty, a header column is missing, a line has the wrong number of columns, a text
            field is empty, a label is outside the task's label set, or an STS-B score is not a number in
            [0, 5]; also when the file holds no examples.
    """
    spec = get_task(task)
    if spec.files is not None:  # a task described by the user's data: its own files and columns (data_dir unused)
        from slimformer.tasks.userdata import read_user_split  # local: cycle (userdata builds on this module's Example)

        return read_user_split(spec, split)
    if spec.kind == "qa":
        raise ConfigError(f"task {spec.name} is not a GLUE task; read it with read_squad")
    path = glue_file(spec, data_dir, split)
    labelled = not split.startswith("test")
    lines = path.read_bytes().removeprefix(b"\xef\xbb\xbf").split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the final newline
    if spec.name == "cola" and labelled:
        header, first = _COLA_COLUMNS, 0
    else:
        if not lines:
            raise DataError(f"{path}:1: empty file, expected a header line")
        header, first = tuple(_decode(path, 1, lines[0].removesuffix(b"\r")).split("\t")), 1
    needed = spec.text_fields + ((spec.label_field,) if labelled and spec.label_field else ())
    missing = [c for c in needed if c not in header]
    if missing:
        raise DataError(f"{path}:1: header lacks column(s) {missing}; expected {list(needed)}, found {list(header)}")
    text_idx = [header.index(c) for c in spec.text_fields]
    label_idx = header.index(spec.label_field) if labelled and spec.label_field else None
    id_idx = header.index(spec.id_field) if spec.id_field in header else None

    examples: list[Example] = []
    skipped: list[int] = []
    for i in range(first, len(lines)):
        lineno = i + 1
        line = _decode(path, lineno, lines[i].removesuffix(b"\r"))
        if not line.strip():
            raise DataError(f"{path}:{lineno}: empty line, expected {len(header)} tab-separated columns")
        cols = line.split("\t")
        if len(cols) != len(header):
            if skip_malformed:
                skipped.append(lineno)
                continue
            raise DataError(
                f"{path}:{lineno}: expected {len(header)} tab-separated columns ({', '.join(header)}), "
                f"found {len(cols)}"
            )
        texts = [cols[j] for j in text_idx]
        for name, text in zip(spec.text_fields, texts):
            if not text.strip():
                raise DataError(f"{path}:{lineno}: empty text in column {name!r}")
        label = None
        if label_idx is not None:
            label = _label(spec, cols[label_idx], path, lineno, header[label_idx])
        ident = cols[id_idx] if id_idx is not None else str(len(examples) + len(skipped))
        examples.append(Example(f"{split}-{ident}", texts[0], texts[1] if len(texts) > 1 else None, label))
    if skipped:
        logger.warning("%s: skipped %d malformed line(s) (first: line %d)", path, len(skipped), skipped[0])
    if not examples:
        raise DataError(f"{path}:{len(lines)}: no examples in the file")
    return examples


def encode_glue(
    examples: Sequence[Example],
    spec: TaskSpec | str,
    tokenizer: Any,
    max_seq_length: int | None = None,
) -> list[dict[str, Any]]:
    """Tokenize examples in one batched call (truncation, no padding; pad later with a data collator).

    Args:
        examples: from :func:`read_glue`.
        spec: the task (for the label list and the default length).
        tokenizer: a Hugging Face tokenizer (fast ones are fastest).
        max_seq_length: maximum length in tokens, special tokens included; default
            ``spec.max_seq_length`` (128). Pairs are truncated longest-first.

    Returns:
        One dict per example with ``input_ids``, ``attention_mask``, ``token_type_ids`` (when the tokenizer
        returns them; RoBERTa does not) as lists of ints of length ``<= max_seq_length``, and ``labels``:
        the label id (index in ``spec.labels``) for classification, a float for regression, absent when
        the example has no label.

    Raises:
        DataError: some examples have a second text and others do not, or a label is not in the label set.
    """
    spec = get_task(spec)
    if not examples:
        return []
    max_len = max_seq_length or spec.max_seq_length
    pair = [e.text_b is not None for e in examples]
    if any(pair) and not all(pair):
        raise DataError(f"{spec.name}: examples mix single sentences and sentence pairs")
    texts_b = [e.text_b for e in examples] if pair[0] else None
    enc = tokenizer([e.text_a for e in examples], texts_b, truncation=True, max_length=max_len)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    features = []
    for i, ex in enumerate(examples):
        feat: dict[str, Any] = {k: enc[k][i] for k in keys}
        if ex.label is not None:
            if spec.kind == "regression":
                feat["labels"] = float(ex.label)
            elif spec.labels is not None and ex.label in spec.labels:
                feat["labels"] = spec.labels.index(str(ex.label))
            else:
                raise DataError(f"{spec.name} {ex.guid}: label {ex.label!r} is not one of {spec.labels}")
        features.append(feat)
    return features


def compute_glue_metrics(spec: TaskSpec | str, predictions: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """All official metrics of a GLUE task.

    Args:
        spec: the task.
        predictions: classification: logits ``(n, num_labels)`` (arg-maxed here) or class ids ``(n,)``;
            regression: scores ``(n,)`` or ``(n, 1)``.
        labels: gold label ids ``(n,)`` (classification) or scores ``(n,)`` (regression).

    Returns:
        ``{metric name: value}`` for every name in ``spec.metrics`` (fractions, not percentages).

    Raises:
        ConfigError: ``spec`` is a QA task.
    """
    spec = get_task(spec)
    if spec.kind == "qa":
        raise ConfigError(f"task {spec.name} is scored with squad_evaluate, not compute_glue_metrics")
    preds = np.asarray(predictions)
    if spec.kind == "classification" and preds.ndim == 2:
        preds = preds.argmax(axis=-1)  # (n, num_labels) -> (n,)
    preds = preds.reshape(-1)
    return {name: METRICS[name](preds, labels) for name in spec.metrics}
