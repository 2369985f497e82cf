"""``hold_out``: a student's training stage leaves out the length search's split (``distill`` and ``length``).

The search scores configurations on training examples no capped training stage used
(:mod:`slimformer.length.search_split`). A stage that trains on the whole file would have seen them; with
``hold_out: N`` it draws the split the search will draw (:func:`~slimformer.length.search_split.search_split_indices`:
the model's records so far, the stage's seed, ``search_min_words``' default for the task), trains on every other
example and records the indices (``held_out`` in ``slimformer.json``), so the search lands on exactly those
examples. docs/length-search.md, "Held out from the student too".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from slimformer.config import IDENTITY_WHEN_SET, StageConfig
from slimformer.errors import ConfigError
from slimformer.length.search_split import DEFAULT_MIN_WORDS, search_split_indices
from slimformer.stages.base import training_stages

__all__ = ["HoldOutOptions", "held_out_indices"]


class HoldOutOptions(StageConfig):
    """``hold_out`` / ``hold_out_min_words`` of a training stage (mixed into its config, after its base)."""

    hold_out: int | None = Field(
        None,
        ge=1,
        description="train on every training example but this many, the length search's split drawn as the search "
        "draws it (seed, search_min_words), so that the search scores examples the student never trained on; null: "
        "no hold-out (max_train_examples caps instead)",
        json_schema_extra={IDENTITY_WHEN_SET: True},
    )
    hold_out_min_words: int | None = Field(
        None,
        ge=0,
        description="the held-out examples' minimum words, as the search's search_min_words (null: the task's "
        "default, 10 for sst2; 0: all examples)",
        json_schema_extra={IDENTITY_WHEN_SET: True},
    )

    @model_validator(mode="after")
    def _one_way_to_leave_examples_out(self) -> HoldOutOptions:
        cap = getattr(self, "max_train_examples", None)
        if self.hold_out is not None and cap is not None:
            raise ConfigError(
                f"give hold_out ({self.hold_out}) or max_train_examples ({cap}), not both "
                "(a capped stage already leaves the rest of the training file to the search)"
            )
        return self


def held_out_indices(
    config: Any, task: str, data: Path, applied: list[dict[str, Any]], *, squad_split: str = "dev-article-split"
) -> list[int] | None:
    """The training-file indices ``config.hold_out`` leaves out: the search split the ``search`` stage (same seed)
    will draw from a model whose records are ``applied`` plus this stage's; ``None`` without ``hold_out``.

    Raises:
        ConfigError: fewer unused training examples than ``hold_out`` (names both counts).
    """
    if getattr(config, "hold_out", None) is None:
        return None
    words = DEFAULT_MIN_WORDS.get(task) if config.hold_out_min_words is None else config.hold_out_min_words
    return search_split_indices(
        task,
        data,
        records=applied,
        training_stages=training_stages(),
        num_examples=config.hold_out,
        seed=config.seed,
        squad_split=squad_split,
        min_words=words or None,
    )
