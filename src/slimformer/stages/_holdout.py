"""``hold_out``: a student's training stage leaves out the length search's split (``distill`` and ``length``).

The search scores configurations on training examples no capped training stage used
(:mod:`slimformer.length.search_split`). A stage that trains on the whole file would have seen them; with
``hold_out: N`` it draws the split the search will draw (:func:`~slimformer.length.search_split.search_split_indices`:
the model's records so far, the stage's seed, ``search_min_words``' default for the task), trains on every other
example and records the indices (``held_out`` in ``slimformer.json``), so the search lands on exactly those
examples. docs/length-search.md, "Held out from the student too".

``hold_out_context: true`` also leaves out the training examples that share their context with a held-out one
(:func:`~slimformer.length.search_split.context_indices`: SST-2 phrases inside a held-out phrase or containing it,
SQuAD questions on a held-out question's paragraph). The stage records how many (``held_out_context``: count and
SHA-256 of the indices); they are not part of the split, so the search's draw is unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from slimformer.config import IDENTITY_WHEN_SET, StageConfig
from slimformer.errors import ConfigError
from slimformer.length.search_split import DEFAULT_MIN_WORDS, context_indices, indices_digest, search_split_indices
from slimformer.stages.base import training_stages

__all__ = ["HoldOutOptions", "held_out_context", "held_out_indices"]


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
    hold_out_context: bool = Field(
        False,
        description="also leave out the training examples that share their context with a held-out one: texts "
        "inside a held-out text or containing it (SST-2's phrases of a held-out sentence), SQuAD questions on a "
        "held-out question's paragraph; the search then scores examples whose context the student never read",
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
        if self.hold_out_context and self.hold_out is None:
            raise ConfigError("hold_out_context: true needs hold_out: N (the examples whose context is left out)")
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


def held_out_context(
    config: Any, task: str, data: Path, held: list[int] | None, *, squad_split: str = "dev-article-split"
) -> tuple[list[int], dict[str, Any] | None]:
    """The training examples ``config.hold_out_context`` leaves out beside ``held``, and the record of them.

    Returns:
        ``(indices, record)``: sorted training-file indices disjoint from ``held`` and ``{"examples", "sha256"}``
        for ``slimformer.json``; ``([], None)`` without ``hold_out_context``.
    """
    if not getattr(config, "hold_out_context", False) or held is None:
        return [], None
    related = context_indices(task, data, held, squad_split=squad_split)
    return related, {"examples": len(related), "sha256": indices_digest(related)}
