"""Offline graph fusion with ONNX Runtime's transformer optimizer (``onnxruntime.transformers.optimizer``).

On a graph from :func:`~slimformer.export.export_onnx` (TorchScript exporter) it fuses each layer's attention
into one ``Attention`` op, the embeddings into ``EmbedLayerNormalization``, residual + LayerNorm into
``SkipLayerNormalization`` and bias + GELU into ``BiasGelu``. Whether that pays off depends on the runtime
(see ``Int8Config.optimize``): measured on a 2-core AVX-512 VNNI CPU, ORT's own load-time optimizations
already get most of it, and dynamic int8 was not faster on the fused graph.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from slimformer.errors import ExportError
from slimformer.export._proto import add_metadata, atomic_output, read_metadata
from slimformer.export.ort import require_onnxruntime

__all__ = ["optimize_onnx"]


def optimize_onnx(
    fp32_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    num_heads: int | None = None,
    hidden_size: int | None = None,
) -> Path:
    """Fuse attention / LayerNorm / GELU of an exported BERT-family fp32 graph (BERT, RoBERTa, XLM-R).

    Args:
        fp32_path: an fp32 ``.onnx`` file from :func:`~slimformer.export.export_onnx`.
        out_path: where to write the fused graph (atomically).
        num_heads, hidden_size: attention heads and hidden size; default to the values ``export_onnx``
            records in the file's metadata.

    Returns:
        ``out_path`` as a :class:`Path`; the file records ``slimformer.fused_ops`` (fused op counts).

    Raises:
        ExportError: the head count / hidden size are neither given nor recorded in the file.
        ImportError: onnxruntime is not installed.
    """
    require_onnxruntime()
    from onnxruntime.transformers.optimizer import optimize_model

    meta = read_metadata(fp32_path)
    num_heads = num_heads or int(meta.get("slimformer.num_attention_heads", 0))
    hidden_size = hidden_size or int(meta.get("slimformer.hidden_size", 0))
    if not (num_heads and hidden_size):
        raise ExportError(f"{fp32_path}: pass num_heads and hidden_size (not recorded in the file's metadata)")
    level = logging.getLogger("onnxruntime.transformers").level
    logging.getLogger("onnxruntime.transformers").setLevel(logging.WARNING)  # the optimizer logs every fusion
    try:
        optimized = optimize_model(str(fp32_path), model_type="bert", num_heads=num_heads, hidden_size=hidden_size)
    finally:
        logging.getLogger("onnxruntime.transformers").setLevel(level)
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    with atomic_output(out_path) as tmp:
        optimized.save_model_to_file(str(tmp), use_external_data_format=False)
        add_metadata(tmp, {**meta, "slimformer.fused_ops": str(fused)})
    return Path(out_path)
