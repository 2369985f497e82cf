"""How good is a compressed token-embedding table, before any fine-tuning (METHODS.md §3(d)).

- :func:`reconstruction_metrics`: mean cosine and relative L2 error of the rows ``Ê`` vs ``E``, optionally
  weighted by token frequency (:func:`token_frequencies`).
- :func:`zero_shot_fidelity`: cosine between the sentence embeddings (mean pooling over real tokens, as the
  sentence-transformers MiniLM was trained) of the original and the compressed encoder, on real sentences.
- :func:`pair_auc`: zero-shot paraphrase detection (MRPC): ROC-AUC of the cosine similarity of the two sentences'
  embeddings against the gold label; compare the compressed encoder's AUC with the original's.

These are the "initial" (zero-shot) quality of Bałazy et al. (https://arxiv.org/abs/2106.08181) adapted to an
encoder without an MLM head (§3(d)3); masked-LM perplexity is in :mod:`slimformer.embeddings.mlm`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from slimformer.errors import ConfigError
from slimformer.models import SlimModel
from slimformer.tasks.metrics import roc_auc

__all__ = ["reconstruction_metrics", "token_frequencies", "sentence_embeddings", "zero_shot_fidelity", "pair_auc"]


def reconstruction_metrics(
    original: Tensor, reconstructed: Tensor, frequencies: Tensor | None = None
) -> dict[str, float]:
    """Row-wise reconstruction quality of an embedding table.

    Args:
        original: ``E``, shape ``(V, d)``.
        reconstructed: ``Ê``, shape ``(V, d)``.
        frequencies: token counts, shape ``(V,)``, or None. With counts, the ``*_freq`` figures weight each row
            by its share of the tokens (rows never seen weigh 0).

    Returns:
        ``mean_cosine`` (mean over rows of ``cos(Ê_i, E_i)``), ``relative_l2`` (mean over rows of
        ``‖Ê_i − E_i‖ / ‖E_i‖``), ``relative_frobenius`` (``‖Ê − E‖_F / ‖E‖_F``), and with frequencies
        ``mean_cosine_freq`` and ``relative_l2_freq``.

    Raises:
        ConfigError: the shapes differ or ``frequencies`` does not have one count per row.
    """
    if original.shape != reconstructed.shape or original.dim() != 2:
        raise ConfigError(f"tables differ in shape: {tuple(original.shape)} vs {tuple(reconstructed.shape)}")
    e, r = original.detach().double(), reconstructed.detach().double()
    cos = torch.nn.functional.cosine_similarity(r, e, dim=-1, eps=1e-12)  # (V,)
    rel = (r - e).norm(dim=-1) / e.norm(dim=-1).clamp_min(1e-12)  # (V,)
    out = {
        "mean_cosine": float(cos.mean()),
        "relative_l2": float(rel.mean()),
        "relative_frobenius": float((r - e).norm() / e.norm().clamp_min(1e-12)),
    }
    if frequencies is not None:
        if frequencies.shape != (e.shape[0],):
            raise ConfigError(f"frequencies have shape {tuple(frequencies.shape)}; expected ({e.shape[0]},)")
        w = frequencies.double()
        if w.sum() <= 0:
            raise ConfigError("frequencies sum to 0; expected token counts from a non-empty corpus")
        w = w / w.sum()
        out["mean_cosine_freq"] = float((w * cos).sum())
        out["relative_l2_freq"] = float((w * rel).sum())
    return out


def token_frequencies(tokenizer: Any, texts: Sequence[str], vocab_size: int) -> Tensor:
    """Counts of each token id in the tokenised ``texts`` (special tokens excluded), shape ``(vocab_size,)``."""
    counts = torch.zeros(vocab_size, dtype=torch.int64)
    for start in range(0, len(texts), 512):
        enc = tokenizer(list(texts[start : start + 512]), add_special_tokens=False)["input_ids"]
        ids = torch.tensor([i for row in enc for i in row], dtype=torch.int64)
        if ids.numel():
            counts += torch.bincount(ids, minlength=vocab_size)[:vocab_size]
    return counts


@torch.no_grad()
def sentence_embeddings(
    model: SlimModel, tokenizer: Any, sentences: Sequence[str], *, batch_size: int = 64, max_length: int = 128
) -> Tensor:
    """Mean-pooled last hidden states over real tokens (attention mask), shape ``(N, d)``, float32, eval mode."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(sentences), batch_size):
            enc = tokenizer(
                list(sentences[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            hidden = model.base(**enc).last_hidden_state  # (B, N, d)
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, N, 1)
            out.append((hidden * mask).sum(1) / mask.sum(1).clamp_min(1))  # (B, d)
    finally:
        model.train(was_training)
    return torch.cat(out).float()


def zero_shot_fidelity(
    original: SlimModel, compressed: SlimModel, tokenizer: Any, sentences: Sequence[str], **kwargs: Any
) -> float:
    """Mean cosine between the two encoders' sentence embeddings of the same ``sentences`` (1.0 = identical).

    ``kwargs`` go to :func:`sentence_embeddings` (``batch_size``, ``max_length``).

    Raises:
        ConfigError: ``sentences`` is empty.
    """
    if not sentences:
        raise ConfigError("zero-shot fidelity needs at least one sentence")
    a = sentence_embeddings(original, tokenizer, sentences, **kwargs)  # (N, d)
    b = sentence_embeddings(compressed, tokenizer, sentences, **kwargs)  # (N, d)
    return float(torch.nn.functional.cosine_similarity(a, b, dim=-1).mean())


def pair_auc(
    model: SlimModel, tokenizer: Any, pairs: Sequence[tuple[str, str]], labels: Sequence[int], **kwargs: Any
) -> float:
    """Zero-shot paraphrase ROC-AUC: score = cosine of the two sentence embeddings, labels 1 = paraphrase.

    Args:
        model: the encoder (any head; only ``model.base`` is used).
        tokenizer: its tokenizer.
        pairs: ``(sentence_1, sentence_2)`` pairs, ``n`` of them.
        labels: 0/1 gold labels, ``n`` of them.
        kwargs: passed to :func:`sentence_embeddings`.

    Returns:
        ROC-AUC in ``[0, 1]`` (:func:`slimformer.tasks.metrics.roc_auc`).

    Raises:
        ConfigError: ``pairs`` and ``labels`` differ in length or are empty.
        ValueError: the labels are not 0/1 or hold one class only.
    """
    if not pairs or len(pairs) != len(labels):
        raise ConfigError(f"pair AUC needs as many labels as pairs; got {len(pairs)} pairs and {len(labels)} labels")
    a = sentence_embeddings(model, tokenizer, [p[0] for p in pairs], **kwargs)  # (n, d)
    b = sentence_embeddings(model, tokenizer, [p[1] for p in pairs], **kwargs)  # (n, d)
    scores = torch.nn.functional.cosine_similarity(a, b, dim=-1)  # (n,)
    return roc_auc(scores.numpy(), list(labels))
