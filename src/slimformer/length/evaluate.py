"""Score a length configuration on a task: the *metric* callable of the evolutionary search.

The search (``slimformer.length.search``) ranks genes (tuples of absolute per-layer lengths) by a cost
(:func:`slimformer.length.flops.cost_fn`) and by a metric; :func:`metric_fn` is that metric for a PyTorch
model: the task's official metric on an evaluation set with the gene applied (Drop-and-Restore for span QA).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from slimformer.evaluate import ExampleScores, Predictor, evaluate_predictor, evaluate_predictor_scores
from slimformer.length.config import LengthConfig
from slimformer.length.selector import forward_with_config
from slimformer.models import SlimModel
from slimformer.tasks.data import TaskData

__all__ = ["config_predictor", "evaluate_config", "evaluate_config_scores", "metric_fn"]


def config_predictor(model: SlimModel, config: LengthConfig | None) -> Predictor:
    """A :data:`~slimformer.evaluate.Predictor` running ``model`` with ``config`` (eval mode, no autograd).

    Returns:
        ``batch -> {"logits": (B, C)}`` or ``{"start_logits", "end_logits": (B, N)}`` numpy arrays.
    """
    model.eval()
    device = next(model.parameters()).device  # e.g. CUDA after a Trainer moved the model there

    def run(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = forward_with_config(
                model, **{k: torch.from_numpy(v).to(device) for k, v in batch.items()}, config=config
            )
        names = ("logits",) if out.logits is not None else ("start_logits", "end_logits")
        return {k: getattr(out, k).float().cpu().numpy() for k in names}

    return run


def evaluate_config(
    model: SlimModel,
    data: TaskData,
    config: LengthConfig | Sequence[int] | None,
    *,
    batch_size: int = 64,
    pad_token_id: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """Official metrics of ``model`` on ``data`` with a length configuration (a gene is taken as lengths).

    Returns:
        ``{metric: value, "main": headline}`` (GLUE fractions, SQuAD EM/F1 points).

    Raises:
        ConfigError: an invalid configuration or one with the wrong number of layers.
    """
    if config is not None and not isinstance(config, LengthConfig):
        config = LengthConfig.from_lengths(config)
    if config is not None:
        config.check_layers(model.num_layers)
    predictor = config_predictor(model, config)
    return evaluate_predictor(predictor, data, batch_size=batch_size, pad_token_id=pad_token_id, progress=progress)


def evaluate_config_scores(
    model: SlimModel,
    data: TaskData,
    config: LengthConfig | None,
    *,
    batch_size: int = 64,
    pad_token_id: int = 0,
) -> tuple[dict[str, float], ExampleScores]:
    """:func:`evaluate_config` plus the per-example results of the main metric (for bootstrap intervals).

    Raises:
        ConfigError: a configuration with the wrong number of layers.
    """
    if config is not None:
        config.check_layers(model.num_layers)
    predictor = config_predictor(model, config)
    return evaluate_predictor_scores(predictor, data, batch_size=batch_size, pad_token_id=pad_token_id, progress=False)


def metric_fn(
    model: SlimModel, data: TaskData, *, batch_size: int = 64, pad_token_id: int = 0
) -> Callable[[Sequence[int]], float]:
    """``gene -> headline metric`` on ``data`` (a gene is a tuple of absolute per-layer lengths)."""

    def metric(gene: Sequence[int]) -> float:
        return evaluate_config(model, data, tuple(gene), batch_size=batch_size, pad_token_id=pad_token_id)["main"]

    return metric
