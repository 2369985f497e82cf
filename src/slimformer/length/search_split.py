"""The *search split*: training examples held out from every training stage, scored by the length search.

METHODS.md §1(f) pitfall 9: the LAT code selects length configurations on the dev set it then reports. Here
the search scores genes on examples of the **training file** (GLUE ``train.tsv``; SQuAD: the train part of the
named article split, or ``train-v1.1.json`` with ``official``) that no capped training stage of the model
used, and final figures are reported on the dev split.

How the training stages pick examples (``slimformer.tasks.data.load_train_features``): with
``max_train_examples = n`` a stage trains on ``random.Random(seed).sample(range(len(train)), n)`` of the
file's examples (before tokenization), the whole file otherwise. Each stage records ``seed`` and
``max_train_examples`` in the model's ``slimformer.json`` (``applied``); :func:`seen_by_training` replays
those draws, and :func:`load_search_split` draws the search split (seeded) from the examples outside
every one of them.

A stage that trained on the whole file (no cap; e.g. the reused SST-2 teacher fine-tuned on all 67,349
sentences) cannot leave anything out: it is reported in :attr:`SearchSplit.overlaps` instead, and the split
is drawn from the examples the *other* (capped) stages did not use. The student's own training
(``distill``, ``length``) must be capped for the split to be held out from it; an empty pool is an error.
A stage can instead train on everything *but* the search split (``hold_out`` of ``distill`` and ``length``): it draws
the split with :func:`search_split_indices`, as the search will, before it trains, and records the indices it
left out (``held_out``); :func:`seen_by_training` counts every other example as seen, so the search's draw
lands on exactly those examples.
SQuAD examples are questions: a held-out question may share its paragraph with a training question.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import slimformer.tasks as tasks
from slimformer.errors import ConfigError
from slimformer.tasks.data import TaskData, _cap, _qa_examples

__all__ = [
    "DEFAULT_MIN_WORDS",
    "SearchSplit",
    "example_words",
    "example_text",
    "indices_digest",
    "context_indices",
    "seen_by_training",
    "search_split_indices",
    "load_search_split",
]

#: The search split's ``min_words`` when a recipe leaves it unset, per task. SST-2's training file is mostly
#: parse-tree phrases (9.4 words on average; 25,152 of its 67,349 examples have at least 10 words) while its dev
#: set holds whole review sentences (19.5 words; 749 of 872 have at least 10): a search scored on phrases, which
#: barely lose anything when tokens are dropped, misjudges what a configuration costs on sentences.
DEFAULT_MIN_WORDS = {"sst2": 10}


@dataclass
class SearchSplit:
    """A held-out search split and where it came from.

    Attributes:
        data: the features and examples (``split == "search"``), scored like an evaluation set.
        indices: positions of its examples in the training file's example list (sorted).
        pool: number of training examples no capped training stage used (the split is drawn from them).
        overlaps: stages that trained on the whole file, so also on the search split (e.g. ``["finetune"]``).
    """

    data: TaskData
    indices: list[int]
    pool: int
    overlaps: list[str] = field(default_factory=list)
    min_words: int | None = None
    source: str = "search (held out from the training file)"

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary (what a results file states about the split)."""
        return {
            "split": self.source,
            "examples": len(self.indices),
            "features": len(self.data.features),
            "pool": self.pool,
            "seen_by_uncapped_stages": self.overlaps,
            "indices_sha256": indices_digest(self.indices),
            **({"min_words": self.min_words} if self.min_words else {}),
        }


def indices_digest(indices: Iterable[int]) -> str:
    """SHA-256 (hex) of the sorted training-file indices of a split: two searches scored the same examples iff equal.

    Two searches can draw the same examples from pools of different sizes: a ``length`` stage with ``hold_out`` leaves
    only its held-out examples unseen (its pool is the split itself), while its truncation twin, without that stage,
    draws the same seeded sample from the larger pool the hold-out was drawn from.
    """
    return hashlib.sha256(",".join(str(i) for i in sorted(indices)).encode()).hexdigest()


def example_words(example: Any) -> int:
    """Whitespace-separated words of an example's input text: GLUE ``text_a`` (+ ``text_b``), SQuAD the question."""
    if hasattr(example, "question"):
        return len(example.question.split())
    return len(example.text_a.split()) + len((example.text_b or "").split())


def seen_by_training(
    num_examples: int, records: Iterable[Mapping[str, Any]], *, training_stages: Collection[str]
) -> tuple[set[int], list[str]]:
    """Indices of the training file used by capped training stages, and the stages that used all of it.

    Args:
        num_examples: examples in the training file.
        records: ``slimformer.json`` ``applied`` records, oldest first. A record with ``held_out`` (indices of
            the file the stage left out: its ``hold_out``) used every other example.
        training_stages: names of the stages that train on the task's training file (the recipe layer passes
            :func:`slimformer.stages.training_stages`); a record of another stage counts only if it has a cap.

    Returns:
        ``(seen, overlaps)``: the union of every capped stage's sample (replayed with its ``seed``) and of every
        holding-out stage's complement, and the names of the stages without a cap (or a cap at least the file size).
    """
    seen: set[int] = set()
    overlaps: list[str] = []
    everything = list(range(num_examples))
    for rec in records:
        stage = rec.get("stage")
        if stage not in training_stages and "max_train_examples" not in rec:
            continue
        cap = rec.get("max_train_examples")
        if rec.get("held_out"):
            held = set(rec["held_out"])
            seen.update(i for i in everything if i not in held)
        elif cap is None or cap >= num_examples:
            overlaps.append(str(stage))
        else:
            seen.update(_cap(everything, int(cap), int(rec.get("seed", 42))))
    return seen, overlaps


def _draw(
    examples: list[Any],
    records: Iterable[Mapping[str, Any]],
    training_stages: Collection[str],
    num_examples: int,
    seed: int,
    min_words: int | None,
) -> tuple[list[int], int, list[str]]:
    seen, overlaps = seen_by_training(len(examples), records, training_stages=training_stages)
    pool = [i for i in range(len(examples)) if i not in seen]
    if min_words:
        pool = [i for i in pool if example_words(examples[i]) >= min_words]
    if len(pool) < num_examples:
        longer = f" with at least {min_words} words" if min_words else ""
        raise ConfigError(
            f"search_examples={num_examples} but only {len(pool)} of the {len(examples)} training examples{longer} "
            "were not used by a training stage; lower search_examples, search_min_words or max_train_examples of the "
            "training stages"
        )
    return sorted(random.Random(seed).sample(pool, num_examples)), len(pool), overlaps


def _train_examples(spec: Any, data: Path, squad_split: str) -> list[Any]:
    return _qa_examples(spec, data, "train", squad_split) if spec.kind == "qa" else tasks.read_glue(spec, data, "train")


def example_text(example: Any) -> str:
    """A GLUE example's input text as whitespace-normalized words: ``text_a``, then ``text_b`` when it has one."""
    return " ".join((example.text_a + " " + (example.text_b or "")).split())


def context_indices(
    task: str, data: Path, held: Collection[int], *, squad_split: str = "dev-article-split"
) -> list[int]:
    """Training examples that share their context with a held-out one (``hold_out_context``): left out of training too.

    GLUE: examples whose text lies word for word inside a held-out example's text, or contains one (SST-2's training
    file holds the parse-tree phrases of its sentences: a held-out phrase's sub-phrases and its parent sentence).
    SQuAD: the other questions on a held-out question's paragraph. Texts are compared as whitespace-split words
    (``text_a`` then ``text_b``); exact duplicates of a held-out text count as containing it.

    Work: the held-out texts' sub-spans (``n(n+1)/2`` each for ``n`` words) and, per training example of ``m``
    words, one lookup per span whose length is a held-out text's length (at most ``m`` per length).

    Returns:
        Sorted training-file indices, disjoint from ``held``.

    Raises:
        ConfigError: an unknown task or split. DataError: missing data files.
    """
    spec = tasks.get_task(task)
    examples = _train_examples(spec, data, squad_split)
    held_set = set(held)
    if spec.kind == "qa":
        contexts = {examples[i].context for i in held_set}
        return [i for i, e in enumerate(examples) if i not in held_set and e.context in contexts]
    held_texts = {example_text(examples[i]) for i in held_set}
    inside: set[str] = set()  # every contiguous run of words of a held-out text
    for t in held_texts:
        w = t.split()
        inside.update(" ".join(w[a:b]) for a in range(len(w)) for b in range(a + 1, len(w) + 1))
    lengths = sorted({len(t.split()) for t in held_texts})
    related = []
    for i, e in enumerate(examples):
        if i in held_set:
            continue
        text = example_text(e)
        if text in inside:
            related.append(i)
            continue
        w = text.split()
        if any(" ".join(w[a : a + n]) in held_texts for n in lengths if n <= len(w) for a in range(len(w) - n + 1)):
            related.append(i)
    return related


def search_split_indices(
    task: str,
    data: Path,
    *,
    records: Iterable[Mapping[str, Any]],
    training_stages: Collection[str],
    num_examples: int,
    seed: int,
    squad_split: str = "dev-article-split",
    min_words: int | None = None,
) -> list[int]:
    """The training-file indices :func:`load_search_split` would draw with the same arguments (no tokenization).

    A training stage that holds the search split out (its ``hold_out``) calls this before it trains, with the
    records of the stages before it, and trains on every other example.

    Returns:
        Sorted indices into the training file's example list (SQuAD: its questions).

    Raises:
        ConfigError: fewer than ``num_examples`` unused training examples (names both counts), or an unknown
            task / split. DataError: missing data files.
    """
    spec = tasks.get_task(task)
    examples = _train_examples(spec, data, squad_split)
    return _draw(examples, records, training_stages, num_examples, seed, min_words)[0]


def load_search_split(
    task: str,
    data: Path,
    tokenizer: Any,
    *,
    records: Iterable[Mapping[str, Any]],
    training_stages: Collection[str],
    num_examples: int,
    seed: int,
    max_seq_length: int,
    squad_split: str = "dev-article-split",
    doc_stride: int = 128,
    min_words: int | None = None,
) -> SearchSplit:
    """``num_examples`` training examples that no capped training stage in ``records`` used (seeded draw).

    ``min_words`` keeps only examples of at least that many words (:func:`example_words`) in the pool. SST-2's
    training file is mostly sub-sentence phrases (9.4 words on average) while its dev set holds whole sentences
    (19.5 words): a search scored on phrases underestimates what dropping tokens costs on the report split.

    Args:
        task: task name. data: the task's data folder (GLUE) or SQuAD file/folder.
        tokenizer: the model's tokenizer. records: the model's ``applied`` history.
        training_stages: as in :func:`seen_by_training`.
        num_examples: size of the split (examples; SQuAD questions, each one or more windows).
        seed: seed of the draw. max_seq_length, squad_split, doc_stride: as in training.
        min_words: shortest example kept in the pool (words), or ``None`` for all.

    Returns:
        A :class:`SearchSplit` whose ``data`` has evaluation features (GLUE labels; SQuAD offsets).

    Raises:
        ConfigError: fewer than ``num_examples`` unused training examples (names both counts), or an
            unknown task / split. DataError: missing data files.
    """
    spec = tasks.get_task(task)
    examples = _train_examples(spec, data, squad_split)
    indices, pool, overlaps = _draw(examples, records, training_stages, num_examples, seed, min_words)
    chosen = [examples[i] for i in indices]
    if spec.kind == "qa":
        feats = tasks.prepare_eval_features(chosen, tokenizer, max_seq_length=max_seq_length, doc_stride=doc_stride)
    else:
        feats = tasks.encode_glue(chosen, spec, tokenizer, max_seq_length)
    return SearchSplit(TaskData(spec, feats, chosen, "search"), indices, pool, overlaps, min_words or None)
