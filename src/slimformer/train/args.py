"""The Hugging Face ``TrainingArguments`` every slimformer training stage uses (CPU-first, no reporting)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slimformer import dist

__all__ = ["training_arguments"]


def training_arguments(config: Any, output_dir: str | Path, *, checkpoints: bool = False, **overrides: Any) -> Any:
    """``TrainingArguments`` from a stage config with the training-budget fields of ``FinetuneConfig``.

    ``batch_size`` is the global batch: on ``P`` processes (``accelerate launch``) each takes ``batch_size / P``
    rows of every step (:func:`slimformer.dist.per_process_batch`), so the recipe trains the same at any scale.
    Linear schedule, ``warmup_ratio`` as a fraction of the total steps (transformers 5: a float ``< 1`` passed as
    ``warmup_steps``), no evaluation during training, no logging integrations, CPU unless CUDA is present, the
    dataset columns kept (our collators need them).

    Args:
        config: a stage config with ``batch_size``, ``epochs``, ``max_steps``, ``learning_rate``, ``warmup_ratio``,
            ``weight_decay``, ``seed``, ``logging_steps`` (and ``save_steps`` / ``save_total_limit`` /
            ``eval_batch_size`` when present).
        output_dir: the Trainer's working folder (checkpoints when ``checkpoints``).
        checkpoints: save a checkpoint every ``config.save_steps`` optimizer steps (for resuming), else none.
        overrides: any further ``TrainingArguments`` field.

    Returns:
        A ``transformers.TrainingArguments``.

    Raises:
        ConfigError: ``batch_size`` is not a multiple of the number of processes.
    """
    import torch
    from transformers import TrainingArguments

    dist.init()  # several processes: join the group first (gloo on CPU; see slimformer.dist)
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=dist.per_process_batch(config.batch_size),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        lr_scheduler_type="linear",
        seed=config.seed,
        logging_steps=config.logging_steps,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        remove_unused_columns=False,
        ddp_timeout=int(dist.WAIT.total_seconds()),
    )
    if hasattr(config, "eval_batch_size"):
        kwargs["per_device_eval_batch_size"] = config.eval_batch_size
    if checkpoints:
        kwargs.update(save_strategy="steps", save_steps=config.save_steps, save_total_limit=config.save_total_limit)
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)
