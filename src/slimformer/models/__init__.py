"""Models: plain Hugging Face checkpoints offline and the encoder forward the compression methods act on.

Saving and loading slimformer model folders (with the structure compression methods add) is
:mod:`slimformer.checkpoint`.
"""

from slimformer.models.encoder import Capture, EncoderOutput, TokenSelector, encoder_forward
from slimformer.models.load import (
    META_FILE,
    MODEL_ALIASES,
    LoadedModel,
    ModelMeta,
    library_versions,
    resolve_model_path,
)
from slimformer.models.model import HeadKind, SlimModel, TaskOutput

__all__ = [
    "Capture",
    "EncoderOutput",
    "TokenSelector",
    "encoder_forward",
    "META_FILE",
    "MODEL_ALIASES",
    "LoadedModel",
    "ModelMeta",
    "library_versions",
    "resolve_model_path",
    "HeadKind",
    "SlimModel",
    "TaskOutput",
]
