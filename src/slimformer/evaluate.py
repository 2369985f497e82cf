"""Run a model over a task's evaluation set and score it with the official metric.

The same loop drives a PyTorch :class:`~slimformer.models.SlimModel` and an ONNX Runtime session
(:class:`slimformer.export.ort.OrtModel`), so int8 accuracy is measured on the deployed artefact.

How the inputs are batched is an :class:`EvalBatching` (batch size, order, padding) that every metric record
states. It matters for graphs with *dynamic activation scales* (ONNX Runtime dynamic int8 PTQ, the QDQ graph of a
QAT model): their int8 scale of an activation is the maximum over the whole batch tensor, padding included, so an
input's prediction depends on its batch mates. Such graphs are scored at :data:`SERVED_BATCHING` (batch size 1,
each input alone and unpadded: what a served request gets, independent of order) unless the caller asks for a
batch size; :func:`batching_spread` scores one predictor under several batchings to show how much that moves.
fp32 and static int8 graphs depend on batching only through float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

import slimformer.tasks as tasks
from slimformer.errors import ConfigError, DataError
from slimformer.tasks.data import MODEL_INPUTS, TaskData, compute_task_metrics
from slimformer.tasks.registry import TaskSpec

__all__ = [
    "EvalBatching",
    "SERVED_BATCHING",
    "DEFAULT_BATCH_SIZE",
    "default_batching",
    "batching_spread",
    "spread_is_large",
    "LARGE_SPREAD_POINTS",
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

#: Batch size of evaluations whose result does not depend on batching (PyTorch, fp32 ONNX, static int8).
DEFAULT_BATCH_SIZE = 64


@dataclass(frozen=True)
class EvalBatching:
    """How an evaluation batches its inputs; every metric record states it (``to_dict``).

    Attributes:
        batch_size: inputs per predictor call (≥ 1). 1: each input alone, no padding at all.
        order: ``length-sorted`` (inputs sorted by token count, so batch mates have similar lengths: little
            padding) or ``file`` (the order of the eval file).
        padding: ``longest`` (each batch padded to its longest input) or ``max_length`` (every input padded to
            ``max_length`` tokens, as a fixed-shape server would).
        max_length: tokens per row with ``padding="max_length"`` (≥ the longest input); ``None`` otherwise.

    Raises:
        ConfigError: a batch size below 1, an unknown order or padding, ``max_length`` missing with
            ``padding="max_length"`` or given with ``padding="longest"``.
    """

    batch_size: int = DEFAULT_BATCH_SIZE
    order: Literal["length-sorted", "file"] = "length-sorted"
    padding: Literal["longest", "max_length"] = "longest"
    max_length: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"EvalBatching.batch_size={self.batch_size!r}; expected an integer >= 1")
        if self.order not in ("length-sorted", "file"):
            raise ConfigError(f"EvalBatching.order={self.order!r}; expected 'length-sorted' or 'file'")
        if self.padding not in ("longest", "max_length"):
            raise ConfigError(f"EvalBatching.padding={self.padding!r}; expected 'longest' or 'max_length'")
        if (self.padding == "max_length") != (self.max_length is not None):
            raise ConfigError(
                f"EvalBatching: padding={self.padding!r} with max_length={self.max_length!r}; max_length (tokens) "
                "is given exactly when padding is 'max_length'"
            )
        if self.max_length is not None and self.max_length < 1:
            raise ConfigError(f"EvalBatching.max_length={self.max_length}; expected >= 1")

    def to_dict(self) -> dict[str, Any]:
        """``{"batch_size", "order", "padding", "max_length"}`` (plain JSON, for metric records)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvalBatching:
        """Inverse of :meth:`to_dict` (missing keys take their defaults).

        Raises:
            ConfigError: an unknown key or a bad value.
        """
        unknown = sorted(set(d) - {"batch_size", "order", "padding", "max_length"})
        if unknown:
            raise ConfigError(f"EvalBatching: unknown key(s) {unknown}")
        return cls(**d)

    def describe(self) -> str:
        """One line for reports, e.g. ``batch size 1 (each input alone, unpadded)``."""
        if self.batch_size == 1 and self.padding == "longest":
            return "batch size 1 (each input alone, unpadded)"
        pad = "padded to the longest in the batch" if self.padding == "longest" else f"padded to {self.max_length}"
        order = "length-sorted" if self.order == "length-sorted" else "in file order"
        return f"batch size {self.batch_size}, {order}, {pad}"


#: What a served request gets: each input alone, unpadded (order is irrelevant at batch size 1).
SERVED_BATCHING = EvalBatching(batch_size=1)


def default_batching(dynamic_activations: bool, batch_size: int | None = None) -> EvalBatching:
    """The batching an evaluation uses when the caller names at most a batch size.

    Args:
        dynamic_activations: the predictor computes activation scales per batch at run time (dynamic int8 PTQ,
            a QAT QDQ graph; :func:`slimformer.export.dynamic_activation_scales` tells).
        batch_size: the caller's batch size, ``None`` when not set.

    Returns:
        ``batch_size`` length-sorted when given; else :data:`SERVED_BATCHING` for dynamic activation scales
        (the figure a served request gets) and :data:`DEFAULT_BATCH_SIZE` length-sorted otherwise.
    """
    if batch_size is not None:
        return EvalBatching(batch_size=batch_size)
    return SERVED_BATCHING if dynamic_activations else EvalBatching()


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
    device = next(model.parameters()).device  # e.g. CUDA after a Trainer moved the model there

    def run(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = model(**{k: torch.from_numpy(v).to(device) for k, v in batch.items()})
        names = ("logits",) if out.logits is not None else ("start_logits", "end_logits")
        return {k: getattr(out, k).float().cpu().numpy() for k in names}

    return run


def _resolve(batch_size: int | None, batching: EvalBatching | None) -> EvalBatching:
    if batching is not None and batch_size is not None:
        raise ValueError("give batch_size or batching, not both")
    return batching if batching is not None else EvalBatching(batch_size=batch_size or DEFAULT_BATCH_SIZE)


def predict(
    predictor: Predictor,
    features: Sequence[Mapping[str, Any]],
    *,
    batch_size: int | None = None,
    pad_token_id: int = 0,
    progress: bool = True,
    batching: EvalBatching | None = None,
) -> dict[str, np.ndarray]:
    """Run ``predictor`` over ``features`` batched as ``batching`` says.

    Args:
        batch_size: shorthand for ``EvalBatching(batch_size)`` (length-sorted, padded to the longest);
            neither given: :data:`DEFAULT_BATCH_SIZE`.
        batching: the full batching (order, padding); not together with ``batch_size``.

    Returns:
        ``{output name: array}`` in the order of ``features``: ``(n, C)`` for logits; ``(n, N_max)`` for
        span logits, padded with -1e9 past each feature's length.

    Raises:
        ValueError: both ``batch_size`` and ``batching``. ConfigError: ``padding="max_length"`` shorter than an
            input.
    """
    b = _resolve(batch_size, batching)
    order = list(range(len(features)))
    if b.order == "length-sorted":
        order.sort(key=lambda i: len(features[i]["input_ids"]))
    if b.max_length is not None:
        longest = max((len(f["input_ids"]) for f in features), default=0)
        if longest > b.max_length:
            raise ConfigError(f"EvalBatching.max_length={b.max_length} is shorter than an input ({longest} tokens)")
    chunks: dict[str, list[tuple[list[int], np.ndarray]]] = {}
    for start in tqdm(range(0, len(order), b.batch_size), desc="evaluate", disable=not progress, leave=False):
        idx = order[start : start + b.batch_size]
        batch = pad_batch([features[i] for i in idx], pad_token_id, length=b.max_length)
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
    predictor: Predictor,
    data: TaskData,
    *,
    batch_size: int | None = None,
    pad_token_id: int = 0,
    progress: bool = True,
    batching: EvalBatching | None = None,
) -> dict[str, float]:
    """Predict ``data`` with ``predictor`` and return the task's official metrics (see ``compute_task_metrics``).

    ``batch_size`` / ``batching`` as in :func:`predict`; the caller records the batching with the metrics
    (choose it with :func:`default_batching` when the predictor may have dynamic activation scales).

    Raises:
        ConfigError: the split has no labels (:func:`check_labelled`). DataError: it has no examples.
        ValueError: both ``batch_size`` and ``batching``.
    """
    check_labelled(data, "evaluation data")
    outputs = predict(
        predictor, data.features, batch_size=batch_size, pad_token_id=pad_token_id, progress=progress, batching=batching
    )
    return compute_task_metrics(data, outputs)


def batching_spread(
    predictor: Predictor,
    data: TaskData,
    batchings: Sequence[EvalBatching],
    *,
    pad_token_id: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Score one predictor under each of ``batchings``: how much its figure moves with batching.

    A graph with dynamic activation scales moves (its int8 scales follow each batch's maximum); fp32 and static
    int8 graphs move only by float rounding. Inputs are the same; only batch size, order and padding change.

    Returns:
        ``{"rows": [{"batching": EvalBatching.to_dict(), "metrics": {...}}, ...] (in the order given),
        "main_min", "main_max", "spread"}`` (``spread`` = max - min of the ``main`` metric, in the metric's unit:
        a fraction for GLUE accuracy, points for SQuAD).

    Raises:
        ValueError: no batchings. ConfigError / DataError: as :func:`evaluate_predictor`.
    """
    if not batchings:
        raise ValueError("batching_spread needs at least one batching")
    rows = [
        {
            "batching": b.to_dict(),
            "metrics": evaluate_predictor(predictor, data, batching=b, pad_token_id=pad_token_id, progress=progress),
        }
        for b in batchings
    ]
    mains = [r["metrics"]["main"] for r in rows]
    return {"rows": rows, "main_min": min(mains), "main_max": max(mains), "spread": max(mains) - min(mains)}


#: A spread above this many accuracy points (0.5 points: 0.005 of a fraction metric, 0.5 of a metric in points)
#: is worth static activation scales (``quantize: {mode: static}``).
LARGE_SPREAD_POINTS = 0.5


def spread_is_large(spread: float, value: float) -> bool:
    """Whether a :func:`batching_spread` ``spread`` exceeds :data:`LARGE_SPREAD_POINTS` (``value``: the metric,
    whose size says its unit: below 1.5 a fraction, else points)."""
    points = spread * 100.0 if abs(value) < 1.5 else spread
    return points > LARGE_SPREAD_POINTS


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
    predictor: Predictor,
    data: TaskData,
    *,
    batch_size: int | None = None,
    pad_token_id: int = 0,
    progress: bool = True,
    batching: EvalBatching | None = None,
) -> tuple[dict[str, float], ExampleScores]:
    """:func:`evaluate_predictor` and the per-example results of its main metric, from one prediction pass."""
    outputs = predict(
        predictor, data.features, batch_size=batch_size, pad_token_id=pad_token_id, progress=progress, batching=batching
    )
    return compute_task_metrics(data, outputs), example_scores(data, outputs)
