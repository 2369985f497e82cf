"""How quantized models persist: the ``quantized`` weight format and the QAT save check, registered with
:mod:`slimformer.checkpoint` (imported by ``slimformer.quant``, so importing the package registers them)."""

from __future__ import annotations

from pathlib import Path

from slimformer.checkpoint import WeightFormat, register_save_check, register_weight_format
from slimformer.models import SlimModel
from slimformer.quant.qat import _STATE_ATTR, QuantizationState, qat_state
from slimformer.quant.storage import (
    COMPRESSION_FILE,
    is_quantized_folder,
    load_quantized_weights_,
    quantized_modules,
    save_quantized_weights,
)

__all__ = ["QUANTIZED_FORMAT", "refuse_prepared"]


def refuse_prepared(model: SlimModel) -> None:
    """Save check: a model in QAT state PREPARED would be saved as plain fp32 weights, losing its quantizers.

    Raises:
        RuntimeError: the model is in state PREPARED (call ``convert_qat_`` first).
    """
    if qat_state(model) is QuantizationState.PREPARED:
        raise RuntimeError(
            "cannot save a model in QAT state PREPARED; save needs state INITIALIZED or CONVERTED "
            "(call convert_qat_(model) after training)"
        )


def _save(model: SlimModel, folder: Path) -> None:
    save_quantized_weights(model.hf, folder, qat_state=qat_state(model).value)


def _load(model: SlimModel, folder: Path) -> None:
    state = load_quantized_weights_(model.hf, folder)
    setattr(model, _STATE_ATTR, QuantizationState(state))


QUANTIZED_FORMAT = register_weight_format(
    WeightFormat(
        name="quantized",
        stores_folder=is_quantized_folder,
        stores_model=lambda model: bool(quantized_modules(model.hf)),
        save=_save,
        load=_load,
        describe=f"a quantized model ({COMPRESSION_FILE}: packed codes, no fp32 weights for the quantized layers)",
    )
)
register_save_check(refuse_prepared)
