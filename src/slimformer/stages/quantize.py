"""The ``quantize`` stage: int8 post-training quantization (ONNX Runtime) of an exported fp32 graph."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from slimformer.bench.machine import file_size_mb
from slimformer.checkpoint import read_meta
from slimformer.config import StageConfig, resolve_data_path
from slimformer.errors import ConfigError
from slimformer.evaluate import pad_batch
from slimformer.export import INT8_FILE, Int8Config, quantize_int8
from slimformer.io import atomic_write_json
from slimformer.models import META_FILE, ModelMeta
from slimformer.models.load import load_tokenizer
from slimformer.stages.base import RunContext, register_stage, require
from slimformer.tasks.data import load_train_features

__all__ = ["QuantizeConfig", "quantize_model", "training_data"]

PathLike = str | os.PathLike[str]


class QuantizeConfig(StageConfig):
    """int8 post-training quantization of the exported ONNX model with ONNX Runtime's tools."""

    method: Literal["int8-ptq"] = "int8-ptq"
    mode: Literal["dynamic", "static"] = "dynamic"
    per_channel: bool = Field(True, description="per-channel (per output row) weight scales")
    calibration_examples: int = Field(256, ge=1, description="static: training examples used for calibration")

    @field_validator("calibration_examples")
    @classmethod
    def _cap(cls, v: int) -> int:
        if v > 100_000:
            raise ValueError("calibration_examples above 100000 is not useful; expected ≤ 100000")
        return v


def _meta_of(folder: Path) -> ModelMeta:
    return read_meta(folder)


def training_data(meta: ModelMeta) -> tuple[str, str, dict[str, Any]]:
    ft = meta.origin()
    if ft is None or not meta.task:
        raise ConfigError("the model's slimformer.json records no fine-tuning (task and data are needed)")
    return meta.task, ft["data"], ft


def _calibration_batches(folder: Path, n: int, data_root: str | None) -> list[dict[str, Any]]:
    """``n`` real training examples of the model's task, padded per batch of 32 (static int8 calibration)."""
    meta = _meta_of(folder)
    task, data, ft = training_data(meta)
    tok = load_tokenizer(str(folder), True)  # no remote code (auto_map is refused)
    feats = load_train_features(
        task,
        resolve_data_path(data, data_root),
        tok,
        max_seq_length=meta.max_seq_length,
        max_examples=n,
        seed=ft.get("seed", 42),
        squad_split=ft.get("squad_split", "dev-article-split"),
    ).features[:n]
    return [pad_batch(feats[i : i + 32], tok.pad_token_id or 0) for i in range(0, len(feats), 32)]


def quantize_model(onnx_fp32: PathLike, config: QuantizeConfig, *, data_root: str | None = None) -> dict[str, Any]:
    """int8 post-training quantization (ONNX Runtime) of an exported fp32 graph, next to it as ``model.int8.onnx``.

    Static mode calibrates on ``config.calibration_examples`` training examples of the model's task.

    Returns:
        ``{"onnx_int8", "int8": <config dict>, "size_mb"}``.
    """
    fp32 = Path(onnx_fp32)
    kw = {"per_channel": config.per_channel, "calibration_examples": config.calibration_examples}
    int8_cfg = (
        Int8Config.static(**kw) if config.mode == "static" else Int8Config.dynamic(per_channel=config.per_channel)
    )
    batches = (
        _calibration_batches(fp32.parent, config.calibration_examples, data_root) if config.mode == "static" else None
    )
    out = quantize_int8(fp32, fp32.parent / INT8_FILE, int8_cfg, batches)
    meta = _meta_of(fp32.parent)
    # the int8 graph was just replaced: an earlier quantize record (a run killed before state.json) describes none
    meta.applied = [a for a in meta.applied if a.get("stage") != "quantize"]
    meta.applied.append({"stage": "quantize", **config.model_dump(mode="json"), "int8": int8_cfg.to_dict()})
    atomic_write_json(fp32.parent / META_FILE, asdict(meta))
    return {"onnx_int8": str(out), "int8": int8_cfg.to_dict(), "size_mb": file_size_mb(out)}


@register_stage("quantize", QuantizeConfig, quantized_output=True, needs=("onnx_fp32",), produces=("onnx_int8",))
def _quantize(ctx: RunContext, cfg: QuantizeConfig) -> dict[str, Any]:
    onnx_fp32 = require(ctx, "onnx_fp32", "quantize", "export")
    return quantize_model(onnx_fp32, cfg, data_root=ctx.data_root)
