"""User-facing errors.

Every error a user can cause with bad input (a data file, a recipe key, a model path, a CLI value)
is a :class:`SlimformerError`. Its message is one line naming the file / line / key / value and what
was expected. The CLI prints it as ``error: <message>`` and exits with status 2, without a traceback.
"""

from __future__ import annotations

__all__ = ["SlimformerError", "DataError", "ConfigError", "ModelLoadError", "ExportError"]


class SlimformerError(Exception):
    """Base class of every error caused by user input (CLI exit status 2)."""

    def __init__(self, message: str) -> None:
        # Keep the message on one line: the CLI contract is "one-line error".
        super().__init__(" ".join(str(message).split()))


class DataError(SlimformerError, ValueError):
    """A data file is missing, unreadable or does not follow its official format."""


class ConfigError(SlimformerError, ValueError):
    """A recipe, config value, task name or model alias is invalid."""


class ModelLoadError(SlimformerError, OSError):
    """A checkpoint folder is missing, has no (safe) weights, or does not match the expected model."""


class ExportError(SlimformerError, RuntimeError):
    """An exported (ONNX) model does not reproduce the PyTorch model, or has unexpected inputs/outputs."""
