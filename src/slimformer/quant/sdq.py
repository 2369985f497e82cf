"""Self-Distilled Quantization (SDQ; O'Neill & Dutta, ACL 2023, arXiv:2307.05972): the Quant-Noise part.

METHODS.md §5 — only the verbal description of SDQ is known; everything here is OUR RECONSTRUCTION
(METHODS §5(b)) and every constant is configurable:

* **Quant-Noise** (Fan et al. 2020, arXiv:2004.07320, scalar variant): during training each swapped Linear
  fake-quantizes only a random fraction ``p`` of its weight blocks (:func:`~slimformer.quant.quant_noise`;
  blocks of ``block_size`` consecutive input weights, 1 = single weights as in fairseq's scalar Quant-Noise);
  the other blocks stay fp32. In ``eval`` mode every block is quantized (``p = 1``), so the evaluated model is
  exactly the converted one. :class:`QuantNoiseLinear` is a :class:`~slimformer.quant.FakeQuantLinear`
  (same parameters, quantizers and :func:`~slimformer.quant.convert_qat_` path) that adds this noise.
* **Noise schedule** (:class:`QuantNoiseSchedule`, applied by :class:`QuantNoiseCallback` before every
  optimizer step): ``p`` goes linearly from ``start`` to ``end`` over the first ``ramp`` fraction of the
  training steps, then stays at ``end``. Default ``0.25 -> 1.0`` over half of training, so training ends
  on the fully quantized model that is deployed (OUR CHOICE; the paper's rate is NOT FOUND).
* **Self-distillation** from the frozen fp32 copy of the starting model at the output and at every
  self-attention block is the loss set ``{"logits_kd": λ_out, "sdq_attention_kl": λ_att}`` of
  :class:`~slimformer.distill.loss.DistillationLoss` (see :mod:`slimformer.stages.qat`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from transformers import TrainerCallback

from slimformer.errors import ConfigError
from slimformer.quant.modules import FakeQuantLinear, UniformWeight
from slimformer.quant.primitives import quant_noise
from slimformer.quant.qat import QATConfig, prepare_qat_

__all__ = ["QuantNoiseLinear", "QuantNoiseSchedule", "QuantNoiseCallback", "prepare_quant_noise_", "set_noise_rate_"]


def _check_rate(name: str, p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ConfigError(f"{name} must be a number in [0, 1], got {p!r}")
    return float(p)


class QuantNoiseLinear(FakeQuantLinear):
    """A :class:`FakeQuantLinear` that, in training mode, quantizes only a random fraction of weight blocks.

    Training forward: ``y = x̂ · W̃ᵀ + b`` with ``W̃ = quant_noise(W, p)`` (a fresh block mask each call, identity
    STE); eval forward: exactly :class:`FakeQuantLinear` (every block quantized). The input ``x̂`` is
    fake-quantized by ``act_q`` as usual.

    Args:
        weight, bias, act_q: as in :class:`FakeQuantLinear`.
        weight_q: a :class:`UniformWeight` without ``clip`` (Quant-Noise uses the plain max-abs scales).
        p: initial noise rate in ``[0, 1]`` (fraction of blocks quantized).
        block_size: block length along the input axis; must divide ``in_features``.

    Raises:
        ConfigError: ``weight_q`` is not an unclipped :class:`UniformWeight`, ``p`` outside ``[0, 1]``, or
            ``block_size`` does not divide ``in_features``.
    """

    def __init__(
        self,
        weight: nn.Parameter,
        bias: nn.Parameter | None,
        weight_q: UniformWeight,
        act_q: Any,
        *,
        p: float = 1.0,
        block_size: int = 1,
    ) -> None:
        if not isinstance(weight_q, UniformWeight) or weight_q.clip is not None:
            raise ConfigError(f"Quant-Noise needs an unclipped UniformWeight(bits) weight quantizer, got {weight_q!r}")
        super().__init__(weight, bias, weight_q, act_q)
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ConfigError(f"Quant-Noise block_size must be a positive int, got {block_size!r}")
        if self.in_features % block_size:
            raise ConfigError(
                f"Quant-Noise block_size {block_size} does not divide in_features {self.in_features} of a Linear"
            )
        self.p = _check_rate("Quant-Noise rate p", p)
        self.block_size = block_size

    @classmethod
    def from_fake_quant(cls, module: FakeQuantLinear, *, p: float = 1.0, block_size: int = 1) -> QuantNoiseLinear:
        """Wrap ``module``'s own parameters and quantizers (no copy) with Quant-Noise."""
        new = cls(module.weight, module.bias, module.weight_q, module.act_q, p=p, block_size=block_size)
        return new.train(module.training)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., in)`` -> ``(..., out)``."""
        if not self.training or self.p >= 1.0:
            return super().forward(x)
        x = x if self.act_q is None else self.act_q(x)
        q = self.weight_q
        w = quant_noise(self.weight, self.p, bits=q.bits, granularity=q.granularity, block_size=self.block_size)
        return F.linear(x, w, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p:.3f}, block_size={self.block_size}"


def prepare_quant_noise_(model: nn.Module, config: QATConfig, *, p: float = 1.0, block_size: int = 1) -> nn.Module:
    """:func:`prepare_qat_` then swap every :class:`FakeQuantLinear` for a :class:`QuantNoiseLinear` (in place).

    The model ends in QAT state ``PREPARED``, so :func:`~slimformer.quant.convert_qat_` converts it as usual.

    Raises:
        ConfigError: as :func:`prepare_qat_` and :class:`QuantNoiseLinear` (``config.weight`` must be an
            unclipped :class:`UniformWeight`; checked before the model is touched).
        RuntimeError: ``model`` was prepared or converted already.
    """
    if not isinstance(config, QATConfig) or not isinstance(config.weight, UniformWeight) or config.weight.clip:
        got = getattr(config, "weight", config)
        raise ConfigError(f"Quant-Noise needs QATConfig(weight=UniformWeight(bits)) without clip, got {got!r}")
    _check_rate("Quant-Noise rate p", p)
    prepare_qat_(model, config)
    fake = [(n, m) for n, m in model.named_modules() if type(m) is FakeQuantLinear]
    for name, module in fake:
        parent, _, child = name.rpartition(".")
        new = QuantNoiseLinear.from_fake_quant(module, p=p, block_size=block_size)
        setattr(model.get_submodule(parent) if parent else model, child, new)
    return model


def set_noise_rate_(model: nn.Module, p: float) -> int:
    """Set the Quant-Noise rate of every :class:`QuantNoiseLinear` in ``model``; returns how many were set."""
    p = _check_rate("Quant-Noise rate p", p)
    n = 0
    for m in model.modules():
        if isinstance(m, QuantNoiseLinear):
            m.p, n = p, n + 1
    return n


@dataclass(frozen=True)
class QuantNoiseSchedule:
    """Quant-Noise rate per optimizer step: linear from ``start`` to ``end`` over ``ramp`` of training, then ``end``.

    ``p(step) = start + (end - start) · min(1, step / (ramp · total))`` (``ramp = 0``: ``end`` from step 0;
    ``start == end``: constant). OUR CHOICE (METHODS §5(c): the paper's rate is NOT FOUND).

    Args:
        start, end: rates in ``[0, 1]`` (fraction of weight blocks quantized).
        ramp: fraction of the total steps over which ``p`` moves, in ``[0, 1]``.

    Raises:
        ConfigError: a value outside ``[0, 1]``.
    """

    start: float = 0.25
    end: float = 1.0
    ramp: float = 0.5

    def __post_init__(self) -> None:
        for name in ("start", "end", "ramp"):
            _check_rate(f"Quant-Noise schedule {name}", getattr(self, name))

    def __call__(self, step: int, total_steps: int) -> float:
        """The rate for optimizer step ``step`` (0-based) of ``total_steps``."""
        span = self.ramp * max(total_steps, 1)
        frac = 1.0 if span <= 0 else min(1.0, step / span)
        p = self.start + (self.end - self.start) * frac
        return min(1.0, max(0.0, p)) if math.isfinite(p) else self.end


class QuantNoiseCallback(TrainerCallback):
    """Sets every :class:`QuantNoiseLinear`'s rate from a :class:`QuantNoiseSchedule` at each step begin.

    Attributes:
        history: the rate set at each optimizer step, in order (for logs and tests).
    """

    def __init__(self, schedule: QuantNoiseSchedule) -> None:
        self.schedule = schedule
        self.history: list[float] = []

    def on_step_begin(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kw: Any) -> None:
        p = self.schedule(state.global_step, state.max_steps)
        if model is not None:
            set_noise_rate_(model, p)
        self.history.append(p)

    def on_train_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kw: Any) -> None:
        if model is not None:  # evaluation and export see the fully quantized model
            set_noise_rate_(model, 1.0)
