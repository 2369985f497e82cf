"""Task registry: one frozen :class:`TaskSpec` per supported task (the nine GLUE tasks and SQuAD v1.1).

Main-metric convention (the single number used for model selection and reported first) follows BERT
(Devlin et al., 2019, https://arxiv.org/abs/1810.04805, Table 1 caption): "F1 scores are reported for QQP
and MRPC, Spearman correlations are reported for STS-B, and accuracy scores are reported for the other
tasks", with Matthews correlation for CoLA (GLUE, Wang et al., 2019, Table 1) and F1 for SQuAD. All
official metrics of a task are still computed (MRPC/QQP: F1 and accuracy; STS-B: Pearson and Spearman).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from slimformer.errors import ConfigError

__all__ = ["TaskKind", "TaskSpec", "TASKS", "get_task", "register_task", "task_to_dict", "task_from_dict"]

TaskKind = Literal["classification", "regression", "qa"]


@dataclass(frozen=True)
class TaskSpec:
    """What a task is: its kind, label set, metrics, sequence length and file layout.

    Attributes:
        name: registry key (``"sst2"``, ``"squad"``, ...).
        kind: ``"classification"``, ``"regression"`` or ``"qa"`` (extractive span).
        labels: the label strings exactly as they appear in the data files, in label-id order;
            ``None`` for regression and QA.
        metrics: names of the official metrics (keys of :data:`slimformer.tasks.metrics.METRICS`,
            or ``"exact_match"`` / ``"f1"`` for SQuAD).
        main_metric: the one metric used for model selection (see the module docstring).
        max_seq_length: default maximum input length in tokens (GLUE 128, SQuAD 384).
        text_fields: header names of the text columns (one or two); for SQuAD ``("question", "context")``.
        data_subdir: folder of the task inside the data root (``glue_data/<subdir>`` for GLUE).
        split_files: ``(split, file name)`` pairs; GLUE MNLI ``"dev"`` is ``dev_matched.tsv`` and
            ``"dev_mismatched"`` is a split of its own.
        eval_splits: the splits reported at evaluation time.
        label_field: header name of the gold label column in labelled files (``None`` for QA).
        id_field: header name of the example-id column, or ``None`` when rows are numbered.
        files: for a task described by the user's data (:class:`slimformer.tasks.userdata.DataFiles`): its files,
            columns and hold-out; ``None`` for the presets, which read their benchmark layout.
    """

    name: str
    kind: TaskKind
    labels: tuple[str, ...] | None
    metrics: tuple[str, ...]
    main_metric: str
    max_seq_length: int
    text_fields: tuple[str, ...]
    data_subdir: str
    split_files: tuple[tuple[str, str], ...] = field(
        default=(("train", "train.tsv"), ("dev", "dev.tsv"), ("test", "test.tsv"))
    )
    eval_splits: tuple[str, ...] = ("dev",)
    label_field: str | None = "label"
    id_field: str | None = "index"
    files: Any = None

    def __post_init__(self) -> None:
        if self.main_metric not in self.metrics:
            raise ValueError(f"{self.name}: main metric {self.main_metric!r} is not in {self.metrics}")
        if (self.kind == "classification") != (self.labels is not None):
            raise ValueError(f"{self.name}: only classification tasks have labels")
        if not 1 <= len(self.text_fields) <= 2:
            raise ValueError(f"{self.name}: text_fields must name one or two columns")
        splits = dict(self.split_files)
        if any(s not in splits for s in self.eval_splits):
            raise ValueError(f"{self.name}: eval_splits {self.eval_splits} not all in {tuple(splits)}")

    @property
    def num_labels(self) -> int:
        """Number of model outputs: ``len(labels)`` for classification, 1 for regression, 2 for QA."""
        if self.labels is not None:
            return len(self.labels)
        return 1 if self.kind == "regression" else 2

    @property
    def splits(self) -> tuple[str, ...]:
        """Split names, e.g. ``("train", "dev", "test")``."""
        return tuple(s for s, _ in self.split_files)

    def split_file(self, split: str) -> str:
        """File name of ``split``.

        Raises:
            ConfigError: ``split`` is not one of :attr:`splits`.
        """
        files = dict(self.split_files)
        if split not in files:
            raise ConfigError(f"task {self.name} has no split {split!r}; known splits: {', '.join(files)}")
        return files[split]


_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")
_GLUE = dict(kind="classification", max_seq_length=128)

TASKS: dict[str, TaskSpec] = {
    s.name: s
    for s in (
        TaskSpec(
            "cola",
            labels=_BINARY,
            metrics=("mcc",),
            main_metric="mcc",
            text_fields=("sentence",),
            data_subdir="CoLA",
            **_GLUE,
        ),
        TaskSpec(
            "sst2",
            labels=_BINARY,
            metrics=("accuracy",),
            main_metric="accuracy",
            text_fields=("sentence",),
            data_subdir="SST-2",
            **_GLUE,
        ),
        TaskSpec(
            "mrpc",
            labels=_BINARY,
            metrics=("f1", "accuracy"),
            main_metric="f1",
            text_fields=("#1 String", "#2 String"),
            data_subdir="MRPC",
            label_field="Quality",
            **_GLUE,
        ),
        TaskSpec(
            "stsb",
            kind="regression",
            labels=None,
            metrics=("pearson", "spearman"),
            main_metric="spearman",
            max_seq_length=128,
            text_fields=("sentence1", "sentence2"),
            data_subdir="STS-B",
            label_field="score",
        ),
        TaskSpec(
            "qqp",
            labels=_BINARY,
            metrics=("f1", "accuracy"),
            main_metric="f1",
            text_fields=("question1", "question2"),
            data_subdir="QQP",
            label_field="is_duplicate",
            id_field="id",
            **_GLUE,
        ),
        TaskSpec(
            "mnli",
            labels=("contradiction", "entailment", "neutral"),
            metrics=("accuracy",),
            main_metric="accuracy",
            text_fields=("sentence1", "sentence2"),
            data_subdir="MNLI",
            split_files=(
                ("train", "train.tsv"),
                ("dev", "dev_matched.tsv"),
                ("dev_mismatched", "dev_mismatched.tsv"),
                ("test", "test_matched.tsv"),
                ("test_mismatched", "test_mismatched.tsv"),
            ),
            eval_splits=("dev", "dev_mismatched"),
            label_field="gold_label",
            **_GLUE,
        ),
        TaskSpec(
            "qnli",
            labels=_NLI2,
            metrics=("accuracy",),
            main_metric="accuracy",
            text_fields=("question", "sentence"),
            data_subdir="QNLI",
            **_GLUE,
        ),
        TaskSpec(
            "rte",
            labels=_NLI2,
            metrics=("accuracy",),
            main_metric="accuracy",
            text_fields=("sentence1", "sentence2"),
            data_subdir="RTE",
            **_GLUE,
        ),
        TaskSpec(
            "wnli",
            labels=_BINARY,
            metrics=("accuracy",),
            main_metric="accuracy",
            text_fields=("sentence1", "sentence2"),
            data_subdir="WNLI",
            **_GLUE,
        ),
        TaskSpec(
            "squad",
            kind="qa",
            labels=None,
            metrics=("exact_match", "f1"),
            main_metric="f1",
            max_seq_length=384,
            text_fields=("question", "context"),
            data_subdir="squad_v1.1",
            split_files=(("train", "train-v1.1.json"), ("dev", "dev-v1.1.json")),
            label_field=None,
            id_field="id",
        ),
    )
}
"""Task name -> :class:`TaskSpec`. GLUE layouts follow ``download_glue_data.py``'s ``glue_data`` folder."""

_ALIASES = {"stsbenchmark": "stsb", "squad11": "squad", "squadv11": "squad", "squadv1": "squad"}


def _normalise(name: str) -> str:
    key = re.sub(r"[\s\-_.]", "", name.lower())
    return _ALIASES.get(key, key)


def get_task(name: str | TaskSpec) -> TaskSpec:
    """Look a task up by name, ignoring case, ``-``, ``_``, ``.`` and spaces (``"SST-2"`` -> ``sst2``).

    Args:
        name: a task name, or a :class:`TaskSpec` (returned unchanged).

    Returns:
        The registered :class:`TaskSpec`.

    Raises:
        ConfigError: the name is unknown; the message lists the known tasks.
    """
    if isinstance(name, TaskSpec):
        return name
    key = _normalise(str(name))
    if key not in TASKS:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[key]


def register_task(spec: TaskSpec) -> TaskSpec:
    """Register a task described by user data under its name (a later description of the same name replaces it).

    Raises:
        ConfigError: the name is a preset's.
    """
    key = _normalise(spec.name)
    known = TASKS.get(key)
    if known is not None and known.files is None:
        raise ConfigError(f"task name {spec.name!r} is a preset; give the user task another name")
    TASKS[key] = spec
    return spec


def task_to_dict(spec: TaskSpec) -> dict[str, Any]:
    """A user task's description as plain JSON (recorded in recipes and in ``slimformer.json``)."""
    d = asdict(spec)
    if spec.files is not None and not isinstance(spec.files, dict):
        d["files"] = spec.files.to_dict()
    d["labels"] = list(spec.labels) if spec.labels is not None else None
    for k in ("metrics", "text_fields", "eval_splits"):
        d[k] = list(d[k])
    d["split_files"] = [list(x) for x in spec.split_files]
    return d


def task_from_dict(d: dict[str, Any], source: str = "task") -> TaskSpec:
    """Inverse of :func:`task_to_dict`, registered (so a later process finds the task by name).

    Raises:
        ConfigError: not a user task description, or unknown / bad keys (names ``source``).
    """
    from slimformer.tasks.userdata import DataFiles  # local: cycle (userdata imports this module)

    if not isinstance(d, dict) or not isinstance(d.get("files"), dict):
        raise ConfigError(f"{source}: expected a user task description with 'files'")
    known = set(TaskSpec.__dataclass_fields__)
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}")
    kw = dict(d)
    kw["files"] = DataFiles.from_dict(kw["files"], f"{source}.files")
    kw["labels"] = tuple(kw["labels"]) if kw.get("labels") is not None else None
    for k in ("metrics", "text_fields", "eval_splits"):
        if k in kw:
            kw[k] = tuple(kw[k])
    if "split_files" in kw:
        kw["split_files"] = tuple(tuple(x) for x in kw["split_files"])
    try:
        return register_task(TaskSpec(**kw))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: {e}") from None
