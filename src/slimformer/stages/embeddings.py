"""The ``embeddings`` recipe stage: factorise the token-embedding table (SVD or autoencoder) and measure it.

Paper: Bałazy et al. (https://arxiv.org/abs/2106.08181), METHODS.md §3. The stage compresses the model written by
the previous stage, or the recipe's ``model`` when it comes first (the paper's protocol: compress the pretrained
encoder, then fine-tune with ``finetune: {model: previous}``). It writes the factorised model (its structure is in
``config.json``, so later stages — fine-tune, export, int8 quantize, benchmark — keep it) and
``embeddings_report.json``: reconstruction error, zero-shot fidelity and zero-shot pair AUC.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from slimformer.checkpoint import load_model, load_pretrained, save_model
from slimformer.config import StageConfig, resolve_data_path
from slimformer.embeddings.autoencoder import AutoencoderConfig
from slimformer.embeddings.evaluate import pair_auc, reconstruction_metrics, token_frequencies, zero_shot_fidelity
from slimformer.embeddings.svd import rank_for_ratio
from slimformer.embeddings.transform import factorize_embeddings_
from slimformer.io import atomic_write_json
from slimformer.models.load import META_FILE, ModelMeta
from slimformer.stages.base import RunContext, register_stage
from slimformer.tasks.glue import read_glue

__all__ = ["EmbeddingsConfig", "compress_embeddings"]


class EmbeddingsConfig(StageConfig):
    """Compress the token-embedding table to a rank-``k`` factorisation (give ``ratio`` or ``rank``)."""

    model: str = Field("minilm-l6", description="model to compress when no earlier stage wrote one")
    method: Literal["svd", "ae"] = Field("ae", description="svd (exact truncated SVD) or ae (direction-aware AE)")
    ratio: float | None = Field(None, gt=1, description="target compression ratio V·d / (V·k + k·d) of the table")
    rank: int | None = Field(None, ge=1, description="latent size k (instead of ratio)")
    trainable_table: bool = Field(False, description="a later fine-tuning trains the code table (paper: frozen)")
    trainable_decoder: bool = Field(True, description="a later fine-tuning trains the decoder (paper: AE yes)")
    int8_table: bool = Field(False, description="store the code table in int8 with per-row scales")
    autoencoder: AutoencoderConfig = Field(default_factory=AutoencoderConfig, description="AE training settings")
    sentences: str | None = Field(
        "glue_data/SST-2", description="GLUE folder whose dev sentences measure zero-shot fidelity (None: skip)"
    )
    sentences_task: str = Field("sst2", description="task of `sentences` (its train split gives token counts)")
    pairs: str | None = Field("glue_data/MRPC", description="MRPC folder for zero-shot pair ROC-AUC (None: skip)")
    max_examples: int | None = Field(None, ge=1, description="cap on sentences / pairs used by the zero-shot checks")

    @model_validator(mode="after")
    def _one_size(self) -> EmbeddingsConfig:
        if (self.ratio is None) == (self.rank is None):
            raise ValueError("give exactly one of ratio or rank")
        return self


def _load_source(source: str) -> tuple[Any, Any, Any]:
    if (Path(source) / META_FILE).is_file():
        loaded = load_model(source)
        return loaded.model, loaded.tokenizer, loaded.meta
    model, tok = load_pretrained(source, "none")
    return model, tok, ModelMeta(head="none", base_model=source)


def compress_embeddings(
    source: str, cfg: EmbeddingsConfig, out: str | Path, *, data_root: str | None = None, progress: bool = True
) -> dict[str, Any]:
    """Factorise ``source``'s token embeddings per ``cfg``, evaluate zero-shot, save to ``out``.

    Args:
        source: model alias, HF folder or slimformer model folder.
        cfg: the stage config.
        out: folder to write (replaced atomically).
        data_root: root of relative data paths.
        progress: progress bar for the autoencoder.

    Returns:
        The report written to ``out/embeddings_report.json`` (method, rank, compression_ratio, parameter counts,
        reconstruction, fidelity, pair AUC of the original and of the compressed encoder, AE losses).

    Raises:
        ConfigError: a rank ≥ hidden size, a ratio that cannot be met, tied output embeddings.
        ModelLoadError, DataError: the model or the evaluation data cannot be read.
    """
    import torch

    model, tok, meta = _load_source(source)
    model.eval()
    dense = model.base.embeddings.word_embeddings.weight.detach().clone()  # (V, d)
    vocab, dim = dense.shape
    rank = cfg.rank if cfg.rank is not None else rank_for_ratio(vocab, dim, cfg.ratio)  # type: ignore[arg-type]
    original = copy.deepcopy(model)
    module, info = factorize_embeddings_(
        model,
        cfg.method,
        rank,
        autoencoder=cfg.autoencoder,
        trainable_table=cfg.trainable_table,
        trainable_decoder=cfg.trainable_decoder,
        int8_table=cfg.int8_table,
        progress=progress,
    )
    cap = cfg.max_examples
    report: dict[str, Any] = {"source": source, **info.__dict__, "int8_table": cfg.int8_table}
    freq = None
    if cfg.sentences is not None:
        folder = resolve_data_path(cfg.sentences, data_root)
        train = [e.text_a for e in read_glue(cfg.sentences_task, folder, "train")]
        freq = token_frequencies(tok, train, vocab)
        dev = [e.text_a for e in read_glue(cfg.sentences_task, folder, "dev")][:cap]
        report["fidelity"] = zero_shot_fidelity(original, model, tok, dev)
        report["fidelity_sentences"] = len(dev)
    with torch.no_grad():
        report["reconstruction"] = reconstruction_metrics(dense, module.to_embedding().weight, freq)
    if cfg.pairs is not None:
        rows = read_glue("mrpc", resolve_data_path(cfg.pairs, data_root), "dev")[:cap]
        pairs, labels = [(e.text_a, e.text_b or "") for e in rows], [int(e.label) for e in rows]
        report["pair_auc"] = pair_auc(model, tok, pairs, labels)
        report["pair_auc_original"] = pair_auc(original, tok, pairs, labels)
        report["pairs"] = len(pairs)
    meta.applied = [*meta.applied, {"stage": "embeddings", **cfg.model_dump(mode="json"), "rank": rank}]
    save_model(model, tok, out, meta)
    atomic_write_json(Path(out) / "embeddings_report.json", report)
    return report


@register_stage("embeddings", EmbeddingsConfig, inherits=("model",), produces_model=True)
def _embeddings(ctx: RunContext, cfg: EmbeddingsConfig) -> dict[str, Any]:
    source = ctx.latest("model_dir") or cfg.model
    out = ctx.stage_dir("embeddings")
    report = compress_embeddings(str(source), cfg, out, data_root=ctx.data_root)
    keys = ("method", "rank", "compression_ratio", "fidelity", "pair_auc", "pair_auc_original", "reconstruction")
    return {"model_dir": str(out), "embeddings": {k: report[k] for k in keys if k in report}}
