"""Serving what slimformer made: raw texts in, predictions out.

``slimformer.pipeline(folder)`` takes an export folder (``model.int8.onnx`` / ``model.onnx`` run by ONNX Runtime)
or a PyTorch model folder, and turns texts, text pairs or (question, context) pairs into labels with scores,
regression values, or answer spans. Inputs are tokenized like the task's data, batched and padded exactly as
evaluation does (:func:`slimformer.evaluate.predict`: length-sorted batches of ``batch_size``), so the predictions on
an eval split are the ones evaluation scored. A graph with dynamic activation scales (dynamic int8 PTQ, a QAT QDQ
graph) runs each input alone by default (``batch_size`` 1): its int8 scales follow each batch's maximum, so a
text's label would otherwise depend on the other texts of the call; evaluation scores such graphs the same way.
On a length-adaptive graph the caller picks the length configuration per call (``config=``, a ``LengthConfig`` or a
ratio list; or ``front_point=`` an index of the search's front, ``max_flops=`` / ``budget_ms=`` the cheapest front
point within it), with no new session.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slimformer.checkpoint import load_model, read_meta
from slimformer.errors import ConfigError, ModelLoadError
from slimformer.evaluate import predict, torch_predictor
from slimformer.export import FP32_FILE, INT8_FILE, OrtModel
from slimformer.export.length import LENGTH_INPUTS
from slimformer.export.length_ort import LengthOrtModel
from slimformer.length.config import LengthConfig
from slimformer.length.selection import gene_config
from slimformer.models import HeadKind
from slimformer.quant import has_dynamic_activation_quantizers
from slimformer.tasks import QAExample, postprocess_qa_predictions, prepare_eval_features

__all__ = ["Pipeline", "pipeline"]

PathLike = str | os.PathLike[str]
TextInput = str | tuple[str, str] | dict[str, str]


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class Pipeline:
    """A deployed model with its tokenizer: ``pipe(["text", ...]) -> [{"label": ..., "score": ...}, ...]``.

    Args:
        folder: an export folder (``model.int8.onnx`` and/or ``model.onnx``, tokenizer, ``slimformer.json``) or a
            PyTorch model folder written by slimformer.
        runtime: ``int8`` / ``fp32`` (ONNX Runtime) or ``pytorch``; default: int8 if present, else fp32, else PyTorch.
        threads: ONNX Runtime / torch threads (default: physical cores).
        batch_size: sequences per batch (as evaluation batches them); default: 1 for a graph or model with dynamic
            activation scales (each input alone, independent of the rest of the call; what evaluation reports),
            32 otherwise.
        max_seq_length: tokens per sequence (default: the model's).
        front: the search's ``front.json`` (for ``front_point`` / ``max_flops`` / ``budget_ms``; default: the
            run's, found beside the export folder when there is one).

    Raises:
        ModelLoadError: no graph and no weights in ``folder``, an unreadable ``slimformer.json``.
        ConfigError: an unknown runtime.
    """

    def __init__(
        self,
        folder: PathLike,
        *,
        runtime: str | None = None,
        threads: int | None = None,
        batch_size: int | None = None,
        max_seq_length: int | None = None,
        front: PathLike | None = None,
    ) -> None:
        from transformers import AutoTokenizer

        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ModelLoadError(f"{self.folder}: no such folder")
        self.meta = read_meta(self.folder)
        self.head = HeadKind(self.meta.head)
        self.labels = self.meta.labels
        self.max_seq_length = max_seq_length or self.meta.max_seq_length or 128
        found = {"int8": self.folder / INT8_FILE, "fp32": self.folder / FP32_FILE}
        if runtime is None:
            runtime = next((k for k, p in found.items() if p.is_file()), "pytorch")
        if runtime not in ("int8", "fp32", "pytorch"):
            raise ConfigError(f"runtime must be int8, fp32 or pytorch, got {runtime!r}")
        self.runtime = runtime
        self.session: OrtModel | None = None
        if runtime == "pytorch":
            loaded = load_model(self.folder)
            self.tokenizer = loaded.tokenizer
            self._predict = torch_predictor(loaded.model)
            dynamic = has_dynamic_activation_quantizers(loaded.model)
            if threads:
                import torch

                torch.set_num_threads(threads)
        else:
            path = found[runtime]
            if not path.is_file():
                raise ModelLoadError(f"{self.folder}: no {path.name} for runtime {runtime!r}")
            self.tokenizer = AutoTokenizer.from_pretrained(
                str(self.folder), local_files_only=True, trust_remote_code=False
            )
            plain = OrtModel(path, intra_op_num_threads=threads)
            length = set(LENGTH_INPUTS) <= {i.name for i in plain.session.get_overridable_initializers()}
            self.session = LengthOrtModel(path, None, intra_op_num_threads=threads) if length else plain
            if length:
                default = plain.metadata.get("slimformer.length_config")
                self.session.set_config(LengthConfig.from_dict(json.loads(default)) if default else None)  # type: ignore[union-attr]
            self._predict = self.session
            dynamic = plain.dynamic_activations
        #: whether outputs depend on batching (activation scales per batch); then batch_size defaults to 1
        self.dynamic_activations = dynamic
        self.batch_size = batch_size if batch_size is not None else (1 if dynamic else 32)
        self.front = self._find_front(front)

    # ---------------------------------------------------------------- length configurations
    @property
    def length_adaptive(self) -> bool:
        """Whether the graph takes a length configuration per call."""
        return isinstance(self.session, LengthOrtModel)

    def _find_front(self, front: PathLike | None) -> dict[str, Any] | None:
        if front is not None:
            return json.loads(Path(front).read_text(encoding="utf-8"))
        for candidate in (self.folder.parent / "search" / "front.json", self.folder / "front.json"):
            if candidate.is_file():
                return json.loads(candidate.read_text(encoding="utf-8"))
        return None

    def _config_for(
        self,
        config: LengthConfig | Sequence[float] | None,
        front_point: int | None,
        max_flops: float | None,
        budget_ms: float | None,
    ) -> LengthConfig | None:
        asked = [x is not None for x in (config, front_point, max_flops, budget_ms)]
        if sum(asked) > 1:
            raise ConfigError("give one of config, front_point, max_flops, budget_ms")
        if not any(asked):
            return None
        if not self.length_adaptive:
            raise ConfigError(f"{self.folder}: not a length-adaptive graph; it takes no length configuration")
        if config is not None:
            return config if isinstance(config, LengthConfig) else LengthConfig.from_ratios(list(config))
        if self.front is None:
            raise ConfigError(f"{self.folder}: no front.json of a search found; pass front=<run>/search/front.json")

        points = self.front["front"]  # cheapest first
        if front_point is not None:
            if not 0 <= front_point < len(points):
                raise ConfigError(f"front_point {front_point}: the front has {len(points)} points")
            chosen = points[front_point]
        else:
            key, limit = ("flops", max_flops) if max_flops is not None else ("latency_ms", budget_ms)
            within = [p for p in points if p.get(key) is not None and p[key] <= limit]
            if not within:
                raise ConfigError(f"no front point within {key} <= {limit} (cheapest: {points[0].get(key)})")
            chosen = max(within, key=lambda p: p["metric"])
        return gene_config(chosen["length_config"], self.front.get("gene_form", "lengths"), self.front["seq_len"])

    # ---------------------------------------------------------------- prediction
    def _features(self, inputs: Sequence[TextInput]) -> tuple[list[dict[str, Any]], list[QAExample] | None]:
        if self.head is HeadKind.QA:
            examples = []
            for i, x in enumerate(inputs):
                if isinstance(x, dict) and {"question", "context"} <= set(x):
                    q, c = x["question"], x["context"]
                elif isinstance(x, (tuple, list)) and len(x) == 2:
                    q, c = x
                else:
                    raise ConfigError(f"input {i}: a QA model takes (question, context) pairs, got {x!r}")
                examples.append(QAExample(str(i), "", str(c), str(q), ()))
            feats = prepare_eval_features(examples, self.tokenizer, max_seq_length=self.max_seq_length)
            return feats, examples
        first, second = [], []
        for i, x in enumerate(inputs):
            if isinstance(x, str):
                first.append(x), second.append(None)
            elif isinstance(x, dict) and "text" in x:
                first.append(x["text"]), second.append(x.get("text_pair"))
            elif isinstance(x, (tuple, list)) and len(x) == 2:
                first.append(x[0]), second.append(x[1])
            else:
                raise ConfigError(f"input {i}: expected a text, a (text, text_pair) pair or a dict, got {x!r}")
        pairs = [s is not None for s in second]
        if any(pairs) and not all(pairs):
            raise ConfigError("inputs mix single texts and text pairs")
        enc = self.tokenizer(
            first, second if pairs and pairs[0] else None, truncation=True, max_length=self.max_seq_length
        )
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        return [{k: enc[k][i] for k in keys} for i in range(len(first))], None

    def __call__(
        self,
        inputs: TextInput | Iterable[TextInput],
        *,
        config: LengthConfig | Sequence[float] | None = None,
        front_point: int | None = None,
        max_flops: float | None = None,
        budget_ms: float | None = None,
    ) -> list[dict[str, Any]]:
        """Predict ``inputs`` (one or many).

        Returns:
            One dict per input: ``{"label", "score", "scores"}`` (classification: the arg-max label name, its
            softmax probability, all probabilities), ``{"score"}`` (regression), ``{"answer", "score"}`` (QA: the
            best span's text and its start + end logit).

        Raises:
            ConfigError: a bad input, or a length configuration asked of a graph without one.
        """
        items = [inputs] if isinstance(inputs, (str, dict, tuple)) else list(inputs)
        if not items:
            return []
        cfg = self._config_for(config, front_point, max_flops, budget_ms)
        feats, examples = self._features(items)
        session = self.session
        previous = session.config if isinstance(session, LengthOrtModel) else None
        if cfg is not None and isinstance(session, LengthOrtModel):
            session.set_config(cfg)
        try:
            out = predict(
                self._predict,
                feats,
                batch_size=self.batch_size,
                pad_token_id=self.tokenizer.pad_token_id or 0,
                progress=False,
            )
        finally:
            if cfg is not None and isinstance(session, LengthOrtModel):
                session.set_config(previous)
        if examples is not None:
            answers = postprocess_qa_predictions(examples, feats, out["start_logits"], out["end_logits"])
            return [{"answer": answers[e.id]} for e in examples]
        logits = out["logits"]
        if logits.shape[-1] == 1 or self.labels is None:
            return [{"score": float(v)} for v in logits.reshape(len(items), -1)[:, 0]]
        probs = _softmax(logits)
        best = probs.argmax(axis=-1)
        return [
            {"label": self.labels[k], "score": float(p[k]), "scores": dict(zip(self.labels, map(float, p)))}
            for k, p in zip(best, probs)
        ]


def pipeline(folder: PathLike, **kwargs: Any) -> Pipeline:
    """A :class:`Pipeline` over ``folder`` (an export folder or a model folder); see :class:`Pipeline`."""
    return Pipeline(folder, **kwargs)
