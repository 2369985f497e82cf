"""Zero-shot masked-LM perplexity with a substituted token-embedding table (METHODS.md §3(d)1, (f)2).

Protocol of Bałazy et al. (https://arxiv.org/abs/2106.08181), adapted (OUR CHOICE, §3(d)3): WikiText-2 test
(the derived file in ``shared/data``) instead of WikiText-103; line by line, section headers (``= … =``) dropped,
lines shorter than ``min_tokens`` tokens dropped; whole-word masking with probability 0.15, every selected
piece replaced by ``[MASK]`` (transformers'
``DataCollatorForLanguageModeling(whole_word_mask=True)``), a fixed seed; ``PPL = exp(total MLM loss / masked
tokens)`` (token-weighted; the paper's code averaged per-batch means).

Only checkpoints with an MLM head can be scored. The packaged ``minilm-l6`` (sentence-transformers) has none, so
slimformer tests this on tiny random ``BertForMaskedLM`` models and reports zero-shot fidelity and pair AUC
(:mod:`slimformer.embeddings.evaluate`) for the real model.

BERT ties the MLM decoder to the input table. :func:`substitute_embeddings_` names the two choices: ``input-only``
replaces only the input table (untying; what the paper's code measured) and ``input+output`` replaces both (what
a deployed model with a compressed table would compute).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from slimformer.errors import ConfigError, DataError

__all__ = ["read_wikitext_lines", "substitute_embeddings_", "masked_lm_perplexity"]


def read_wikitext_lines(path: str | os.PathLike[str]) -> list[str]:
    """Non-empty, non-header lines of a WikiText raw file (``= Title =`` section headers dropped).

    Raises:
        DataError: the file is missing, not UTF-8, or holds no text line.
    """
    try:
        with open(path, encoding="utf-8") as f:
            raw = f.read().splitlines()
    except FileNotFoundError as e:
        raise DataError(f"{path}: no such WikiText file") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from e
    lines = [ln.strip() for ln in raw]
    lines = [ln for ln in lines if ln and not (ln.startswith("=") and ln.endswith("="))]
    if not lines:
        raise DataError(f"{path}: no text lines (only empty lines or section headers)")
    return lines


def substitute_embeddings_(
    mlm_model: nn.Module, weight: Tensor, mode: Literal["input-only", "input+output"] = "input-only"
) -> None:
    """Put a reconstructed table ``Ê`` ``(V, d)`` into an MLM model, in place.

    ``input-only`` assigns a new parameter to the input embeddings, so a tied output decoder keeps the original
    ``E`` (the paper's evaluation, §3(f)2). ``input+output`` writes ``Ê`` into the shared table (both sides).

    Raises:
        ConfigError: unknown ``mode`` or a shape that differs from the input table.
    """
    emb = mlm_model.get_input_embeddings()
    if tuple(weight.shape) != tuple(emb.weight.shape):
        raise ConfigError(
            f"table shape {tuple(weight.shape)} differs from the input embeddings {tuple(emb.weight.shape)}"
        )
    with torch.no_grad():
        if mode == "input-only":
            emb.weight = nn.Parameter(weight.detach().clone().to(emb.weight.dtype))
        elif mode == "input+output":
            emb.weight.copy_(weight)
        else:
            raise ConfigError(f"substitution mode {mode!r} is unknown; expected 'input-only' or 'input+output'")


@torch.no_grad()
def masked_lm_perplexity(
    mlm_model: nn.Module,
    tokenizer: Any,
    lines: Sequence[str],
    *,
    min_tokens: int = 20,
    max_length: int = 512,
    mask_prob: float = 0.15,
    whole_word: bool = True,
    batch_size: int = 4,
    seed: int = 0,
) -> dict[str, float]:
    """Masked-LM perplexity of ``mlm_model`` on text lines (no training).

    Args:
        mlm_model: a Hugging Face ``*ForMaskedLM`` model.
        tokenizer: its fast tokenizer.
        lines: text lines (e.g. :func:`read_wikitext_lines`).
        min_tokens: lines with fewer tokens (without special tokens) are dropped.
        max_length: tokens per line after truncation (block size).
        mask_prob: masking probability (80/10/10 replacement as in BERT; whole-word masking: all ``[MASK]``).
        whole_word: mask whole words (all word pieces of a word together).
        batch_size: lines per forward.
        seed: masking seed (same seed, same masks: compare tables with the same seed).

    Returns:
        ``perplexity`` (``exp(loss)``), ``loss`` (mean cross-entropy per masked token, nats), ``masked_tokens``,
        ``lines``.

    Raises:
        ConfigError: no line is long enough, or the model has no MLM head.
    """
    from transformers import DataCollatorForLanguageModeling

    if not hasattr(mlm_model, "get_output_embeddings") or mlm_model.get_output_embeddings() is None:
        raise ConfigError(
            f"{type(mlm_model).__name__} has no MLM head; masked-LM perplexity needs a *ForMaskedLM model"
        )
    enc = tokenizer(
        list(lines),
        truncation=True,
        max_length=max_length,
        return_special_tokens_mask=True,
        return_offsets_mapping=whole_word,  # word boundaries for whole-word masking
    )
    keep = [i for i, ids in enumerate(enc["input_ids"]) if len(ids) - 2 >= min_tokens]
    if not keep:
        raise ConfigError(f"no line has at least {min_tokens} tokens; expected longer text or a smaller min_tokens")
    replace = {"mask_replace_prob": 1.0, "random_replace_prob": 0.0} if whole_word else {}  # HF's WWM: all [MASK]
    collator = DataCollatorForLanguageModeling(
        tokenizer, mlm=True, whole_word_mask=whole_word, mlm_probability=mask_prob, seed=seed, **replace
    )
    was_training = mlm_model.training
    mlm_model.eval()
    total, count = 0.0, 0
    try:
        for start in range(0, len(keep), batch_size):
            rows = [{k: enc[k][i] for k in enc.keys()} for i in keep[start : start + batch_size]]
            batch = collator(rows)  # pops special_tokens_mask / offset_mapping
            labels = batch.pop("labels")  # (B, N), -100 where not masked
            logits = mlm_model(**batch).logits  # (B, N, V)
            n = int((labels != -100).sum())
            if n:
                loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum")
                total, count = total + float(loss), count + n
    finally:
        mlm_model.train(was_training)
    if count == 0:
        raise ConfigError("no token was masked; expected more text or a larger mask_prob")
    mean = total / count
    return {"perplexity": math.exp(mean), "loss": mean, "masked_tokens": float(count), "lines": float(len(keep))}
