"""SQuAD feature creation: question + sliding context windows, with answer token positions.

Each example becomes one or more features ``[CLS] question [SEP] context-window [SEP]`` (BERT; RoBERTa uses
its own special tokens and has no ``token_type_ids``). Long contexts are split into windows with
``truncation="only_second"`` and ``return_overflowing_tokens``, as in Devlin et al., 2019
(https://arxiv.org/abs/1810.04805, Sec. 4.2) and transformers' ``run_qa.py``. Needs a fast tokenizer
(offset mappings and ``sequence_ids``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from slimformer.errors import ConfigError, DataError
from slimformer.tasks.squad import QAExample

__all__ = ["prepare_train_features", "prepare_eval_features"]

_MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def _check(tokenizer: Any, max_seq_length: int, doc_stride: int, max_query_length: int) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("SQuAD features need a fast tokenizer (offset mappings); use_fast=True")
    room = max_seq_length - max_query_length - tokenizer.num_special_tokens_to_add(pair=True)
    if not 0 <= doc_stride < room:
        raise ConfigError(
            f"doc_stride={doc_stride} must be >= 0 and below max_seq_length - max_query_length - special "
            f"tokens = {room} (max_seq_length={max_seq_length}, max_query_length={max_query_length})"
        )


def _encode(
    examples: Sequence[QAExample], tokenizer: Any, max_seq_length: int, doc_stride: int, max_query_length: int
) -> Any:
    """Tokenize (question, context) pairs into overlapping windows; returns the BatchEncoding."""
    _check(tokenizer, max_seq_length, doc_stride, max_query_length)
    # Leading blanks in some questions would only waste window room (transformers' run_qa strips them too).
    questions = [ex.question.lstrip() for ex in examples]
    q_offsets = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    # Cut long questions after their max_query_length-th token (BERT's max_query_length).
    questions = [
        q[: offs[max_query_length - 1][1]] if len(offs) > max_query_length else q
        for q, offs in zip(questions, q_offsets)
    ]
    return tokenizer(
        questions,
        [ex.context for ex in examples],
        truncation="only_second",
        max_length=max_seq_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )


def _context_span(sequence_ids: list[int | None]) -> tuple[int, int]:
    """First and last token index of the context (sequence id 1)."""
    first = sequence_ids.index(1)
    last = len(sequence_ids) - 1 - sequence_ids[::-1].index(1)
    return first, last


def prepare_train_features(
    examples: Sequence[QAExample],
    tokenizer: Any,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
) -> list[dict[str, Any]]:
    """Training features with the token positions of the first answer.

    Args:
        examples: questions with at least one answer each.
        tokenizer: a fast Hugging Face tokenizer.
        max_seq_length: window length in tokens, special tokens included.
        doc_stride: tokens of context shared by consecutive windows (transformers' ``stride``; note that the
            original BERT ``doc_stride`` was the step between window starts instead).
        max_query_length: questions longer than this many tokens are cut.

    Returns:
        One dict per window: ``input_ids``, ``attention_mask``, ``token_type_ids`` (if the tokenizer makes
        them), each a list of ``<= max_seq_length`` ints, and ``start_positions`` / ``end_positions``: token
        indices of the first and last answer token (inclusive), or both the ``[CLS]`` index (0) when the
        answer is not entirely inside the window.

    Raises:
        ConfigError: slow tokenizer, or ``doc_stride`` too large for the window.
        DataError: an example has no answer.
    """
    for ex in examples:
        if not ex.answers:
            raise DataError(f"SQuAD question {ex.id} has no answer; training features need one")
    enc = _encode(examples, tokenizer, max_seq_length, doc_stride, max_query_length)
    keys = [k for k in _MODEL_KEYS if k in enc]
    features = []
    for i, sample in enumerate(enc["overflow_to_sample_mapping"]):
        ids = enc["input_ids"][i]
        offsets = enc["offset_mapping"][i]
        cls = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
        text, start_char = examples[sample].answers[0]
        end_char = start_char + len(text)  # exclusive
        first, last = _context_span(enc.sequence_ids(i))
        start_tok = end_tok = cls
        if offsets[first][0] <= start_char and offsets[last][1] >= end_char:
            start_tok = first
            while start_tok <= last and offsets[start_tok][0] <= start_char:
                start_tok += 1
            start_tok -= 1  # last token starting at or before the answer start
            end_tok = last
            while end_tok >= first and offsets[end_tok][1] >= end_char:
                end_tok -= 1
            end_tok += 1  # first token ending at or after the answer end
        feat = {k: enc[k][i] for k in keys}
        feat["start_positions"] = start_tok
        feat["end_positions"] = end_tok
        features.append(feat)
    return features


def prepare_eval_features(
    examples: Sequence[QAExample],
    tokenizer: Any,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
) -> list[dict[str, Any]]:
    """Evaluation features that remember their example and the character span of each context token.

    Args: as :func:`prepare_train_features` (answers are not needed).

    Returns:
        One dict per window: the model inputs (as in :func:`prepare_train_features`), ``example_id`` (the
        question id) and ``offset_mapping``: per token, ``(char_start, char_end)`` into the context, or
        ``None`` for question and special tokens. Drop ``example_id`` and ``offset_mapping`` before
        collating a batch; :func:`postprocess_qa_predictions` uses them.

    Raises:
        ConfigError: slow tokenizer, or ``doc_stride`` too large for the window.
    """
    enc = _encode(examples, tokenizer, max_seq_length, doc_stride, max_query_length)
    keys = [k for k in _MODEL_KEYS if k in enc]
    features = []
    for i, sample in enumerate(enc["overflow_to_sample_mapping"]):
        seq_ids = enc.sequence_ids(i)
        feat = {k: enc[k][i] for k in keys}
        feat["example_id"] = examples[sample].id
        feat["offset_mapping"] = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][i], seq_ids)]
        features.append(feat)
    return features
