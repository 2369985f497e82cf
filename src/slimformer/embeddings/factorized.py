"""A low-rank token-embedding module (code table + linear decoder) and its in-place swap into a model.

Paper: Bałazy et al., "Direction is what you need" (https://arxiv.org/abs/2106.08181), METHODS.md §3(b): the
deployed embedding layer is "lookup in ``Z`` (V × k), then apply the decoder (k → d)"
(official code: ``substitution_modules.py`` ``WordEmbeddingModule``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from slimformer.embeddings.svd import svd_factorize
from slimformer.errors import ConfigError
from slimformer.models import SlimModel
from slimformer.quant.granularity import PerRow
from slimformer.quant.primitives import choose_qparams, quantize

__all__ = ["FactorizedEmbedding", "has_tied_output_embeddings"]

_METHODS = ("svd",)


class FactorizedEmbedding(nn.Module):
    """Token embedding ``E ≈ Z W_dᵀ + b_d`` stored as a code table ``Z`` ``(V, k)`` and a linear decoder ``(k -> d)``.

    ``forward(ids) = decoder(codes(ids))``. The padding row of ``Z`` keeps whatever the factorisation gives
    (not forced to zero, METHODS §3(f)8); ``padding_idx`` only blocks its gradient, as in ``nn.Embedding``.
    Which parts train in a later fine-tuning is explicit (``trainable_table`` / ``trainable_decoder``, §3(f)4): the
    official code froze the table of both methods and trained the AE decoder only.

    The code table can be stored in int8 (:meth:`quantize_table_`): symmetric per-row scales, so row ``i`` is
    ``codes_q[i] · codes_scale[i]``; the table is then frozen.

    Args:
        num_embeddings: vocabulary size ``V``.
        embedding_dim: hidden size ``d``.
        rank: latent size ``k`` (``1 <= k <= d``; ``k = d`` compresses nothing).
        padding_idx: padding token id of the original table, or None.
        bias: the decoder has a bias ``b_d`` (the autoencoder's; SVD has none).
        trainable_table: the code table receives gradients.
        trainable_decoder: the decoder receives gradients.
        device, dtype: where / how the parameters are created.

    Raises:
        ConfigError: a size is out of range.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        rank: int,
        padding_idx: int | None = None,
        *,
        bias: bool = False,
        trainable_table: bool = True,
        trainable_decoder: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if num_embeddings < 1 or not 0 < rank <= embedding_dim:
            raise ConfigError(
                f"rank {rank} is invalid for a ({num_embeddings}, {embedding_dim}) embedding; "
                f"expected 1 <= rank <= {embedding_dim}"
            )
        self._vocab, self._rank, self._padding_idx = num_embeddings, rank, padding_idx
        self.codes = nn.Embedding(num_embeddings, rank, padding_idx=padding_idx, device=device, dtype=dtype)
        self.decoder = nn.Linear(rank, embedding_dim, bias=bias, device=device, dtype=dtype)  # weight (d, k)
        self.int8_table = False
        self.set_trainable(table=trainable_table, decoder=trainable_decoder)

    def set_trainable(self, *, table: bool, decoder: bool) -> None:
        """Choose which parts receive gradients (an int8 table never does)."""
        self.trainable_table = bool(table) and not self.int8_table
        self.trainable_decoder = bool(decoder)
        if not self.int8_table:
            self.codes.weight.requires_grad_(self.trainable_table)
        for p in self.decoder.parameters():
            p.requires_grad_(self.trainable_decoder)

    @property
    def num_embeddings(self) -> int:
        """Vocabulary size ``V``."""
        return self._vocab

    @property
    def embedding_dim(self) -> int:
        """Hidden size ``d`` of the output."""
        return self.decoder.out_features

    @property
    def rank(self) -> int:
        """Latent size ``k``."""
        return self._rank

    @property
    def padding_idx(self) -> int | None:
        """Padding token id (gradient-blocked row of the code table), or None."""
        return self._padding_idx

    def num_parameters(self, *, with_bias: bool = True) -> int:
        """Stored values: ``V·k + k·d`` (``+ d`` with the decoder bias; the int8 scales add ``V``)."""
        n = self.num_embeddings * self.rank + self.rank * self.embedding_dim
        if with_bias and self.decoder.bias is not None:
            n += self.embedding_dim
        return n + (self.num_embeddings if self.int8_table else 0)

    def table(self) -> Tensor:
        """The code table ``Z`` as floats, shape ``(V, k)`` (dequantized if stored in int8)."""
        if self.int8_table:
            return self.codes_q.to(self.codes_scale.dtype) * self.codes_scale  # (V, k) · (V, 1)
        return self.codes.weight

    def forward(self, input_ids: Tensor) -> Tensor:
        """Embed token ids.

        Args:
            input_ids: int64 token ids, shape ``(B, N)`` (any leading shape works).

        Returns:
            Embeddings of shape ``(B, N, d)``.
        """
        if self.int8_table:
            q = nn.functional.embedding(input_ids, self.codes_q)  # (B, N, k) int8
            z = q.to(self.codes_scale.dtype) * nn.functional.embedding(input_ids, self.codes_scale)  # (B, N, k)
        else:
            z = self.codes(input_ids)  # (B, N) -> (B, N, k)
        return self.decoder(z)  # (B, N, k) -> (B, N, d)

    @torch.no_grad()
    def quantize_table_(self) -> FactorizedEmbedding:
        """Store the code table in int8 with symmetric per-row scales (in place; the table becomes frozen).

        Rows are quantized with :func:`slimformer.quant.primitives.quantize` (8 bits, :class:`PerRow`): the
        error per element is at most half a row's scale ``max|Z_i| / 127``.

        Raises:
            ConfigError: the table is already int8.
        """
        if self.int8_table:
            raise ConfigError("the code table is already stored in int8; quantize_table_ was called twice")
        w = self.codes.weight.detach().float()  # (V, k)
        scale, zp = choose_qparams(w, 8, symmetric=True, granularity=PerRow())  # (V, 1)
        self.register_buffer("codes_q", quantize(w, scale, zp, 8, symmetric=True, granularity=PerRow()))
        self.register_buffer("codes_scale", scale.to(self.codes.weight.dtype))  # (V, 1)
        del self.codes  # the float table is gone: the int8 codes and scales are the table now
        self.int8_table = True
        self.trainable_table = False
        return self

    def record(self) -> dict[str, Any]:
        """The structure needed to rebuild this module before loading its weights (see :func:`record_key`)."""
        return {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "rank": self.rank,
            "padding_idx": self.padding_idx,
            "bias": self.decoder.bias is not None,
            "trainable_table": self.trainable_table,
            "trainable_decoder": self.trainable_decoder,
            "int8_table": self.int8_table,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any], *, dtype: torch.dtype | None = None) -> FactorizedEmbedding:
        """An uninitialised module with the structure of :meth:`record` (weights are loaded afterwards)."""
        module = cls(
            record["num_embeddings"],
            record["embedding_dim"],
            record["rank"],
            record["padding_idx"],
            bias=record["bias"],
            trainable_table=record["trainable_table"],
            trainable_decoder=record["trainable_decoder"],
            dtype=dtype,
        )
        if record["int8_table"]:
            module.quantize_table_()
        return module

    @classmethod
    def from_factors(
        cls,
        codes: Tensor,
        decoder_weight: Tensor,
        decoder_bias: Tensor | None = None,
        padding_idx: int | None = None,
        **flags: bool,
    ) -> FactorizedEmbedding:
        """Build from factors: ``codes`` ``(V, k)``, ``decoder_weight`` ``(d, k)``, optional ``decoder_bias`` ``(d,)``.

        ``flags`` are ``trainable_table`` / ``trainable_decoder``.
        """
        (vocab, rank), dim = codes.shape, decoder_weight.shape[0]
        if decoder_weight.shape != (dim, rank) or (decoder_bias is not None and decoder_bias.shape != (dim,)):
            raise ConfigError(
                f"decoder shapes {tuple(decoder_weight.shape)} / "
                f"{None if decoder_bias is None else tuple(decoder_bias.shape)} do not fit codes {tuple(codes.shape)}"
            )
        module = cls(vocab, dim, rank, padding_idx, bias=decoder_bias is not None, dtype=codes.dtype, **flags)
        with torch.no_grad():
            module.codes.weight.copy_(codes)
            module.decoder.weight.copy_(decoder_weight)
            if decoder_bias is not None:
                module.decoder.bias.copy_(decoder_bias)
        return module.to(codes.device)

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, rank: int, method: str = "svd") -> FactorizedEmbedding:
        """Factorise a dense ``nn.Embedding`` with truncated SVD (keeps its ``padding_idx``, dtype and device).

        Args:
            emb: the dense table, weight ``(V, d)``.
            rank: latent size ``k``, ``1 <= k <= d`` (``k = d`` reproduces ``emb`` to float rounding).
            method: ``"svd"`` (:func:`~slimformer.embeddings.svd.svd_factorize`); the autoencoder needs training,
                see :func:`~slimformer.embeddings.transform.factorize_embeddings_`.

        Returns:
            A module with codes ``U_k Σ_k`` ``(V, k)`` and decoder weight ``V_k`` ``(d, k)``, no bias.

        Raises:
            ConfigError: ``emb`` is not an ``nn.Embedding``, ``method`` is unknown or ``rank`` out of range.
        """
        if not isinstance(emb, nn.Embedding):
            raise ConfigError(f"cannot factorise a {type(emb).__name__}; expected a dense nn.Embedding")
        if method not in _METHODS:
            raise ConfigError(f"embedding factorisation method {method!r} is unknown; expected one of {_METHODS}")
        if not 0 < rank <= emb.embedding_dim:
            raise ConfigError(
                f"rank {rank} is invalid for a {tuple(emb.weight.shape)} embedding; "
                f"expected 1 <= rank <= {emb.embedding_dim}"
            )
        codes, decoder = svd_factorize(emb.weight, rank)  # (V, k), (k, d)
        return cls.from_factors(codes, decoder.T, None, emb.padding_idx)

    def to_embedding(self) -> nn.Embedding:
        """The dense equivalent: an ``nn.Embedding`` with weight ``Z W_dᵀ (+ b_d)`` ``(V, d)``, same ``padding_idx``."""
        with torch.no_grad():
            weight = self.decoder(self.table().detach())  # (V, k) -> (V, d)
        return nn.Embedding.from_pretrained(weight.clone(), freeze=False, padding_idx=self.padding_idx)


def has_tied_output_embeddings(model: SlimModel) -> bool:
    """Whether the model's output projection (e.g. an MLM decoder) shares storage with its word embeddings."""
    out = model.hf.get_output_embeddings()
    word = model.base.embeddings.word_embeddings
    if out is None or not hasattr(word, "weight"):
        return False
    return out.weight.untyped_storage().data_ptr() == word.weight.untyped_storage().data_ptr()
