"""``LengthDropTrainer``: LAT training with the sandwich rule and in-place distillation.

Paper: Kim & Cho, *Length-Adaptive Transformer*, ACL 2021 (https://arxiv.org/abs/2010.07003); METHODS.md §1(b)
"Training step". Per mini-batch, ``m + 2`` passes (:func:`~slimformer.length.lengthdrop.sandwich`):

1. the full model (no token dropping) on the task loss: ``L_full = CE`` (span QA: mean of start/end CE;
   regression: MSE); its logits ``z_full`` are detached and become the in-place teacher;
2. the smallest model and ``m`` random sub-models (LengthDrop + LayerDrop; per-row keep ratios on the search's
   ``seq_len`` grid, the configurations the search scores and the ONNX graph runs) on distillation only:
   ``L_sub = KL(softmax(z_full) ‖ softmax(z_sub))`` (span QA: over sequence positions, start/end mean;
   regression: MSE to ``z_full``);

and the step minimises ``(L_full + Σ L_sub) / (m + 2)``.

**Teacher for the full pass (our addition, off by default).** LAT trains the full model on the labels alone.
Started from a student that was *distilled* from a larger teacher, that drops the teacher's soft targets, and the
full-length accuracy may fall back towards what label-only fine-tuning gives (SST-2, 3-layer MiniLM student: 0.887
after distillation, 0.874 after one LengthDrop epoch; with α = 1 below, 0.870, so not the cause there; docs/length.md).
With ``teacher_weight = α > 0`` and a frozen external
teacher, the full pass is trained on ``(1 − α)·CE + α·τ²·KL(softmax(z_T/τ) ‖ softmax(z_full/τ))`` (Hinton et al.
2015; span QA: start/end mean over positions; regression: MSE to ``z_T``); the sub-models still distil from the
full model in place. The teacher runs once per step, at full length, without gradients.

**KL direction.** The default ``kl_direction="teacher_student"`` is ``KL(p_full ‖ p_sub)``: the soft
cross-entropy with the full model as target (minus its constant entropy), textbook KD (Hinton et al. 2015).
Its gradient w.r.t. the sub-model logits is ``p_sub − p_full`` — the same shape as the task CE the full model
is trained with, bounded, and mass-covering (the sub-model is pushed to keep every answer the full model
considers). The LAT code computes ``KL(p_sub ‖ p_full)`` (pitfall §1(f).1), a mode-seeking objective whose
gradient vanishes where ``p_sub`` is small even if the full model puts mass there;
``kl_direction="student_teacher"`` reproduces it.

**One backward.** Only ``compute_loss`` is overridden (STYLE.md §8): the ``m + 2`` losses are summed into one
scalar and the Trainer runs one backward. The gradient is the one LAT accumulates pass by pass (the teacher
logits are detached); the activations of all passes are alive at once, ``m + 2`` times those of one pass.
No ``TrainerCallback`` is needed: the sandwich has no schedule over steps.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from torch import Tensor
from transformers import Trainer

from slimformer.distill.kl import Direction, check_direction
from slimformer.distill.prediction import logits_kd, logits_mse
from slimformer.distill.trainer import freeze_teacher
from slimformer.errors import ConfigError
from slimformer.length.lengthdrop import SubModel, default_layer_drop_prob, sandwich
from slimformer.length.selector import forward_with_config
from slimformer.models import HeadKind, SlimModel, TaskOutput

__all__ = ["LengthDropTrainer", "sandwich_loss"]

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_LABELS = ("labels", "start_positions", "end_positions")


def _logits(model: SlimModel, out: TaskOutput) -> Tensor | tuple[Tensor, Tensor]:
    head = getattr(model, "module", model).head  # ``model`` may be the DDP wrapper of several processes
    return out.logits if head is HeadKind.CLASSIFICATION else (out.start_logits, out.end_logits)


def _detach(z: Tensor | tuple[Tensor, Tensor]) -> Tensor | tuple[Tensor, Tensor]:
    return z.detach() if isinstance(z, Tensor) else (z[0].detach(), z[1].detach())


def sandwich_loss(
    model: SlimModel,
    inputs: dict[str, Tensor],
    sub_models: list[SubModel],
    *,
    kl_direction: Direction = "teacher_student",
    teacher_logits: Tensor | tuple[Tensor, Tensor] | None = None,
    teacher_weight: float = 0.0,
    temperature: float = 1.0,
) -> tuple[Tensor, dict[str, float]]:
    """The loss of one sandwich step (see module notes).

    Args:
        model: a :class:`SlimModel` with a classification or QA head.
        inputs: the batch: ``input_ids``/``attention_mask`` [``token_type_ids``] ``(B, N)`` and ``labels``
            ``(B,)`` or ``start_positions``/``end_positions`` ``(B,)``.
        sub_models: from :func:`~slimformer.length.lengthdrop.sandwich`; the first must be the full model
            (``config is None``).
        kl_direction: ``"teacher_student"`` (default, ``KL(p_full ‖ p_sub)``) or ``"student_teacher"``
            (the LAT code).
        teacher_logits: an external frozen teacher's logits on the same batch (``(B, C)``, or a ``(start, end)``
            pair of ``(B, N)``), detached; ``None``: LAT's label-only full pass.
        teacher_weight: ``α`` in ``[0, 1]``: the full pass is ``(1 − α)·CE + α·τ²·KL(p_T ‖ p_full)``.
        temperature: ``τ > 0`` of that KL.

    Returns:
        ``(loss, logs)``: the scalar ``(L_full + Σ L_sub) / (m + 2)`` and ``{"loss_full", "loss_kd"}`` floats
        (``loss_kd`` is the mean of the sub-model losses); with a teacher also ``loss_ce`` and ``loss_teacher``, the
        two terms of ``loss_full``.

    Raises:
        ValueError: the first sub-model is not the full model, the batch has no labels, or ``teacher_weight > 0``
            without ``teacher_logits``.
        ConfigError: unknown ``kl_direction``, ``teacher_weight`` outside ``[0, 1]``.
    """
    check_direction(kl_direction)
    if not 0.0 <= teacher_weight <= 1.0:
        raise ConfigError(f"teacher_weight {teacher_weight} is outside [0, 1]")
    if teacher_weight > 0 and teacher_logits is None:
        raise ValueError("teacher_weight > 0 needs teacher_logits (the external teacher's logits on this batch)")
    if not sub_models or sub_models[0].config is not None:
        raise ValueError("the first sub-model of a sandwich must be the full model (config=None)")
    feed = {k: inputs[k] for k in _INPUTS if k in inputs}
    labels = {k: inputs[k] for k in _LABELS if k in inputs}
    full = forward_with_config(model, **feed, config=None, layers=sub_models[0].layers, **labels)
    if full.loss is None:
        raise ValueError(f"the batch has none of {list(_LABELS)}; LengthDrop training needs task labels")
    teacher = _detach(_logits(model, full))
    regression = getattr(model, "module", model).head is HeadKind.CLASSIFICATION and teacher.shape[-1] == 1
    full_loss, logs = full.loss, {}
    if teacher_weight > 0:
        if regression:
            to_teacher = logits_mse(_logits(model, full), teacher_logits)
        else:
            to_teacher = logits_kd(
                _logits(model, full), teacher_logits, temperature=temperature, scale_by_temperature_squared=True
            )
        full_loss = (1.0 - teacher_weight) * full.loss + teacher_weight * to_teacher
        logs.update(loss_ce=float(full.loss.detach()), loss_teacher=float(to_teacher.detach()))
    total, kd = full_loss, []
    for sub in sub_models[1:]:
        out = forward_with_config(model, **feed, config=sub.config, layers=sub.layers)
        student = _logits(model, out)
        if regression:
            kd.append(logits_mse(student, teacher))
        else:
            kd.append(logits_kd(student, teacher, direction=kl_direction))
        total = total + kd[-1]
    logs["loss_full"] = float(full_loss.detach())
    if kd:
        logs["loss_kd"] = float(torch.stack([k.detach() for k in kd]).mean())
    return total / len(sub_models), logs


class LengthDropTrainer(Trainer):
    """A Hugging Face ``Trainer`` whose ``compute_loss`` is the LAT sandwich step (nothing else overridden).

    Args:
        seq_len: ``N``, the grid of the sub-models' genes: the ``seq_len`` the search will use (the model's
            ``max_seq_length``). Sub-models are per-row keep ratios ``g_i / N``, independent of batch padding.
        num_sandwich: ``m`` random sub-models per step (LAT: 2).
        length_drop_ratio_bound: LengthDrop bound ``p`` (LAT: 0.2).
        layer_drop_prob: LayerDrop probability of the sub-models; ``None``: by depth (0 up to 4 layers, else
            LAT's 0.2; :func:`~slimformer.length.lengthdrop.default_layer_drop_prob`). The value used is
            ``self.layer_drop_prob``.
        layer_drop_full: LayerDrop the full model too (the LAT code does; default ``False``, pitfall §1(f).2).
        kl_direction: see module notes (default ``"teacher_student"``).
        min_length: floor of sampled lengths (LAT: 2).
        teacher: a frozen external teacher (same task head) for the full pass, or ``None`` (LAT); it is put in
            ``eval`` mode, its ``requires_grad`` switched off, and moved to the training device.
        teacher_weight: ``α`` of the full pass's teacher term (see module notes); ``> 0`` needs ``teacher``.
        teacher_temperature: ``τ`` of that term.
        length_seed: seed of the sub-model sampler (``random.Random``; the global RNG is untouched). The sampler
            is re-seeded from ``(length_seed, global_step)`` at each optimizer step, so a run resumed from a
            checkpoint draws the same sub-models as an uninterrupted one.
        *args, **kwargs: passed to ``Trainer``.

    In evaluation mode (``model.training`` false) the loss is the full model's task loss.
    """

    def __init__(
        self,
        *args: Any,
        seq_len: int,
        num_sandwich: int = 2,
        length_drop_ratio_bound: float = 0.2,
        layer_drop_prob: float | None = None,
        layer_drop_full: bool = False,
        kl_direction: Direction = "teacher_student",
        min_length: int = 2,
        length_seed: int = 0,
        teacher: SlimModel | None = None,
        teacher_weight: float = 0.0,
        teacher_temperature: float = 1.0,
        **kwargs: Any,
    ) -> None:
        check_direction(kl_direction)
        if teacher_weight > 0 and teacher is None:
            raise ConfigError("teacher_weight > 0 needs a teacher model")
        if seq_len < 1:
            raise ConfigError(f"seq_len {seq_len} (the grid of the length configurations) must be ≥ 1")
        super().__init__(*args, **kwargs)
        self.teacher = freeze_teacher(teacher).to(self.args.device) if teacher_weight > 0 else None
        self.teacher_kwargs = dict(teacher_weight=teacher_weight, temperature=teacher_temperature)
        self.seq_len = seq_len
        self.layer_drop_prob = default_layer_drop_prob(self.model.num_layers, layer_drop_prob)
        self.sandwich_kwargs = dict(
            num_sandwich=num_sandwich,
            ratio_bound=length_drop_ratio_bound,
            layer_drop_prob=self.layer_drop_prob,
            layer_drop_full=layer_drop_full,
            min_length=min_length,
        )
        self.kl_direction = kl_direction
        self.length_seed = length_seed
        self.length_rng = random.Random(length_seed)
        self._rng_step = -1  # the optimizer step the sampler was last seeded for
        self.last_sandwich: list[SubModel] = []

    def compute_loss(
        self,
        model: SlimModel,
        inputs: dict[str, Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Tensor | tuple[Tensor, Any]:
        """The sandwich loss in training; the full model's task loss in evaluation."""
        if not model.training:
            feed = {k: v for k, v in inputs.items() if k in _INPUTS + _LABELS}
            out = model(**feed)
            return (out.loss, out) if return_outputs else out.loss
        if self.state.global_step != self._rng_step:  # a function of (seed, step): resuming draws the same
            self._rng_step = self.state.global_step
            self.length_rng.seed(f"{self.length_seed}:{self._rng_step}")
        # several processes: ``model`` is the DDP wrapper (forward through it, attributes from the module inside)
        inner = getattr(model, "module", model)
        self.last_sandwich = sandwich(self.seq_len, inner.num_layers, self.length_rng, **self.sandwich_kwargs)
        teacher_logits = None
        if self.teacher is not None:
            if self.teacher.training:  # something called .train() on it: the teacher always runs without dropout
                self.teacher.eval()
            with torch.no_grad():
                feed = {k: inputs[k] for k in _INPUTS if k in inputs}
                teacher_logits = _detach(_logits(self.teacher, self.teacher(**feed)))
        loss, _ = sandwich_loss(
            model,
            inputs,
            self.last_sandwich,
            kl_direction=self.kl_direction,
            teacher_logits=teacher_logits,
            **self.teacher_kwargs,
        )
        return (loss, None) if return_outputs else loss
