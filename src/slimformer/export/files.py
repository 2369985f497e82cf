"""File names inside an export folder."""

__all__ = ["FP32_FILE", "INT8_FILE"]

#: The fp32 graph and the int8 graph (ONNX Runtime PTQ, or the QDQ graph of a QAT model) of an export folder.
FP32_FILE, INT8_FILE = "model.onnx", "model.int8.onnx"
