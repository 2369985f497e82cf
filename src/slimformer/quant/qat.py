"""Low-bit quantization-aware training in two phases: :func:`prepare_qat_` then :func:`convert_qat_`.

Paper: Kim et al., EMNLP 2022 (KD-QAT, arXiv:2211.11014) on top of TernaryBERT (arXiv:2009.12812); METHODS §4(b).

* ``prepare_qat_(model, config)`` swaps, in place, every ``nn.Linear`` inside the encoder layers (Q, K, V,
  attention-output dense, FFN-in, FFN-out: 6 per layer) and the pooler's dense layer (when the model has one and
  ``config.quantize_pooler``; KD-QAT quantizes it, METHODS §4(f) pitfall 8) for a
  :class:`~slimformer.quant.modules.FakeQuantLinear`. The task head (classifier, QA outputs) stays fp32.
* ``convert_qat_(model)`` replaces each ``FakeQuantLinear`` by a :class:`~slimformer.quant.modules.QuantizedLinear`
  (int8 codes + scales); in eval mode its outputs equal the prepared model's bitwise.

The lifecycle (:class:`QuantizationState`) is recorded on the model as the attribute ``slimformer_qat_state``
(read it with :func:`qat_state`); an illegal transition raises ``RuntimeError`` naming both states.
Not quantized here (yet): the Q/K/attention-probability/V activations inside ``QKᵀ`` and ``A·V``, embeddings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from torch import nn

from slimformer.errors import ConfigError
from slimformer.quant.embedding import FakeQuantEmbedding
from slimformer.quant.granularity import PerGroup, PerRow
from slimformer.quant.modules import (
    ActivationQuantizer,
    BinaryWeight,
    FakeQuantLinear,
    QuantizedLinear,
    TernaryWeight,
    UniformWeight,
    WeightQuantizer,
)

__all__ = ["QuantizationState", "QATConfig", "prepare_qat_", "convert_qat_", "qat_state", "qat_targets"]

_STATE_ATTR = "slimformer_qat_state"

#: ``filter_fn(module, fqn) -> bool``: keep (True) or skip (False) a candidate Linear, ``fqn`` relative to model.
FilterFn = Callable[[nn.Module, str], bool]


class QuantizationState(str, Enum):
    """Where a model is in the QAT lifecycle: ``INITIALIZED -> PREPARED -> CONVERTED``."""

    INITIALIZED = "INITIALIZED"  # fp32 model, never prepared
    PREPARED = "PREPARED"  # encoder Linears are FakeQuantLinear (trainable)
    CONVERTED = "CONVERTED"  # encoder Linears are QuantizedLinear (deployable)


@dataclass(frozen=True)
class QATConfig:
    """What :func:`prepare_qat_` quantizes and how.

    Args:
        weight: Weight quantizer value; default ternary TWN with clip 2.5 (TernaryBERT / KD-QAT ``weight_bits=2``).
        activation: Input quantizer of every swapped Linear (default 8-bit dynamic max-abs, no clip), or None for
            weight-only QAT.
        quantize_pooler: Also quantize the pooler's dense layer when the model has one (BERT); KD-QAT does.
        filter_fn: Optional ``filter_fn(linear, fqn) -> bool`` restricting the candidate Linears further.
        embedding: Optional quantizer of the word-embedding table, trained through it
            (:class:`~slimformer.quant.embedding.FakeQuantEmbedding`; row-local granularity, e.g.
            ``UniformWeight(4, PerRow())`` or ``TernaryWeight(PerRow())`` as TernaryBERT); None keeps it fp32.

    Raises:
        ConfigError: ``weight`` / ``activation`` / ``embedding`` is not a quantizer value object (``embedding``:
            or not row-local), or ``filter_fn`` not callable.
    """

    weight: WeightQuantizer = field(default_factory=TernaryWeight)
    activation: ActivationQuantizer | None = field(default_factory=ActivationQuantizer)
    quantize_pooler: bool = True
    filter_fn: FilterFn | None = None
    embedding: WeightQuantizer | None = None

    def __post_init__(self) -> None:
        if self.embedding is not None and (
            not isinstance(self.embedding, (UniformWeight, TernaryWeight, BinaryWeight))
            or not isinstance(self.embedding.granularity, (PerRow, PerGroup))
        ):
            raise ConfigError(
                f"QATConfig embedding must be a weight quantizer with PerRow() or PerGroup(n) granularity, "
                f"got {self.embedding!r}"
            )
        if not isinstance(self.weight, (UniformWeight, TernaryWeight, BinaryWeight)):
            raise ConfigError(
                f"QATConfig weight must be UniformWeight(...), TernaryWeight(...) or BinaryWeight(...), "
                f"got {self.weight!r}"
            )
        if self.activation is not None and not isinstance(self.activation, ActivationQuantizer):
            raise ConfigError(f"QATConfig activation must be ActivationQuantizer(...) or None, got {self.activation!r}")
        if self.filter_fn is not None and not callable(self.filter_fn):
            raise ConfigError(f"QATConfig filter_fn must be callable or None, got {self.filter_fn!r}")


def qat_state(model: nn.Module) -> QuantizationState:
    """The QAT lifecycle state recorded on ``model`` (``INITIALIZED`` when none was recorded)."""
    return getattr(model, _STATE_ATTR, QuantizationState.INITIALIZED)


def _require(model: nn.Module, action: str, expected: QuantizationState) -> None:
    state = qat_state(model)
    if state is not expected:
        raise RuntimeError(f"cannot {action} a model in QAT state {state.value}; {action} needs state {expected.value}")


def _base(model: nn.Module) -> nn.Module:
    """The HF base model (has ``.encoder.layer``) of a SlimModel, an HF task model or a base model."""
    for candidate in (getattr(model, "base", None), getattr(model, "base_model", None), model):
        if isinstance(candidate, nn.Module) and hasattr(getattr(candidate, "encoder", None), "layer"):
            return candidate
    raise ConfigError(f"QAT needs a BERT-family model with .encoder.layer, got {type(model).__name__}")


def qat_targets(model: nn.Module, config: QATConfig) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` modules :func:`prepare_qat_` would swap, by fully qualified name relative to ``model``.

    Returns:
        ``{fqn: linear}`` in module order: 6 per encoder layer (+ the pooler dense if present and enabled).

    Raises:
        ConfigError: ``model`` has no ``.encoder.layer``.
    """
    base = _base(model)
    scopes: list[nn.Module] = list(base.encoder.layer)
    pooler = getattr(base, "pooler", None)
    if config.quantize_pooler and pooler is not None:
        scopes.append(pooler)
    wanted = {id(m) for scope in scopes for m in scope.modules() if type(m) is nn.Linear}
    return {
        name: m
        for name, m in model.named_modules()
        if id(m) in wanted and (config.filter_fn is None or config.filter_fn(m, name))
    }


def _swap(model: nn.Module, fqn: str, new: nn.Module) -> None:
    parent_name, _, child = fqn.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def prepare_qat_(model: nn.Module, config: QATConfig) -> nn.Module:
    """Swap the encoder's Linears for :class:`FakeQuantLinear` in place (INITIALIZED -> PREPARED).

    The swapped modules share the original ``weight`` / ``bias`` parameters, so parameter names, state-dict keys
    and an existing optimizer's parameter list stay valid.

    Args:
        model: A :class:`~slimformer.models.SlimModel` (or HF BERT-family model).
        config: The :class:`QATConfig`.

    Returns:
        ``model`` (modified in place).

    Raises:
        ConfigError: ``config`` is not a QATConfig, or no Linear matched.
        RuntimeError: ``model`` is not in state INITIALIZED (prepared or converted already).
    """
    if not isinstance(config, QATConfig):
        raise ConfigError(f"prepare_qat_ needs a QATConfig, got {config!r}")
    _require(model, "prepare", QuantizationState.INITIALIZED)
    targets = qat_targets(model, config)
    if not targets:
        raise ConfigError("prepare_qat_ found no nn.Linear to quantize (check QATConfig.filter_fn)")
    for fqn, linear in targets.items():
        _swap(model, fqn, FakeQuantLinear.from_linear(linear, config.weight, config.activation))
    if config.embedding is not None:
        emb = _base(model).embeddings
        emb.word_embeddings = FakeQuantEmbedding.from_embedding(emb.word_embeddings, config.embedding)
    setattr(model, _STATE_ATTR, QuantizationState.PREPARED)
    return model


def convert_qat_(model: nn.Module) -> nn.Module:
    """Replace every :class:`FakeQuantLinear` by a :class:`QuantizedLinear` in place (PREPARED -> CONVERTED).

    Args:
        model: A model returned by :func:`prepare_qat_` (after training).

    Returns:
        ``model`` (modified in place); in eval mode its outputs equal the prepared model's exactly.

    Raises:
        RuntimeError: ``model`` is not in state PREPARED (never prepared, or converted already).
    """
    _require(model, "convert", QuantizationState.PREPARED)
    fake = [(name, m) for name, m in model.named_modules() if isinstance(m, FakeQuantLinear)]
    for fqn, module in fake:
        _swap(model, fqn, QuantizedLinear.from_fake_quant(module))
    emb = _base(model).embeddings
    if isinstance(emb.word_embeddings, FakeQuantEmbedding):
        emb.word_embeddings = emb.word_embeddings.to_quantized()
    setattr(model, _STATE_ATTR, QuantizationState.CONVERTED)
    return model
