"""Quantization primitives: stateless functions and granularity value objects (no modules, no state).

Uniform k-bit (:func:`choose_qparams`, :func:`quantize`, :func:`dequantize`, :func:`fake_quantize`), ternary
(:func:`ternarize`, TWN), binary (:func:`binarize`, BWN), learned step size (:func:`lsq_quantize`, LSQ) and
Quant-Noise (:func:`quant_noise`). See METHODS.md §4(b) and §5(b).

Low-bit QAT (:mod:`slimformer.quant.qat`): quantizer values (:class:`UniformWeight`, :class:`TernaryWeight`,
:class:`BinaryWeight`, :class:`ActivationQuantizer`), :class:`FakeQuantLinear` / :class:`QuantizedLinear`, and the
two phases :func:`prepare_qat_` / :func:`convert_qat_` with their :class:`QuantizationState`.

Deployment: :class:`QuantizedEmbedding` / :func:`quantize_embeddings_` (low-bit word-embedding table),
:func:`pack_codes` / :func:`unpack_codes` (1/2/4/8-bit storage), :mod:`slimformer.quant.storage` (the packed
folder format that :mod:`slimformer.checkpoint` uses,
registered by :mod:`slimformer.quant.persistence`) and :mod:`slimformer.quant.serialize` (quantizers as JSON).
"""

from __future__ import annotations

from slimformer.quant import persistence as _persistence  # noqa: F401  (registers the quantized weight format)
from slimformer.quant.embedding import FakeQuantEmbedding, QuantizedEmbedding, quantize_embeddings_
from slimformer.quant.granularity import (
    Granularity,
    GroupLayout,
    PerGroup,
    PerRow,
    PerTensor,
    group_layout,
    to_groups,
)
from slimformer.quant.modules import (
    ActivationQuantizer,
    BinaryWeight,
    FakeQuantLinear,
    QuantizedLinear,
    TernaryWeight,
    UniformWeight,
    WeightQuantizer,
    has_dynamic_activation_quantizers,
)
from slimformer.quant.packing import STORAGE_BITS, pack_codes, unpack_codes
from slimformer.quant.primitives import (
    SUPPORTED_BITS,
    binarize,
    choose_qparams,
    dequantize,
    fake_quantize,
    lsq_quantize,
    quant_noise,
    quant_range,
    quantize,
    ternarize,
    ternary_codes,
)
from slimformer.quant.qat import QATConfig, QuantizationState, convert_qat_, prepare_qat_, qat_state, qat_targets

__all__ = [
    "Granularity",
    "GroupLayout",
    "PerGroup",
    "PerRow",
    "PerTensor",
    "group_layout",
    "to_groups",
    "SUPPORTED_BITS",
    "binarize",
    "choose_qparams",
    "dequantize",
    "fake_quantize",
    "lsq_quantize",
    "quant_noise",
    "quant_range",
    "quantize",
    "ternarize",
    "ternary_codes",
    "ActivationQuantizer",
    "BinaryWeight",
    "FakeQuantLinear",
    "QuantizedLinear",
    "TernaryWeight",
    "UniformWeight",
    "WeightQuantizer",
    "has_dynamic_activation_quantizers",
    "QATConfig",
    "QuantizationState",
    "convert_qat_",
    "prepare_qat_",
    "qat_state",
    "qat_targets",
    "FakeQuantEmbedding",
    "QuantizedEmbedding",
    "quantize_embeddings_",
    "STORAGE_BITS",
    "pack_codes",
    "unpack_codes",
]
