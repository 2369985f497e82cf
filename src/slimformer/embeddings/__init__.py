"""Token-embedding compression: low-rank (SVD) factorisation of the word-embedding table (METHODS.md §3)."""

from slimformer.embeddings.factorized import FactorizedEmbedding, has_tied_output_embeddings, replace_word_embeddings_
from slimformer.embeddings.svd import rank_for_ratio, ratio_for_rank, svd_factorize

__all__ = [
    "FactorizedEmbedding",
    "has_tied_output_embeddings",
    "replace_word_embeddings_",
    "rank_for_ratio",
    "ratio_for_rank",
    "svd_factorize",
]
