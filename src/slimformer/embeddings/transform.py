"""Factorise a model's token embeddings in place (SVD or autoencoder), and rebuild factorised models on load.

The structure of the factorised layer is recorded in the model's Hugging Face config (``config.json`` key
:data:`RECORD_KEY`), so a saved folder describes itself: any slimformer loader (``load_model``,
``load_pretrained``, fine-tuning from the folder) rebuilds the :class:`FactorizedEmbedding` before loading its
weights, and a stage that follows (fine-tune, export, int8) keeps it.

Paper: Bałazy et al. (https://arxiv.org/abs/2106.08181), METHODS.md §3.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from slimformer.checkpoint import Structure, register_structure
from slimformer.embeddings.autoencoder import AutoencoderConfig, train_autoencoder
from slimformer.embeddings.factorized import FactorizedEmbedding, has_tied_output_embeddings
from slimformer.embeddings.svd import ratio_for_rank, svd_factorize
from slimformer.errors import ConfigError, ModelLoadError
from slimformer.models import SlimModel

__all__ = [
    "RECORD_KEY",
    "FactorizationInfo",
    "install_factorized_",
    "factorize_embeddings_",
    "replace_word_embeddings_",
    "restore_factorized_embeddings_",
    "build_factorized_structure_",
]

#: Key of the factorised-embedding record in the Hugging Face ``config.json``.
RECORD_KEY = "slimformer_factorized_embeddings"
_PREFIX = "embeddings.word_embeddings."


@dataclass
class FactorizationInfo:
    """What a factorisation did.

    Attributes:
        method: ``svd`` or ``ae``.
        rank: latent size ``k``.
        compression_ratio: ``V·d / (V·k + k·d)`` of the table (METHODS §3(b), no decoder bias).
        dense_parameters: ``V·d``.
        factorized_parameters: ``V·k + k·d`` (+ ``d`` for the AE decoder bias; both counts are given, §3(f)6).
        factorized_parameters_with_bias: the count including the decoder bias.
        epoch_losses: autoencoder training loss per epoch (empty for SVD).
    """

    method: str
    rank: int
    compression_ratio: float
    dense_parameters: int
    factorized_parameters: int
    factorized_parameters_with_bias: int
    epoch_losses: list[float] = field(default_factory=list)


def install_factorized_(model: SlimModel, module: FactorizedEmbedding) -> FactorizedEmbedding:
    """Put ``module`` in place of ``model``'s word embeddings and record its structure in the HF config.

    Raises:
        ConfigError: the output embeddings are tied to the word embeddings (swapping only the input side would
            silently untie them, METHODS §3(f)2), the embeddings are already factorised, or the shapes differ.
    """
    if has_tied_output_embeddings(model):
        raise ConfigError(
            f"{type(model.hf).__name__} ties its output embeddings to the word embeddings; "
            "factorising only the input side would untie them (untie explicitly first)"
        )
    old = model.base.embeddings.word_embeddings
    if isinstance(old, FactorizedEmbedding) or getattr(model.hf.config, RECORD_KEY, None):
        raise ConfigError("the word embeddings are already factorised; factorise the original model instead")
    shape = (module.num_embeddings, module.embedding_dim)
    if tuple(old.weight.shape) != shape:
        raise ConfigError(f"factorised table {shape} does not match the word embeddings {tuple(old.weight.shape)}")
    module.train(old.training)
    model.base.embeddings.word_embeddings = module
    setattr(model.hf.config, RECORD_KEY, module.record())
    return module


def factorize_embeddings_(
    model: SlimModel,
    method: Literal["svd", "ae"],
    rank: int,
    *,
    autoencoder: AutoencoderConfig | None = None,
    trainable_table: bool = False,
    trainable_decoder: bool = True,
    int8_table: bool = False,
    progress: bool = False,
) -> tuple[FactorizedEmbedding, FactorizationInfo]:
    """Replace the word-embedding table ``E`` ``(V, d)`` of ``model`` by a rank-``k`` factorisation, in place.

    ``svd``: codes ``U_k Σ_k``, decoder ``V_k`` (no bias), exact SVD. ``ae``: the direction-aware linear autoencoder
    (:func:`~slimformer.embeddings.autoencoder.train_autoencoder`), codes ``E W_eᵀ + b_e``, decoder ``(W_d, b_d)``.

    Args:
        model: the model (its word embeddings must be a dense, untied ``nn.Embedding``).
        method: ``svd`` or ``ae``.
        rank: latent size ``k``, ``1 <= k < d`` (see :func:`~slimformer.embeddings.svd.rank_for_ratio`).
        autoencoder: AE training settings (``ae`` only).
        trainable_table, trainable_decoder: which parts a later fine-tuning trains (§3(f)4; the official code
            trained only the AE decoder).
        int8_table: store the code table in int8 with per-row scales.
        progress: progress bar for the autoencoder.

    Returns:
        The installed module and a :class:`FactorizationInfo`.

    Raises:
        ConfigError: unknown method, rank out of range, tied or already-factorised embeddings.
    """
    emb = model.base.embeddings.word_embeddings
    if isinstance(emb, FactorizedEmbedding) or getattr(model.hf.config, RECORD_KEY, None):
        raise ConfigError("the word embeddings are already factorised; factorise the original model instead")
    vocab, dim = emb.weight.shape
    ratio = ratio_for_rank(vocab, dim, rank)  # raises on rank >= d or <= 0
    if has_tied_output_embeddings(model):
        install_factorized_(model, FactorizedEmbedding(vocab, dim, rank))  # raises the tied-embeddings error
    flags = {"trainable_table": trainable_table, "trainable_decoder": trainable_decoder}
    losses: list[float] = []
    if method == "svd":
        codes, decoder = svd_factorize(emb.weight, rank)  # (V, k), (k, d)
        module = FactorizedEmbedding.from_factors(codes, decoder.T, None, emb.padding_idx, **flags)
    elif method == "ae":
        res = train_autoencoder(emb.weight, rank, autoencoder, progress=progress)
        module = FactorizedEmbedding.from_factors(
            res.codes, res.decoder_weight, res.decoder_bias, emb.padding_idx, **flags
        )
        losses = res.epoch_losses
    else:
        raise ConfigError(f"embedding compression method {method!r} is unknown; expected 'svd' or 'ae'")
    if int8_table:
        module.quantize_table_()
    install_factorized_(model, module)
    info = FactorizationInfo(
        method=method,
        rank=rank,
        compression_ratio=ratio,
        dense_parameters=vocab * dim,
        factorized_parameters=vocab * rank + rank * dim,
        factorized_parameters_with_bias=module.num_parameters(with_bias=True),
        epoch_losses=losses,
    )
    return module, info


def replace_word_embeddings_(model: SlimModel, rank: int, method: Literal["svd", "ae"] = "svd") -> FactorizedEmbedding:
    """Shorthand for :func:`factorize_embeddings_` with every part trainable; returns the installed module."""
    return factorize_embeddings_(model, method, rank, trainable_table=True, trainable_decoder=True)[0]


def _embedding_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Tensors under ``...embeddings.word_embeddings.`` in the folder's safetensors files, keyed by the rest."""
    from safetensors import safe_open

    out: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                if _PREFIX in key:
                    out[key.split(_PREFIX, 1)[1]] = f.get_tensor(key)
    return out


def build_factorized_structure_(model: SlimModel) -> FactorizedEmbedding | None:
    """Install an uninitialised :class:`FactorizedEmbedding` as recorded in ``model``'s config (weights loaded later).

    Returns:
        The installed module, or None if the config records no factorisation.
    """
    record: dict[str, Any] | None = getattr(model.hf.config, RECORD_KEY, None)
    if record is None:
        return None
    dense = model.base.embeddings.word_embeddings
    module = FactorizedEmbedding.from_record(record, dtype=dense.weight.dtype)
    module.train(dense.training)
    model.base.embeddings.word_embeddings = module
    return module


def restore_factorized_embeddings_(model: SlimModel, folder: str | Path) -> FactorizedEmbedding | None:
    """Rebuild the factorised word embeddings recorded in ``model``'s config and load them from ``folder``.

    Called by the loaders after the Hugging Face model is built (which cannot know the factorised layer).

    Args:
        model: a model loaded from ``folder``.
        folder: the checkpoint folder (safetensors).

    Returns:
        The restored module, or None if the config records no factorisation.

    Raises:
        ModelLoadError: the weights hold a factorised table but the config has no record (or the reverse), or the
            tensors do not match the recorded structure.
    """
    folder = Path(folder)
    record: dict[str, Any] | None = getattr(model.hf.config, RECORD_KEY, None)
    tensors = _embedding_tensors(folder)
    factorized_keys = sorted(k for k in tensors if k != "weight")
    if record is None:
        if factorized_keys:
            raise ModelLoadError(
                f"{folder}: the weights hold a factorised word-embedding table ({', '.join(factorized_keys)}) but "
                f"config.json has no {RECORD_KEY!r} record; load it with the config it was saved with"
            )
        return None
    if "weight" in tensors or not factorized_keys:
        raise ModelLoadError(
            f"{folder}: config.json records factorised word embeddings but the weights hold a dense table"
        )
    try:
        module = build_factorized_structure_(model)
        assert module is not None  # the record exists
        module.load_state_dict(tensors, strict=True)
    except (KeyError, TypeError, RuntimeError, ConfigError) as e:
        first = str(e).strip().splitlines()[0]
        raise ModelLoadError(f"{folder}: factorised word embeddings do not match {RECORD_KEY}: {first}") from e
    return module


#: The factorised word-embedding table as a structure :mod:`slimformer.checkpoint` rebuilds on every load.
FACTORIZED_STRUCTURE = register_structure(
    Structure(config_key=RECORD_KEY, build=build_factorized_structure_, restore=restore_factorized_embeddings_)
)
