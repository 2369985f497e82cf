"""Distillation losses as plain functions of captured encoder internals (METHODS.md §1, §2, §4, §5).

Each function takes tensors from :class:`slimformer.models.EncoderOutput` (captured with
:class:`slimformer.models.Capture`) for the student and the teacher. Teacher tensors are detached
inside every function, so the teacher may be passed with ``requires_grad`` and only the student
receives gradients. Layer-wise losses take a list with one tensor per layer (a single tensor counts
as one layer) and are *summed* over layers, as in the KD-QAT code (§4(b)).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from slimformer.distill._common import Logits
from slimformer.distill.kl import kl_div
from slimformer.distill.layerwise import (
    attention_map_kl,
    attention_output_mse,
    attention_score_mse,
    context_mse,
    hidden_mse,
    sdq_attention_kl,
    unified_attention_loss,
    unified_attention_loss_from_outputs,
)
from slimformer.distill.minilm import minilm_attention_kl, minilm_value_relation_kl
from slimformer.distill.prediction import logits_kd, logits_mse, prediction_loss, soft_cross_entropy

__all__ = [
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


#: Name → loss function, for recipes.
LOSSES: dict[str, Callable[..., Tensor]] = {
    "kl_div": kl_div,
    "logits_kd": logits_kd,
    "soft_cross_entropy": soft_cross_entropy,
    "logits_mse": logits_mse,
    "prediction": prediction_loss,
    "hidden_mse": hidden_mse,
    "attention_score_mse": attention_score_mse,
    "attention_map_kl": attention_map_kl,
    "sdq_attention_kl": sdq_attention_kl,
    "attention_output_mse": attention_output_mse,
    "context_mse": context_mse,
    "unified_attention": unified_attention_loss,
    "unified_attention_from_outputs": unified_attention_loss_from_outputs,
    "minilm_attention_kl": minilm_attention_kl,
    "minilm_value_relation_kl": minilm_value_relation_kl,
}
