"""A weighted set of distillation losses over two captured forwards (METHODS.md §2(b), §4(b), §5(b)).

:class:`DistillationLoss` names its terms with keys of :data:`slimformer.distill.losses.LOSSES` and a weight
each, plus an optional ground-truth weight; it knows which internals each term needs (so the encoder
captures nothing else), checks before training that the student and teacher can give them, and adds the
terms up. The terms themselves are the plain functions of :mod:`slimformer.distill`.

Layer maps run over *encoder layers* (0-based, ``student layer -> teacher layer``). Hidden-state terms use
``hidden_states`` (``X^0..X^L``), so the map is shifted by one and the embedding outputs are paired as well
(``X_S^0 <-> X_T^0``, TinyBERT convention); attention-level terms use the map as given. The MiniLM terms
read the last layer of each model and need no map.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from slimformer.distill import (
    attention_map_kl,
    attention_output_mse,
    attention_score_mse,
    context_mse,
    hidden_mse,
    logits_kd,
    logits_mse,
    minilm_attention_kl,
    minilm_value_relation_kl,
    prediction_loss,
    soft_cross_entropy,
    unified_attention_loss_from_outputs,
)
from slimformer.errors import ConfigError
from slimformer.models import Capture, HeadKind, SlimModel, TaskOutput

__all__ = ["DistillationLoss", "TRAINABLE_LOSSES", "task_logits"]


def task_logits(out: TaskOutput) -> Tensor | tuple[Tensor, Tensor]:
    """Classification logits ``(B, C)``, or the span-QA ``(start, end)`` pair of ``(B, N)`` logits."""
    return out.logits if out.logits is not None else (out.start_logits, out.end_logits)


def _enc(out: TaskOutput, name: str) -> list[Tensor]:
    return getattr(out.encoder, name)


@dataclass(frozen=True)
class _Term:
    """How the trainer computes one named loss: captures it needs, what it checks, the call itself."""

    captures: tuple[str, ...]
    kind: str  # "logits" | "layerwise" | "last_layer"
    call: Callable[[TaskOutput, TaskOutput, Tensor | None, DistillationLoss], Tensor]
    needs_same: tuple[str, ...] = ()  # config attributes that must be equal in student and teacher


def _logits_kd(s: TaskOutput, t: TaskOutput, _m: Tensor | None, c: DistillationLoss) -> Tensor:
    return logits_kd(
        task_logits(s), task_logits(t), temperature=c.temperature, scale_by_temperature_squared=c.temperature_squared
    )


_HIDDEN, _HEADS = "hidden_size", "num_attention_heads"

#: Trainer-level loss names (a subset of :data:`slimformer.distill.losses.LOSSES`) and how each is computed.
_TERMS: dict[str, _Term] = {
    "logits_kd": _Term((), "logits", _logits_kd),
    "soft_cross_entropy": _Term((), "logits", lambda s, t, m, c: soft_cross_entropy(task_logits(s), task_logits(t))),
    "logits_mse": _Term((), "logits", lambda s, t, m, c: logits_mse(task_logits(s), task_logits(t))),
    "prediction": _Term((), "logits", lambda s, t, m, c: prediction_loss(task_logits(s), task_logits(t))),
    "hidden_mse": _Term(
        ("hidden_states",),
        "layerwise",
        lambda s, t, m, c: hidden_mse(_enc(s, "hidden_states"), _enc(t, "hidden_states"), layer_map=c.hidden_map),
        (_HIDDEN,),
    ),
    "attention_score_mse": _Term(
        ("scores",),
        "layerwise",
        lambda s, t, m, c: attention_score_mse(_enc(s, "scores"), _enc(t, "scores"), layer_map=c.layer_map),
        (_HEADS,),
    ),
    "attention_map_kl": _Term(
        ("attentions",),
        "layerwise",
        lambda s, t, m, c: attention_map_kl(_enc(s, "attentions"), _enc(t, "attentions"), m, layer_map=c.layer_map),
        (_HEADS,),
    ),
    # sdq_attention_kl with a layer map: the same mean over layers and heads (METHODS §5(b) reconstruction)
    "sdq_attention_kl": _Term(
        ("attentions",),
        "layerwise",
        lambda s, t, m, c: attention_map_kl(
            _enc(s, "attentions"), _enc(t, "attentions"), m, layer_map=c.layer_map, layer_reduction="mean"
        ),
        (_HEADS,),
    ),
    "attention_output_mse": _Term(
        ("attention_outputs",),
        "layerwise",
        lambda s, t, m, c: attention_output_mse(
            _enc(s, "attention_outputs"), _enc(t, "attention_outputs"), layer_map=c.layer_map
        ),
        (_HIDDEN,),
    ),
    "context_mse": _Term(
        ("contexts",),
        "layerwise",
        lambda s, t, m, c: context_mse(_enc(s, "contexts"), _enc(t, "contexts"), layer_map=c.layer_map),
        (_HEADS, _HIDDEN),
    ),
    "unified_attention": _Term(
        ("attentions", "attention_outputs"),
        "layerwise",
        lambda s, t, m, c: unified_attention_loss_from_outputs(
            s.encoder, t.encoder, m, beta_map=c.beta_map, beta_out=c.beta_out, layer_map=c.layer_map
        ),
        (_HEADS, _HIDDEN),
    ),
    "minilm_attention_kl": _Term(
        ("attentions",),
        "last_layer",
        lambda s, t, m, c: minilm_attention_kl(_enc(s, "attentions")[-1], _enc(t, "attentions")[-1], m),
        (_HEADS,),
    ),
    "minilm_value_relation_kl": _Term(
        ("values",),
        "last_layer",
        lambda s, t, m, c: minilm_value_relation_kl(_enc(s, "values")[-1], _enc(t, "values")[-1], m),
        (_HEADS,),
    ),
}

#: The loss names a :class:`DistillationLoss` accepts (keys of ``slimformer.distill.losses.LOSSES``).
TRAINABLE_LOSSES: tuple[str, ...] = tuple(_TERMS)


def _check_weight(name: str, w: Any) -> float:
    ok = not isinstance(w, bool) and isinstance(w, (int, float)) and math.isfinite(w) and w >= 0
    if not ok:
        raise ConfigError(f"kd_losses.{name}: weight must be a finite number >= 0, got {w!r}")
    return float(w)


@dataclass(frozen=True)
class DistillationLoss:
    """``L = gt_weight · L_task(y, z_S) + Σ_name weight_name · L_name(student, teacher)``.

    Paper: KD-QAT (Kim et al., EMNLP 2022, arXiv:2211.11014) ``L_total`` (METHODS §4(b)); MiniLM
    (arXiv:2002.10957) for ``minilm_*``; the SDQ reconstruction (METHODS §5(b)) is
    ``{"logits_kd": λ_out, "sdq_attention_kl": λ_att}`` with ``temperature_squared=True``.

    ``L_task`` is the student model's own loss (cross-entropy mean for classification, MSE for regression,
    mean of start/end CE for span QA); unlike KD-QAT's ``L_gt`` (reduction ``sum``, §4(f).5) it is a mean,
    so its scale does not grow with the batch size.

    Args:
        losses: ``{name: weight}``, names from :data:`TRAINABLE_LOSSES`; weight-0 terms are skipped.
        gt_weight: weight of the ground-truth task loss (0 = pure distillation).
        temperature: ``τ`` of ``logits_kd``.
        temperature_squared: multiply ``logits_kd`` by ``τ²`` (Hinton et al. 2015).
        beta_map, beta_out: ``β`` of ``unified_attention`` (``β_map L_map + β_out L_out``).
        layer_map: ``{student encoder layer: teacher encoder layer}`` (0-based) for layer-wise terms;
            ``None`` = identity, which needs equal depths.

    Raises:
        ConfigError: unknown loss name (lists the valid ones), negative / non-finite weight, nothing to
            train (no positive weight), bad ``temperature``, or a non-integer layer map.
    """

    losses: Mapping[str, float] = field(default_factory=dict)
    gt_weight: float = 0.0
    temperature: float = 1.0
    temperature_squared: bool = False
    beta_map: float = 1.0
    beta_out: float = 1.0
    layer_map: Mapping[int, int] | None = None

    def __post_init__(self) -> None:
        unknown = [n for n in self.losses if n not in _TERMS]
        if unknown:
            raise ConfigError(f"kd_losses: unknown loss {unknown[0]!r}; expected some of {list(TRAINABLE_LOSSES)}")
        weights = {n: _check_weight(n, w) for n, w in self.losses.items()}
        object.__setattr__(self, "losses", {n: w for n, w in weights.items() if w > 0})
        object.__setattr__(self, "gt_weight", _check_weight("gt_weight", self.gt_weight))
        if not self.losses and self.gt_weight == 0:
            raise ConfigError("kd_losses is empty and gt_weight is 0: nothing to train (set a loss weight > 0)")
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise ConfigError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        if self.layer_map is not None:
            if not all(isinstance(k, int) and isinstance(v, int) for k, v in self.layer_map.items()):
                raise ConfigError(f"layer_map must map int student layers to int teacher layers, got {self.layer_map}")
            if not self.layer_map and self._layerwise():
                raise ConfigError("layer_map is empty; give {student_layer: teacher_layer} pairs or leave it unset")

    def _layerwise(self) -> list[str]:
        return [n for n in self.losses if _TERMS[n].kind == "layerwise"]

    @property
    def needs_teacher(self) -> bool:
        """Whether any distillation term is active (else only the ground-truth loss is trained)."""
        return bool(self.losses)

    @property
    def capture(self) -> Capture | None:
        """The internals both forwards must return, or ``None`` when only logits are needed."""
        names: set[str] = set()
        for n in self.losses:
            captures = _TERMS[n].captures
            if n == "unified_attention":  # a zero β needs no capture (unified_attention_loss_from_outputs skips it)
                captures = tuple(c for c, b in zip(captures, (self.beta_map, self.beta_out), strict=True) if b)
            names.update(captures)
        return Capture.of(*sorted(names)) if names else None

    @property
    def hidden_map(self) -> dict[int, int] | None:
        """:attr:`layer_map` shifted onto ``hidden_states`` indices, with the embedding outputs paired (0 -> 0)."""
        if self.layer_map is None:
            return None
        return {0: 0, **{s + 1: t + 1 for s, t in self.layer_map.items()}}

    def check_task(self, kind: str) -> None:
        """Check, from the task alone (before any model is loaded), that every logits term fits its head.

        Args:
            kind: the task's kind, ``"classification"``, ``"regression"`` or ``"qa"``.

        Raises:
            ConfigError: a softmax term (``logits_kd``, ``soft_cross_entropy``) on a regression task (one output).
        """
        if kind != "regression":
            return
        for name in self.losses:
            if name in _SOFTMAX_TERMS:
                raise ConfigError(
                    f"kd_losses.{name}: a softmax over 1 output (regression head) is constant; use logits_mse or "
                    "prediction"
                )

    def validate(self, student: Any, teacher: Any | None) -> None:
        """Check, before training, that ``student`` and ``teacher`` can give every term's inputs.

        Raises:
            ConfigError: a model is not a :class:`SlimModel`; the heads differ or have no logits; a softmax
                loss on a regression head; layer-wise terms with different depths and no ``layer_map``; a map
                index outside either model; hidden sizes / head counts the term needs equal differ.
        """
        if not isinstance(student, SlimModel):
            raise ConfigError(f"distillation needs a SlimModel student, got {type(student).__name__}")
        if not self.needs_teacher:
            return
        if not isinstance(teacher, SlimModel):
            raise ConfigError(f"kd_losses {list(self.losses)} need a SlimModel teacher, got {type(teacher).__name__}")
        for name in self.losses:
            self._validate_term(name, student, teacher)

    def _validate_term(self, name: str, student: SlimModel, teacher: SlimModel) -> None:
        term = _TERMS[name]
        if term.kind == "logits":
            _check_logits(name, student, teacher)
        for attr in term.needs_same:
            s, t = getattr(student.config, attr), getattr(teacher.config, attr)
            if s != t:
                raise ConfigError(f"kd_losses.{name}: student {attr}={s} but teacher {attr}={t}; they must match")
        if term.kind != "layerwise":
            return
        ls, lt = student.num_layers, teacher.num_layers
        if self.layer_map is None:
            if ls != lt:
                raise ConfigError(
                    f"kd_losses.{name}: student has {ls} layers but teacher has {lt}; "
                    "set layer_map {student_layer: teacher_layer} to distill models of different depth"
                )
            return
        for si, ti in self.layer_map.items():
            if not 0 <= si < ls:
                raise ConfigError(f"layer_map: student layer {si} is outside the student's layers 0..{ls - 1}")
            if not 0 <= ti < lt:
                raise ConfigError(f"layer_map: teacher layer {ti} is outside the teacher's layers 0..{lt - 1}")

    def __call__(
        self, student_out: TaskOutput, teacher_out: TaskOutput | None, attention_mask: Tensor | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The weighted total and each unweighted term (detached).

        Args:
            student_out: the student's :class:`TaskOutput`, with :attr:`capture` internals and, when
                ``gt_weight > 0``, its ``loss`` (labels were passed).
            teacher_out: the teacher's output with the same captures (``None`` when no KD term is active).
            attention_mask: ``(B, N)`` 0/1 mask of real tokens (padded queries/keys leave the map KL terms).

        Returns:
            ``(total scalar, {"gt" | name: term})``.

        Raises:
            ValueError: ``gt_weight > 0`` but the student computed no task loss (no labels in the batch);
                a KD term is active but ``teacher_out`` is ``None``.
        """
        terms: dict[str, Tensor] = {}
        total: Tensor | None = None
        if self.gt_weight:
            if student_out.loss is None:
                raise ValueError("gt_weight > 0 needs labels (or start/end positions) in the batch")
            terms["gt"] = student_out.loss
            total = self.gt_weight * student_out.loss
        if self.losses and teacher_out is None:
            raise ValueError(f"kd_losses {list(self.losses)} need the teacher's output")
        for name, weight in self.losses.items():
            value = _TERMS[name].call(student_out, teacher_out, attention_mask, self)
            terms[name] = value
            total = weight * value if total is None else total + weight * value
        assert total is not None  # __post_init__ guarantees one positive weight
        return total, {k: v.detach() for k, v in terms.items()}


#: Logits terms that take a softmax over the outputs: meaningless for a regression head (one output).
_SOFTMAX_TERMS = ("logits_kd", "soft_cross_entropy")


def _check_logits(name: str, student: SlimModel, teacher: SlimModel) -> None:
    if student.head is not teacher.head:
        raise ConfigError(f"kd_losses.{name}: student head {student.head.value} != teacher head {teacher.head.value}")
    if student.head is HeadKind.NONE:
        raise ConfigError(f"kd_losses.{name}: a bare encoder (head 'none') has no logits to distill")
    if student.head is HeadKind.CLASSIFICATION:
        ns, nt = student.config.num_labels, teacher.config.num_labels
        if ns != nt:
            raise ConfigError(f"kd_losses.{name}: student has {ns} labels but teacher has {nt}")
        if ns == 1 and name in _SOFTMAX_TERMS:
            raise ConfigError(
                f"kd_losses.{name}: a softmax over 1 output (regression head) is constant; use logits_mse or prediction"
            )
