"""Importing slimformer (and its model layer) must stay lean: no ONNX Runtime, no CUDA initialisation."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["slimformer", "slimformer.models"])
def test_import_does_not_load_onnxruntime(module):
    code = (
        f"import sys, {module}\n"
        "assert 'onnxruntime' not in sys.modules, 'onnxruntime was imported'\n"
        "assert 'onnx' not in sys.modules, 'onnx was imported'\n"
        "torch = sys.modules.get('torch')\n"
        "assert torch is None or not torch.cuda.is_initialized(), 'CUDA was initialised'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
