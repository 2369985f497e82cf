"""Low-bit word-embedding tables: QuantizedEmbedding, quantize_embeddings_ (post-training), FakeQuantEmbedding (QAT).

In MiniLM-L6 the ``(30522, 384)`` word-embedding table holds 11.7M of the 22.7M parameters, so quantizing only
the encoder Linears leaves most of the file in fp32. :func:`quantize_embeddings_` encodes the table with a weight
quantizer (default symmetric int8 per row: one scale per vocabulary row, as TernaryBERT quantizes embeddings
row-wise, METHODS §4(b)) and swaps in a :class:`QuantizedEmbedding` that dequantizes the looked-up rows in its
forward. This is post-training, weight-only (no fine-tuning): the model's outputs change by the rounding of the
table, which the caller should measure (``docs/quantization.md`` reports it for int8 on SST-2). Position and
token-type embeddings stay fp32.

Quantization-aware instead: :class:`FakeQuantEmbedding` (``QATConfig(embedding=...)``) trains the table through its
quantizer. It fake-quantizes only the looked-up rows, which is exact for row-local scales (per row / per group:
a row's codes and scale depend on that row alone) and costs ``B·N`` rows per step instead of the whole table;
``convert_qat_`` encodes the table into a :class:`QuantizedEmbedding` with the same outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimformer.errors import ConfigError
from slimformer.quant.granularity import PerGroup, PerRow, PerTensor
from slimformer.quant.modules import BinaryWeight, TernaryWeight, UniformWeight, WeightQuantizer

__all__ = ["FakeQuantEmbedding", "QuantizedEmbedding", "quantize_embeddings_"]


class QuantizedEmbedding(nn.Module):
    """An embedding table stored as ``int8`` codes + scales; ``forward`` gathers rows and dequantizes them.

    Buffers: ``weight_codes`` ``(num_embeddings, embedding_dim)`` int8 and ``weight_scale`` (``(1, 1)`` per
    tensor, ``(num_embeddings, 1)`` per row, ``(num_embeddings, dim // n, 1)`` per group of ``n``). The output
    equals ``weight_q.decode(weight_codes, weight_scale)[input_ids]`` bitwise (one product per element).

    Args:
        codes: ``(num_embeddings, embedding_dim)`` int8 codes. scale: the scale tensor of ``weight_q``.
        weight_q: the quantizer that produced them. padding_idx: kept for reference (gradients only).
    """

    def __init__(self, codes: Tensor, scale: Tensor, weight_q: WeightQuantizer, padding_idx: int | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = codes.shape
        self.register_buffer("weight_codes", codes)
        self.register_buffer("weight_scale", scale)
        self.weight_q, self.padding_idx = weight_q, padding_idx

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, weight_q: WeightQuantizer) -> QuantizedEmbedding:
        """Encode ``embedding.weight`` with ``weight_q`` (``max_norm`` tables are refused).

        Raises:
            ConfigError: ``embedding`` is not an ``nn.Embedding`` or renormalizes rows (``max_norm``).
        """
        if type(embedding) is not nn.Embedding:
            raise ConfigError(f"QuantizedEmbedding needs an nn.Embedding, got {type(embedding).__name__}")
        if embedding.max_norm is not None:
            raise ConfigError("QuantizedEmbedding cannot store an nn.Embedding with max_norm (rows change at lookup)")
        codes, scale = weight_q.encode(embedding.weight)
        return cls(codes, scale, weight_q, embedding.padding_idx).train(embedding.training)

    def dequantized_weight(self) -> Tensor:
        """The fp table ``(num_embeddings, embedding_dim)`` the codes represent."""
        return self.weight_q.decode(self.weight_codes, self.weight_scale)

    def forward(self, input_ids: Tensor) -> Tensor:
        """``(...)`` token ids -> ``(..., embedding_dim)`` dequantized rows."""
        rows = F.embedding(input_ids, self.weight_codes).to(self.weight_scale.dtype)  # (..., D)
        g = self.weight_q.granularity
        if isinstance(g, PerTensor):
            return rows * self.weight_scale.reshape(())
        scale = F.embedding(input_ids, self.weight_scale.reshape(self.num_embeddings, -1))  # (..., 1) or (..., D/n)
        if isinstance(g, PerRow):
            return rows * scale
        # (..., D) -> (..., D // n, n) times (..., D // n, 1)
        grouped = rows.unflatten(-1, (-1, g.group_size)) * scale.unsqueeze(-1)
        return grouped.flatten(-2)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, weight_q={self.weight_q}"


class FakeQuantEmbedding(nn.Module):
    """QAT word-embedding table: looks rows up in the fp32 ``weight``, then fake-quantizes each row (STE).

    The ``weight`` Parameter is the original table's (same name, same object), so state-dict keys and optimizers
    stay valid. The output equals ``weight_q.decode(*weight_q.encode(weight))[input_ids]``, what
    :meth:`to_quantized` stores.

    Args:
        weight: the table ``(num_embeddings, embedding_dim)``. weight_q: a row-local quantizer (``PerRow`` or
            ``PerGroup`` granularity). padding_idx: as in ``nn.Embedding`` (no gradient to that row).

    Raises:
        ConfigError: a per-tensor quantizer (one scale would tie every vocabulary row to the whole table).
    """

    def __init__(self, weight: nn.Parameter, weight_q: WeightQuantizer, padding_idx: int | None = None) -> None:
        super().__init__()
        if not isinstance(weight_q.granularity, (PerRow, PerGroup)):
            raise ConfigError(
                f"embedding quantizer {weight_q!r}: expected PerRow() or PerGroup(n) granularity (row-local scales)"
            )
        self.weight, self.weight_q, self.padding_idx = weight, weight_q, padding_idx
        self.num_embeddings, self.embedding_dim = weight.shape

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, weight_q: WeightQuantizer) -> FakeQuantEmbedding:
        """Wrap ``embedding``'s table (shared Parameter).

        Raises:
            ConfigError: ``embedding`` is not a plain ``nn.Embedding``, has ``max_norm``, or ``weight_q`` is per tensor.
        """
        if type(embedding) is not nn.Embedding:
            raise ConfigError(f"FakeQuantEmbedding needs an nn.Embedding, got {type(embedding).__name__}")
        if embedding.max_norm is not None:
            raise ConfigError("FakeQuantEmbedding cannot wrap an nn.Embedding with max_norm (rows change at lookup)")
        return cls(embedding.weight, weight_q, embedding.padding_idx).train(embedding.training)

    def forward(self, input_ids: Tensor) -> Tensor:
        """``(...)`` token ids -> ``(..., embedding_dim)`` fake-quantized rows."""
        rows = F.embedding(input_ids, self.weight, self.padding_idx)  # (..., D)
        return self.weight_q.fake_quantize(rows.reshape(-1, self.embedding_dim)).reshape(rows.shape)

    def to_quantized(self) -> QuantizedEmbedding:
        """The deployable table: codes + scales of ``weight`` (same outputs as this module)."""
        codes, scale = self.weight_q.encode(self.weight)
        return QuantizedEmbedding(codes, scale, self.weight_q, self.padding_idx).train(self.training)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, weight_q={self.weight_q}"


def _word_embeddings_owner(model: nn.Module) -> nn.Module:
    for candidate in (getattr(model, "base", None), getattr(model, "base_model", None), model):
        emb = getattr(candidate, "embeddings", None)
        if isinstance(emb, nn.Module) and hasattr(emb, "word_embeddings"):
            return emb
    raise ConfigError(f"quantize_embeddings_ needs a BERT-family model with .embeddings, got {type(model).__name__}")


def quantize_embeddings_(model: nn.Module, weight_q: WeightQuantizer | None = None) -> nn.Module:
    """Replace the word-embedding table by a :class:`QuantizedEmbedding` in place (post-training, weight-only).

    Args:
        model: a :class:`~slimformer.models.SlimModel` (or HF BERT-family model), fp32 or QAT-converted.
        weight_q: the table's quantizer; default ``UniformWeight(8, PerRow())`` (int8, one scale per row).
            ``TernaryWeight(PerRow())`` / ``BinaryWeight(PerRow())`` / 4-bit also work (lossier without training).

    Returns:
        ``model`` (modified in place).

    Raises:
        ConfigError: ``weight_q`` is not a weight quantizer; the model has no ``embeddings.word_embeddings``;
            the table is already quantized.
    """
    weight_q = UniformWeight(8, PerRow()) if weight_q is None else weight_q
    if not isinstance(weight_q, (UniformWeight, TernaryWeight, BinaryWeight)):
        raise ConfigError(f"quantize_embeddings_ weight_q must be a weight quantizer, got {weight_q!r}")
    owner = _word_embeddings_owner(model)
    if isinstance(owner.word_embeddings, QuantizedEmbedding):
        raise ConfigError("the word embeddings are already quantized (quantize_embeddings_ was applied before)")
    dim = owner.word_embeddings.embedding_dim
    if isinstance(weight_q.granularity, PerGroup) and dim % weight_q.granularity.group_size:
        raise ConfigError(f"PerGroup({weight_q.granularity.group_size}) does not divide embedding_dim {dim}")
    with torch.no_grad():
        owner.word_embeddings = QuantizedEmbedding.from_embedding(owner.word_embeddings, weight_q)
    return model
