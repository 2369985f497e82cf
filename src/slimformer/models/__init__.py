"""Models: offline loading/saving and the encoder forward the compression methods act on."""

from slimformer.models.encoder import Capture, EncoderOutput, TokenSelector, encoder_forward
from slimformer.models.load import (
    MODEL_ALIASES,
    LoadedModel,
    ModelMeta,
    load_model,
    load_pretrained,
    resolve_model_path,
    save_model,
)
from slimformer.models.model import HeadKind, SlimModel, TaskOutput

__all__ = [
    "Capture",
    "EncoderOutput",
    "TokenSelector",
    "encoder_forward",
    "MODEL_ALIASES",
    "LoadedModel",
    "ModelMeta",
    "load_model",
    "load_pretrained",
    "resolve_model_path",
    "save_model",
    "HeadKind",
    "SlimModel",
    "TaskOutput",
]
