"""The training options every training stage shares (``finetune``, ``distill``, ``qat``, ``sdq``, ``length``).

One base class, so an option is written once and means the same everywhere. A stage subclass only restates a
field to change its default (e.g. the learning rate of distillation) and adds its own options.

Run-control fields (:data:`~slimformer.config.RUN_CONTROL`: the checkpoint cadence, the per-epoch evaluation) steer
how a stage runs, not what it produces: changing them neither reruns a finished stage nor restarts an interrupted
one, in every stage.
"""

from __future__ import annotations

from pydantic import Field

from slimformer.config import RUN_CONTROL, StageConfig

__all__ = ["TrainingOptions"]


class TrainingOptions(StageConfig):
    """Task, data and training budget of a stage that trains a model with the Hugging Face Trainer.

    Attributes (units): ``epochs`` (passes over the training features), ``max_steps`` (optimizer steps; -1: use
    epochs), ``batch_size`` / ``eval_batch_size`` (sequences), ``warmup_ratio`` (fraction of total steps),
    ``max_seq_length`` (tokens), ``save_steps`` (optimizer steps between checkpoints). ``eval_each_epoch``: score
    the dev set after every epoch but the last for the stage's ``learning_curve`` (:mod:`slimformer.train.curves`).
    """

    task: str = Field(..., description="task name: cola sst2 mrpc stsb qqp mnli qnli rte wnli squad")
    data: str = Field(..., description="task data folder (GLUE) or SQuAD json; relative to the data root")
    seed: int = Field(42)
    max_seq_length: int | None = Field(None, gt=8, le=4096, description="tokens per sequence (default: the model's)")
    epochs: float = Field(3.0, gt=0, description="training epochs")
    max_steps: int = Field(-1, description="stop after this many optimizer steps (-1: use epochs)")
    learning_rate: float = Field(5e-5, gt=0, lt=1)
    batch_size: int = Field(32, ge=1, description="training batch size (sequences)")
    eval_batch_size: int = Field(64, ge=1)
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="linear warm-up, fraction of total steps")
    weight_decay: float = Field(0.01, ge=0)
    max_train_examples: int | None = Field(
        None, ge=1, description="cap on training examples (first N after a seeded shuffle)"
    )
    max_eval_examples: int | None = Field(None, ge=1, description="cap on evaluation examples (None: full split)")
    logging_steps: int = Field(50, ge=1)
    save_steps: int = Field(
        200, ge=1, description="checkpoint every N optimizer steps (resume)", json_schema_extra={RUN_CONTROL: True}
    )
    save_total_limit: int = Field(2, ge=1, description="checkpoints kept", json_schema_extra={RUN_CONTROL: True})
    eval_each_epoch: bool = Field(
        True,
        description="score the dev set after each epoch (learning_curve); false: only the final evaluation",
        json_schema_extra={RUN_CONTROL: True},
    )
    threads: int | None = Field(None, ge=1, description="torch threads (default: all cores)")
