"""Run a model over a task's evaluation set and score it with the official metric.

The same loop drives a PyTorch :class:`~slimformer.models.SlimModel` and an ONNX Runtime session
(:class:`slimformer.export.ort.OrtModel`), so int8 accuracy is measured on the deployed artefact.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import slimformer.tasks as tasks
from slimformer.errors import ConfigError, DataError
from slimformer.tasks.data import MODEL_INPUTS, TaskData, compute_task_metrics
from slimformer.tasks.registry import TaskSpec

__all__ = [
    "Predictor",
    "ExampleScores",
    "pad_batch",
    "torch_predictor",
    "predict",
    "example_scores",
    "evaluate_predictor",
    "evaluate_predictor_scores",
    "check_head_for_task",
    "check_model_for_task",
    "check_labelled",
]

#: A callable mapping a padded numpy batch ``{input_ids: (B, N), attention_mask: (B, N), ...}`` to
#: numpy outputs (``logits`` ``(B, C)`` or ``start_logits``/``end_logits`` ``(B, N)``).
Predictor = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]

_PAD_VALUE = -1e9  # logits of positions past a feature's length (never chosen by span post-processing)


def pad_batch(
    features: Sequence[Mapping[str, Any]], pad_token_id: int = 0, length: int | None = None
) -> dict[str, np.ndarray]:
    """Pad the model inputs of ``features`` to the longest (or ``length``) with int64 numpy arrays ``(B, N)``."""
    n = length or max(len(f["input_ids"]) for f in features)
    out: dict[str, np.ndarray] = {}
    for key in MODEL_INPUTS:
        if key not in features[0]:
            continue
        fill = pad_token_id if key == "input_ids" else 0
        arr = np.full((len(features), n), fill, dtype=np.int64)
        for i, f in enumerate(features):
            seq = f[key][:n]
            arr[i, : len(seq)] = seq
        out[key] = arr
    return out


def torch_predictor(model: torch.nn.Module) -> Predictor:
    """Wrap a :class:`SlimModel` as a :data:`Predictor` (eval mode, ``torch.inference_mode``)."""
    model.eval()

    def run(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = model(**{k: torch.from_numpy(v) for k, v in batch.items()})
        names = ("logits",) if out.logits is not None else ("start_logits", "end_logits")
        return {k: getattr(out, k).float().numpy() for k in names}

    return run


def predict(
    predictor: Predictor,
    features: Sequence[Mapping[str, Any]],
    *,
    batch_size: int = 64,
    pad_token_id: int = 0,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Run ``predictor`` over ``features`` in length-sorted, dynamically padded batches.

    Returns:
        ``{output name: array}`` in the order of ``features``: ``(n, C)`` for logits; ``(n, N_max)`` for
        span logits, padded with -1e9 past each feature's length.
    """
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    chunks: dict[str, list[tuple[list[int], np.ndarray]]] = {}
    for start in tqdm(range(0, len(order), batch_size), desc="evaluate", disable=not progress, leave=False):
        idx = order[start : start + batch_size]
        batch = pad_batch([features[i] for i in idx], pad_token_id)
        for name, value in predictor(batch).items():
            chunks.setdefault(name, []).append((idx, np.asarray(value)))
    result: dict[str, np.ndarray] = {}
    for name, parts in chunks.items():
        first = parts[0][1]
        if first.ndim == 2 and name != "logits":  # per-token outputs: pad to the longest batch
            width = max(p.shape[1] for _, p in parts)
            arr = np.full((len(features), width), _PAD_VALUE, dtype=np.float32)
            for idx, p in parts:
                arr[idx, : p.shape[1]] = p
        else:
            arr = np.zeros((len(features), *first.shape[1:]), dtype=np.float32)
            for idx, p in parts:
                arr[idx] = p
        result[name] = arr
    return result


def check_head_for_task(head: str, num_labels: int | None, spec: TaskSpec, source: str) -> None:
    """Refuse a model whose head cannot answer ``spec``'s task (checked before any data is read).

    A QA task needs a ``qa`` head; a classification task a ``classification`` head with ``len(spec.labels)``
    outputs; a regression task (STS-B) a ``classification`` head with 1 output. ``num_labels`` ``None``: unknown,
    only the head kind is checked.

    Raises:
        ConfigError: names ``source``, the head, its outputs and what the task needs.
    """
    head = getattr(head, "value", head)
    needs = {
        "qa": "a qa head (start/end logits)",
        "regression": "a classification head with 1 output (regression)",
        "classification": f"a classification head with {spec.num_labels} labels",
    }[spec.kind]
    if spec.kind == "qa":
        ok = head == "qa"
    else:
        ok = head == "classification" and (num_labels is None or num_labels == spec.num_labels)
    if not ok:
        has = f"a {head} head" + (f" with {num_labels} output(s)" if head == "classification" and num_labels else "")
        raise ConfigError(f"{source}: the model has {has}; task {spec.name} ({spec.kind}) needs {needs}")


def check_model_for_task(model: Any, spec: TaskSpec, source: str) -> None:
    """:func:`check_head_for_task` for a :class:`~slimformer.models.SlimModel` (its head and ``config.num_labels``)."""
    head = getattr(model.head, "value", model.head)
    num_labels = model.config.num_labels if head == "classification" else None
    check_head_for_task(head, num_labels, spec, source)


def check_labelled(data: TaskData, source: str) -> None:
    """Refuse scoring a split without gold labels (GLUE's test files are unlabelled).

    Raises:
        ConfigError: ``source`` (the file or split) has no labels; says which split to use instead.
        DataError: the split has no examples.
    """
    if not data.features:
        raise DataError(f"{source}: split {data.split!r} of task {data.spec.name} has no examples")
    if data.spec.kind != "qa" and any("labels" not in f for f in data.features):
        raise ConfigError(
            f"{source}: split {data.split!r} of task {data.spec.name} has no labels (GLUE test files are "
            f"unlabelled), so it cannot be scored; evaluate a labelled split such as dev"
        )


def evaluate_predictor(
    predictor: Predictor, data: TaskData, *, batch_size: int = 64, pad_token_id: int = 0, progress: bool = True
) -> dict[str, float]:
    """Predict ``data`` with ``predictor`` and return the task's official metrics (see ``compute_task_metrics``).

    Raises:
        ConfigError: the split has no labels (:func:`check_labelled`). DataError: it has no examples.
    """
    check_labelled(data, "evaluation data")
    outputs = predict(predictor, data.features, batch_size=batch_size, pad_token_id=pad_token_id, progress=progress)
    return compute_task_metrics(data, outputs)


@dataclass(frozen=True)
class ExampleScores:
    """Per-example results of one evaluation: enough to recompute the headline metric on any resample of the
    examples (bootstrap intervals and paired tests, :mod:`slimformer.bench.stats`).

    Attributes:
        metric: the task's main metric.
        scores: ``(n,)`` per-example scores whose mean is the metric, when it is a mean: accuracy (0/1 per
            example), SQuAD exact match / F1 (points per *question*, 0 for a question without a prediction);
            ``None`` for metrics that are not means (MCC, F1 of a class, Pearson/Spearman).
        predictions: ``(n,)`` predicted class ids (or scores for regression) when ``scores`` is ``None``.
        labels: ``(n,)`` gold labels when ``scores`` is ``None``.
    """

    metric: str
    scores: np.ndarray | None = None
    predictions: np.ndarray | None = None
    labels: np.ndarray | None = None

    @property
    def num_examples(self) -> int:
        """``n``, the unit a bootstrap resamples (GLUE examples, SQuAD questions)."""
        return len(self.scores if self.scores is not None else self.labels)

    def value(self, indices: np.ndarray | None = None) -> float:
        """The metric on the examples at ``indices`` (repeats allowed; ``None``: all of them)."""
        idx = np.arange(self.num_examples) if indices is None else indices
        if self.scores is not None:
            return float(self.scores[idx].mean())
        return float(tasks.METRICS[self.metric](self.predictions[idx], self.labels[idx]))


def example_scores(data: TaskData, outputs: Mapping[str, np.ndarray]) -> ExampleScores:
    """Per-example results of the main metric of ``data``'s task from model outputs (see :class:`ExampleScores`).

    ``ExampleScores.value()`` equals ``compute_task_metrics(data, outputs)["main"]`` (up to float summation order).
    """
    spec = data.spec
    if spec.kind == "qa":
        preds = tasks.postprocess_qa_predictions(
            data.examples, data.features, outputs["start_logits"], outputs["end_logits"]
        )
        score = tasks.f1_score if spec.main_metric == "f1" else tasks.exact_match_score
        per_question = [
            100.0 * tasks.metric_max_over_ground_truths(score, preds[ex.id], [t for t, _ in ex.answers])
            if ex.id in preds
            else 0.0
            for ex in data.examples
        ]
        return ExampleScores(spec.main_metric, scores=np.asarray(per_question, dtype=np.float64))
    labels = np.array([f["labels"] for f in data.features])
    logits = outputs["logits"]
    preds = logits[:, 0] if spec.kind == "regression" else logits.argmax(-1)
    if spec.main_metric == "accuracy":
        return ExampleScores("accuracy", scores=(preds == labels).astype(np.float64))
    return ExampleScores(spec.main_metric, predictions=preds, labels=labels)


def evaluate_predictor_scores(
    predictor: Predictor, data: TaskData, *, batch_size: int = 64, pad_token_id: int = 0, progress: bool = True
) -> tuple[dict[str, float], ExampleScores]:
    """:func:`evaluate_predictor` and the per-example results of its main metric, from one prediction pass."""
    outputs = predict(predictor, data.features, batch_size=batch_size, pad_token_id=pad_token_id, progress=progress)
    return compute_task_metrics(data, outputs), example_scores(data, outputs)
