"""Token-embedding compression: SVD vs a direction-aware linear autoencoder (METHODS.md §3).

- :mod:`~slimformer.embeddings.svd`: truncated SVD and the compression-ratio arithmetic.
- :mod:`~slimformer.embeddings.autoencoder`: the linear autoencoder (cosine + powered L1 + L2 loss).
- :mod:`~slimformer.embeddings.factorized`: the deployed module (code table + decoder, optional int8 table).
- :mod:`~slimformer.embeddings.transform`: in-place factorisation of a model, rebuilt on load from config.json.
- :mod:`~slimformer.embeddings.evaluate`, :mod:`~slimformer.embeddings.mlm`: reconstruction, zero-shot fidelity,
  zero-shot pair AUC, masked-LM perplexity.
- :mod:`~slimformer.stages.embeddings`: the ``embeddings`` recipe stage.
"""

from slimformer.embeddings.autoencoder import AutoencoderConfig, LinearAutoencoder, autoencoder_loss, train_autoencoder
from slimformer.embeddings.factorized import FactorizedEmbedding, has_tied_output_embeddings
from slimformer.embeddings.svd import rank_for_ratio, ratio_for_rank, svd_factorize
from slimformer.embeddings.transform import (
    RECORD_KEY,
    FactorizationInfo,
    factorize_embeddings_,
    install_factorized_,
    replace_word_embeddings_,
    restore_factorized_embeddings_,
)

__all__ = [
    "AutoencoderConfig",
    "FactorizationInfo",
    "FactorizedEmbedding",
    "LinearAutoencoder",
    "RECORD_KEY",
    "autoencoder_loss",
    "factorize_embeddings_",
    "has_tied_output_embeddings",
    "install_factorized_",
    "rank_for_ratio",
    "ratio_for_rank",
    "replace_word_embeddings_",
    "restore_factorized_embeddings_",
    "svd_factorize",
    "train_autoencoder",
]
