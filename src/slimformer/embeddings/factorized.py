"""A low-rank token-embedding module (code table + linear decoder) and its in-place swap into a model.

Paper: Bałazy et al., "Direction is what you need" (https://arxiv.org/abs/2106.08181), METHODS.md §3(b): the
deployed embedding layer is "lookup in ``Z`` (V × k), then apply the decoder (k → d)"
(official code: ``substitution_modules.py`` ``WordEmbeddingModule``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from slimformer.embeddings.svd import svd_factorize
from slimformer.errors import ConfigError
from slimformer.models import SlimModel

__all__ = ["FactorizedEmbedding", "replace_word_embeddings_", "has_tied_output_embeddings"]

_METHODS = ("svd",)


class FactorizedEmbedding(nn.Module):
    """Token embedding ``E ≈ Z W`` stored as a code table ``Z`` ``(V, k)`` and a bias-free decoder ``(k -> d)``.

    ``forward(ids) = decoder(codes(ids))``. The padding row of ``Z`` keeps whatever the factorisation gives
    (not forced to zero, METHODS §3(f)8); ``padding_idx`` only blocks its gradient, as in ``nn.Embedding``.
    Both parts are trainable parameters (freeze them explicitly if a comparison needs it, §3(f)4).

    Args:
        num_embeddings: vocabulary size ``V``.
        embedding_dim: hidden size ``d``.
        rank: latent size ``k`` (``1 <= k <= d``; ``k = d`` compresses nothing).
        padding_idx: padding token id of the original table, or None.
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
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if num_embeddings < 1 or not 0 < rank <= embedding_dim:
            raise ConfigError(
                f"rank {rank} is invalid for a ({num_embeddings}, {embedding_dim}) embedding; "
                f"expected 1 <= rank <= {embedding_dim}"
            )
        self.codes = nn.Embedding(num_embeddings, rank, padding_idx=padding_idx, device=device, dtype=dtype)
        self.decoder = nn.Linear(rank, embedding_dim, bias=False, device=device, dtype=dtype)  # weight (d, k)

    @property
    def num_embeddings(self) -> int:
        """Vocabulary size ``V``."""
        return self.codes.num_embeddings

    @property
    def embedding_dim(self) -> int:
        """Hidden size ``d`` of the output."""
        return self.decoder.out_features

    @property
    def rank(self) -> int:
        """Latent size ``k``."""
        return self.codes.embedding_dim

    @property
    def padding_idx(self) -> int | None:
        """Padding token id (gradient-blocked row of the code table), or None."""
        return self.codes.padding_idx

    def forward(self, input_ids: Tensor) -> Tensor:
        """Embed token ids.

        Args:
            input_ids: int64 token ids, shape ``(B, N)`` (any leading shape works).

        Returns:
            Embeddings of shape ``(B, N, d)``.
        """
        return self.decoder(self.codes(input_ids))  # (B, N) -> (B, N, k) -> (B, N, d)

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, rank: int, method: str = "svd") -> FactorizedEmbedding:
        """Factorise a dense ``nn.Embedding`` (keeps its ``padding_idx``, dtype and device).

        Args:
            emb: the dense table, weight ``(V, d)``.
            rank: latent size ``k``, ``1 <= k <= d`` (``k = d`` reproduces ``emb`` to float rounding).
            method: ``"svd"`` (truncated SVD, :func:`~slimformer.embeddings.svd.svd_factorize`).

        Returns:
            A module with codes ``U_k Σ_k`` ``(V, k)`` and decoder weight ``V_k`` ``(d, k)``.

        Raises:
            ConfigError: ``emb`` is not an ``nn.Embedding``, ``method`` is unknown or ``rank`` out of range.
        """
        if not isinstance(emb, nn.Embedding):
            raise ConfigError(f"cannot factorise a {type(emb).__name__}; expected a dense nn.Embedding")
        if method not in _METHODS:
            raise ConfigError(f"embedding factorisation method {method!r} is unknown; expected one of {_METHODS}")
        weight = emb.weight
        module = cls(
            emb.num_embeddings, emb.embedding_dim, rank, emb.padding_idx, device=weight.device, dtype=weight.dtype
        )
        codes, decoder = svd_factorize(weight, rank)  # (V, k), (k, d)
        with torch.no_grad():
            module.codes.weight.copy_(codes)
            module.decoder.weight.copy_(decoder.T)  # (k, d) -> (d, k)
        return module

    def to_embedding(self) -> nn.Embedding:
        """The dense equivalent: an ``nn.Embedding`` with weight ``Z Wᵀ`` ``(V, d)`` and the same ``padding_idx``."""
        weight = self.codes.weight.detach() @ self.decoder.weight.detach().T  # (V, k) @ (k, d) -> (V, d)
        return nn.Embedding.from_pretrained(weight.clone(), freeze=False, padding_idx=self.padding_idx)


def has_tied_output_embeddings(model: SlimModel) -> bool:
    """Whether the model's output projection (e.g. an MLM decoder) shares storage with its word embeddings."""
    out = model.hf.get_output_embeddings()
    word = model.base.embeddings.word_embeddings
    if out is None or not hasattr(word, "weight"):
        return False
    return out.weight.untyped_storage().data_ptr() == word.weight.untyped_storage().data_ptr()


def replace_word_embeddings_(model: SlimModel, rank: int, method: str = "svd") -> FactorizedEmbedding:
    """Swap ``model.base.embeddings.word_embeddings`` for a :class:`FactorizedEmbedding`, in place.

    Args:
        model: the model to change; its word embeddings must be a dense ``nn.Embedding`` ``(V, d)``.
        rank: latent size ``k`` (``1 <= k <= d``); see :func:`~slimformer.embeddings.svd.rank_for_ratio`.
        method: factorisation method (``"svd"``).

    Returns:
        The new module (already installed in ``model``).

    Raises:
        ConfigError: the output embeddings are tied to the word embeddings (swapping only the input side would
            silently untie them, METHODS §3(f)2), the embeddings are already factorised, or a bad rank/method.
    """
    if has_tied_output_embeddings(model):
        raise ConfigError(
            f"{type(model.hf).__name__} ties its output embeddings to the word embeddings; "
            "factorising only the input side would untie them (untie explicitly first)"
        )
    emb = model.base.embeddings.word_embeddings
    new = FactorizedEmbedding.from_embedding(emb, rank, method)
    new.train(emb.training)
    model.base.embeddings.word_embeddings = new
    return new
