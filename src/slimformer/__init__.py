"""slimformer: make Transformer encoders small and fast for a given inference budget.

The public API (``finetune``, ``evaluate``, ``export``, ``benchmark``, ``compress``, ``load``) lives in
:mod:`slimformer.api` and is re-exported here lazily, so ``import slimformer`` stays light (no onnxruntime,
no transformers model code until a function is called).
"""

from __future__ import annotations

from typing import Any

from slimformer._version import __version__

__all__ = [
    "finetune",
    "evaluate",
    "export",
    "benchmark",
    "compress",
    "load",
    "FinetuneConfig",
    "EvaluateConfig",
    "ExportConfig",
    "BenchmarkConfig",
    "pipeline",
    "__version__",
]

_API = set(__all__) - {"__version__", "pipeline"}


def __getattr__(name: str) -> Any:
    if name == "pipeline":
        from slimformer import serving  # local: lean `import slimformer` (lazy attribute)

        return serving.pipeline
    if name in _API:
        from slimformer import api  # local: lean `import slimformer` (lazy attribute)

        return getattr(api, name)
    raise AttributeError(f"module 'slimformer' has no attribute {name!r}")
