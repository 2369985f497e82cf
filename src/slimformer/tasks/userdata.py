"""Tasks described by the user's own data files: CSV, TSV, JSON, JSONL, Parquet, or a ``datasets`` folder.

A :class:`DataFiles` names the files (train, optional eval and test), the columns and the kind of task;
:func:`describe_task` reads the training labels and returns a :class:`~slimformer.tasks.registry.TaskSpec` that
carries the description, registered under its name so every stage refers to it as to a GLUE preset. Files are read
through Hugging Face ``datasets`` (local files only, nothing fetched).

When no eval file is given, the eval split (``dev``) is a seeded, stratified hold-out of the training file
(``holdout`` of each class, at least one example per class with two or more), and ``train`` is the rest; the split
is recorded in the description (``holdout``, ``holdout_seed``) so every stage and every later process draws the
same one. Extractive QA reads SQuAD JSON (``{"data": [...]}``) or the Hugging Face flat layout
(``id, question, context, answers{text, answer_start}``).
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from slimformer.errors import ConfigError, DataError
from slimformer.tasks.glue import Example
from slimformer.tasks.registry import TaskSpec, register_task
from slimformer.tasks.squad import QAExample, read_squad

__all__ = ["DataFiles", "describe_task", "read_user_split", "read_user_qa", "FORMATS", "user_metrics"]

#: File suffix -> ``datasets`` builder (and its options).
FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
}
_EVAL_SPLITS = ("validation", "eval", "dev", "valid")


@dataclass(frozen=True)
class DataFiles:
    """Where a user task's data is and how to read it.

    Attributes:
        train: training file (or a ``datasets`` folder saved with ``save_to_disk``: its ``train`` split).
        eval: eval file, or ``None`` (a ``datasets`` folder's ``validation``/``eval``/``dev`` split, else a hold-out).
        test: test file (labelled; reported on), or ``None`` (a ``datasets`` folder's ``test`` split if it has one).
        text_column: the text column (classification, regression); ``question_column`` for QA.
        text_pair_column: the second text of a pair task, or ``None``.
        label_column: the label column (class names or integers; a number for regression).
        kind: ``classification``, ``regression`` or ``qa``.
        holdout: fraction of the training file held out as the eval split when there is no eval file.
        holdout_seed: seed of that draw.
        context_column, answers_column: QA in the flat layout (``answers`` holds ``text`` and ``answer_start``).
    """

    train: str
    eval: str | None = None
    test: str | None = None
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    kind: Literal["classification", "regression", "qa"] = "classification"
    holdout: float = 0.1
    holdout_seed: int = 42
    context_column: str = "context"
    answers_column: str = "answers"

    def __post_init__(self) -> None:
        if not 0 < self.holdout < 1:
            raise ConfigError(f"holdout must be a fraction in (0, 1), got {self.holdout}")
        if self.kind not in ("classification", "regression", "qa"):
            raise ConfigError(f"kind must be classification, regression or qa, got {self.kind!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (recorded in recipes and in ``slimformer.json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "data") -> DataFiles:
        """Inverse of :meth:`to_dict`.

        Raises:
            ConfigError: not a mapping, an unknown key, or a bad value (names ``source`` and the key).
        """
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a mapping of data files and columns, got {type(d).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {unknown}; expected some of {sorted(known)}")
        if "train" not in d:
            raise ConfigError(f"{source}: missing key 'train' (the training file)")
        return cls(**d)

    def resolved(self, resolve: Any) -> DataFiles:
        """A copy with ``train`` / ``eval`` / ``test`` mapped through ``resolve`` (e.g. against the data root)."""
        return replace(
            self,
            train=resolve(self.train),
            eval=None if self.eval is None else resolve(self.eval),
            test=None if self.test is None else resolve(self.test),
        )

    @property
    def eval_name(self) -> str:
        """How the eval split was made, for the run's records."""
        if self.eval is not None:
            return f"file {self.eval}"
        return f"hold-out of {self.train} ({self.holdout:.0%} per class, seed {self.holdout_seed})"


def _is_dataset_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file())


def _load_rows(path_str: str, split: str | None = None) -> tuple[list[dict[str, Any]], list[str], str]:
    """Rows of a data file (or of one split of a ``datasets`` folder), its column names, and a name for errors.

    Raises:
        DataError: missing file, unknown format, unreadable or empty file.
    """
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    path = Path(path_str).expanduser()
    where = str(path) if split is None else f"{path} [{split}]"
    if _is_dataset_dir(path):
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as e:  # noqa: BLE001 - datasets raises many kinds; reported in one line
            raise DataError(f"{path}: not a readable datasets folder ({' '.join(str(e).split())[:200]})") from None
        if isinstance(loaded, datasets.DatasetDict):
            if split is None or split not in loaded:
                raise DataError(f"{path}: no split {split!r}; the folder has {sorted(loaded)}")
            ds = loaded[split]
        else:
            ds = loaded
    else:
        if not path.is_file():
            raise DataError(f"{path}: data file not found")
        fmt = FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise DataError(
                f"{path}: unknown data format {path.suffix!r}; expected one of {sorted(FORMATS)} or a datasets folder"
            )
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file")
        builder, options = fmt
        try:
            ds = datasets.load_dataset(builder, data_files=str(path), split="train", keep_in_memory=True, **options)
        except Exception as e:  # noqa: BLE001 - arrow / json / csv parse errors of many kinds
            raise DataError(f"{path}: cannot read as {path.suffix[1:]} ({' '.join(str(e).split())[:200]})") from None
    if len(ds) == 0:
        raise DataError(f"{where}: no rows")
    return ds.to_list(), list(ds.column_names), where


def _split_source(files: DataFiles, split: str) -> tuple[str, str | None] | None:
    """``(path, datasets split)`` holding ``split`` (``train`` / ``dev`` / ``test``), or None for a hold-out dev."""
    folder = _is_dataset_dir(Path(files.train).expanduser())
    if split == "train":
        return files.train, "train" if folder else None
    if split == "dev":
        if files.eval is not None:
            return files.eval, None
        if folder:
            import datasets

            names = set(datasets.load_from_disk(str(Path(files.train).expanduser())).keys())
            found = next((s for s in _EVAL_SPLITS if s in names), None)
            if found is not None:
                return files.train, found
        return None
    if split == "test":
        if files.test is not None:
            return files.test, None
        if folder:
            return files.train, "test"
        raise ConfigError("no test file was given (--test FILE); the task has splits train and dev")
    raise ConfigError(f"unknown split {split!r}; a user task has train, dev and test")


def _check_columns(where: str, columns: list[str], needed: list[str]) -> None:
    missing = [c for c in needed if c not in columns]
    if missing:
        raise DataError(f"{where}: no column(s) {missing}; the file has columns {columns}")


def _cell_label(value: Any, kind: str, where: str, row: int, column: str) -> str | float:
    if value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value):
        raise DataError(f"{where}: row {row + 1}: empty label in column {column!r}")
    if kind == "regression":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise DataError(f"{where}: row {row + 1}: {column!r} is {value!r}, expected a number (regression)")
        try:
            score = float(value)
        except ValueError:
            raise DataError(
                f"{where}: row {row + 1}: {column!r} is {value!r}, expected a number (regression)"
            ) from None
        if not math.isfinite(score):
            raise DataError(f"{where}: row {row + 1}: {column!r} is {value!r}, expected a finite number")
        return score
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DataError(f"{where}: row {row + 1}: label {value!r} in {column!r} is neither a class name nor an integer")
    return str(value)


def _rows_to_examples(files: DataFiles, rows: list[dict[str, Any]], columns: list[str], where: str, split: str):
    text_cols = [files.text_column] + ([files.text_pair_column] if files.text_pair_column else [])
    _check_columns(where, columns, text_cols + [files.label_column])
    kinds = {type(r[files.label_column]) for r in rows if r[files.label_column] is not None}
    if files.kind == "classification" and str in kinds and kinds & {int, float}:
        raise DataError(
            f"{where}: column {files.label_column!r} mixes class names and numbers ({sorted(map(str, kinds))})"
        )
    out = []
    for i, r in enumerate(rows):
        texts = []
        for c in text_cols:
            t = r[c]
            if not isinstance(t, str) or not t.strip():
                raise DataError(f"{where}: row {i + 1}: empty or non-text value in column {c!r}: {t!r}")
            texts.append(t)
        label = _cell_label(r[files.label_column], files.kind, where, i, files.label_column)
        out.append(Example(f"{split}-{i}", texts[0], texts[1] if len(texts) > 1 else None, label))
    return out


def _holdout(examples: list[Any], files: DataFiles, key: Any) -> tuple[list[int], list[int]]:
    """``(train indices, dev indices)``: a seeded hold-out of ``files.holdout`` of each class (stratified)."""
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        groups[key(ex)].append(i)
    rng = random.Random(files.holdout_seed)
    dev: list[int] = []
    for k in sorted(groups, key=str):
        idx = groups[k]
        if len(idx) < 2:
            continue  # a class seen once stays in train
        n = min(len(idx) - 1, max(1, int(files.holdout * len(idx) + 0.5)))  # rounded half up
        dev += rng.sample(idx, n)
    dev_set = set(dev)
    return [i for i in range(len(examples)) if i not in dev_set], sorted(dev)


def read_user_split(spec: TaskSpec, split: str) -> list[Example]:
    """The examples of ``split`` (``train``, ``dev``, ``test``) of a classification or regression user task.

    Raises:
        ConfigError: no test file, unknown split. DataError: missing file or column, empty / NaN label, a label
            not in the task's label set, mixed label types, a non-numeric regression target, an empty file.
    """
    files = _files(spec)
    held_out = _split_source(files, "dev") is None  # the eval split is a hold-out of the training file
    if split == "train" or (split == "dev" and held_out):
        rows, cols, where = _load_rows(*_split_source(files, "train"))  # type: ignore[misc]
        examples = _rows_to_examples(files, rows, cols, where, "train")
        if held_out:
            tr, dv = _holdout(examples, files, key=lambda e: e.label if spec.kind == "classification" else 0)
            examples = [examples[i] for i in (dv if split == "dev" else tr)]
    else:
        rows, cols, where = _load_rows(*_split_source(files, split))  # type: ignore[misc]
        examples = _rows_to_examples(files, rows, cols, where, split)
    if spec.labels is not None:
        for ex in examples:
            if ex.label not in spec.labels:
                raise DataError(
                    f"{_where(files, split)}: {ex.guid}: label {ex.label!r} never occurs in the training data "
                    f"(labels: {len(spec.labels)}, e.g. {list(spec.labels[:5])})"
                )
    return examples


def _where(files: DataFiles, split: str) -> str:
    return {"train": files.train, "dev": files.eval or files.train, "test": files.test or files.train}[split]


def _qa_rows(files: DataFiles, path: str, ds_split: str | None, split: str) -> list[QAExample]:
    p = Path(path).expanduser()
    if p.suffix.lower() == ".json" and p.is_file():
        try:
            head = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise DataError(f"{p}: not valid JSON ({e})") from None
        if isinstance(head, dict) and "data" in head:
            return read_squad(p)
    rows, cols, where = _load_rows(path, ds_split)
    _check_columns(where, cols, [files.text_column, files.context_column, files.answers_column])
    out = []
    for i, r in enumerate(rows):
        ctx, q, ans = r[files.context_column], r[files.text_column], r[files.answers_column]
        if not isinstance(ans, dict) or "text" not in ans or "answer_start" not in ans:
            raise DataError(f"{where}: row {i + 1}: {files.answers_column!r} must hold text and answer_start lists")
        pairs = []
        for text, start in zip(ans["text"], ans["answer_start"]):
            if not isinstance(start, int) or ctx[start : start + len(text)] != text:
                raise DataError(f"{where}: row {i + 1}: answer {text!r} is not at answer_start {start} of the context")
            pairs.append((text, start))
        out.append(QAExample(str(r.get("id", f"{split}-{i}")), str(r.get("title", "")), ctx, q, tuple(pairs)))
    return out


def read_user_qa(spec: TaskSpec, split: str) -> list[QAExample]:
    """The questions of ``split`` of an extractive-QA user task (SQuAD JSON or the flat HF layout).

    Raises:
        DataError: missing file or column, an answer whose text is not at its ``answer_start``.
    """
    files = _files(spec)
    held_out = _split_source(files, "dev") is None
    if split == "train" or (split == "dev" and held_out):
        examples = _qa_rows(files, *_split_source(files, "train"), "train")  # type: ignore[misc]
        if held_out:
            tr, dv = _holdout(examples, files, key=lambda e: 0)
            examples = [examples[i] for i in (dv if split == "dev" else tr)]
        return examples
    return _qa_rows(files, *_split_source(files, split), split)  # type: ignore[misc]


def _files(spec: TaskSpec) -> DataFiles:
    if spec.files is None:
        raise ConfigError(f"task {spec.name} is a preset, not a user task")
    return spec.files if isinstance(spec.files, DataFiles) else DataFiles.from_dict(dict(spec.files))


def user_metrics(kind: str, num_labels: int) -> tuple[tuple[str, ...], str]:
    """``(metrics, main metric)`` of a user task: accuracy and macro-F1 (MCC too for two classes) for
    classification, Pearson/Spearman for regression (main: Spearman, as STS-B), EM/F1 for QA (main: F1)."""
    if kind == "regression":
        return ("pearson", "spearman"), "spearman"
    if kind == "qa":
        return ("exact_match", "f1"), "f1"
    return (("accuracy", "macro_f1", "mcc") if num_labels == 2 else ("accuracy", "macro_f1")), "accuracy"


def describe_task(
    name: str,
    files: DataFiles,
    *,
    labels: list[str] | None = None,
    main_metric: str | None = None,
    max_seq_length: int = 128,
    register: bool = True,
) -> TaskSpec:
    """The :class:`TaskSpec` of a user task, registered under ``name`` (so stages find it by name).

    Args:
        name: the task's name (e.g. ``banking77``); must not be a preset's.
        files: where the data is and how to read it.
        labels: the label names in id order (from the teacher's ``id2label``); default: the training file's labels,
            sorted (integers numerically).
        main_metric: the metric used for selection and ``--max-loss`` (default: accuracy / Spearman / F1).
        max_seq_length: tokens per sequence (QA: 384 is usual).

    Raises:
        ConfigError: a preset's name, an unknown main metric, a teacher label set that misses a data label.
        DataError: as :func:`read_user_split`.
    """
    probe = TaskSpec(
        name=name,
        kind=files.kind,
        labels=None if files.kind != "classification" else ("?",),
        metrics=("accuracy",) if files.kind == "classification" else user_metrics(files.kind, 0)[0],
        main_metric="accuracy" if files.kind == "classification" else user_metrics(files.kind, 0)[1],
        max_seq_length=max_seq_length,
        text_fields=(files.text_column,) + ((files.text_pair_column,) if files.text_pair_column else ()),
        data_subdir="",
        label_field=files.label_column,
        files=files,
    )
    if files.kind == "classification":
        train = _train_labels(files)
        found = sorted(set(train), key=_label_order)
        if labels is not None:
            missing = [x for x in found if x not in labels]
            if missing:
                raise ConfigError(
                    f"the teacher's labels (id2label, {len(labels)} names) miss data label(s) {missing[:5]} of "
                    f"{files.train} column {files.label_column!r}"
                )
            found = list(labels)
        if len(found) < 2:
            raise DataError(f"{files.train}: column {files.label_column!r} holds {len(found)} class; need at least 2")
        metrics, main = user_metrics("classification", len(found))
        spec = replace(probe, labels=tuple(found), metrics=metrics, main_metric=main)
    else:
        metrics, main = user_metrics(files.kind, 0)
        spec = replace(probe, metrics=metrics, main_metric=main)
        # read the training file now: a bad column or a non-numeric target fails before any stage runs
        read_user_qa(spec, "train") if files.kind == "qa" else read_user_split(spec, "train")
    if main_metric is not None:
        if main_metric not in spec.metrics:
            raise ConfigError(f"main metric {main_metric!r} is not one of {list(spec.metrics)} for a {files.kind} task")
        spec = replace(spec, main_metric=main_metric)
    if register:
        register_task(spec)
    return spec


def _label_order(label: str) -> tuple[bool, int, str]:
    """Integers first, in numeric order, then names alphabetically."""
    numeric = label.lstrip("-").isdigit()
    return (not numeric, int(label) if numeric else 0, label)


def _train_labels(files: DataFiles) -> list[str]:
    """The label of every training row (validated as :func:`read_user_split` does)."""
    rows, cols, where = _load_rows(*(_split_source(files, "train") or (files.train, None)))
    return [str(e.label) for e in _rows_to_examples(files, rows, cols, where, "train")]
