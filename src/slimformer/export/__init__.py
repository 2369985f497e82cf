"""Export: ONNX export with a parity check, ONNX Runtime int8 quantization, and the deployed session wrapper.

Importing this package does not import ``onnx`` or ``onnxruntime``; they are imported when a function needs
them (``pip install 'slimformer[onnx]'``).
"""

from slimformer.errors import ExportError
from slimformer.export.files import FP32_FILE, INT8_FILE
from slimformer.export.int8_config import Int8Config
from slimformer.export.onnx import ExportWrapper, export_mode, export_onnx, validate_outputs
from slimformer.export.optimize import optimize_onnx
from slimformer.export.ort import OrtModel, dynamic_activation_scales, require_onnxruntime
from slimformer.export.quantize import quantize_dynamic_int8, quantize_int8, quantize_static_int8
from slimformer.export.spec import DummyInputGenerator, OnnxSpec, onnx_spec, uses_token_type_ids

__all__ = [
    "FP32_FILE",
    "INT8_FILE",
    "ExportError",
    "ExportWrapper",
    "export_mode",
    "export_onnx",
    "validate_outputs",
    "Int8Config",
    "quantize_int8",
    "quantize_dynamic_int8",
    "quantize_static_int8",
    "optimize_onnx",
    "OrtModel",
    "dynamic_activation_scales",
    "require_onnxruntime",
    "DummyInputGenerator",
    "OnnxSpec",
    "onnx_spec",
    "uses_token_type_ids",
]
