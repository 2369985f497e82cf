"""Distillation losses (METHODS.md §1, §2, §4, §5, §6) as plain functions of captured encoder internals.

See :mod:`slimformer.distill.kl` for the KL helpers (explicit direction / mask / reduction) and
:mod:`slimformer.distill.losses` for the losses and the :data:`LOSSES` registry.
"""

from slimformer.distill.kl import DIRECTIONS, REDUCTIONS, Direction, Reduction, kl_div
from slimformer.distill.losses import (
    LOSSES,
    Logits,
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
    sdq_attention_kl,
    soft_cross_entropy,
    unified_attention_loss,
    unified_attention_loss_from_outputs,
)

__all__ = [
    "DIRECTIONS",
    "REDUCTIONS",
    "Direction",
    "Reduction",
    "kl_div",
    "LOSSES",
    "Logits",
    "attention_map_kl",
    "attention_output_mse",
    "attention_score_mse",
    "context_mse",
    "hidden_mse",
    "logits_kd",
    "logits_mse",
    "minilm_attention_kl",
    "minilm_value_relation_kl",
    "prediction_loss",
    "sdq_attention_kl",
    "soft_cross_entropy",
    "unified_attention_loss",
    "unified_attention_loss_from_outputs",
]
