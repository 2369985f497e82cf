"""The ``export`` stage: a model folder to a deployable ONNX folder.

An export folder is a deployable artefact: ``model.onnx`` (fp32), optionally ``model.int8.onnx``, the
tokenizer files and ``slimformer.json`` (the model's metadata plus the export / quantize steps applied).
A length-adaptive model is exported with its length configuration as graph inputs
(:func:`slimformer.export.length.export_length_onnx`); a QAT-converted model as one QDQ int8 graph.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from slimformer.bench.machine import file_size_mb
from slimformer.checkpoint import load_model
from slimformer.config import IDENTITY_WHEN_SET, StageConfig
from slimformer.errors import ConfigError
from slimformer.evaluate import check_model_for_task
from slimformer.export import FP32_FILE, INT8_FILE, export_onnx, validate_outputs
from slimformer.export.length import export_length_onnx, validate_length_outputs
from slimformer.export.qdq import quantization_summary
from slimformer.io import atomic_files, atomic_write_json, check_output_path
from slimformer.length.config import load_length_config, save_length_config
from slimformer.models import META_FILE
from slimformer.stages.base import PlanState, RunContext, register_stage, require
from slimformer.stages.quantize import QuantizeConfig, quantize_model
from slimformer.tasks import TASKS

__all__ = ["ExportConfig", "export_model"]

PathLike = str | os.PathLike[str]


class ExportConfig(StageConfig):
    """Export to ONNX (fp32), with an output check against PyTorch, and optionally int8 in one go."""

    format: Literal["onnx"] = "onnx"
    opset: int = Field(17, ge=13, le=23)
    atol: float = Field(1e-4, gt=0, description="max abs difference allowed between PyTorch and ONNX Runtime (fp32)")
    qat_atol: float = Field(
        0.5,
        gt=0,
        description="same, for QAT-converted models (int8 kernels): float rounding flips dynamically quantized "
        "activations by one step, so outputs differ by ~0.01-0.4 (docs/quantization.md)",
    )
    int8: Literal["none", "dynamic", "static"] = Field("none", description="also write an int8 model")
    length_graph: Literal["any", "pick"] = Field(
        "any",
        description="length-adaptive models: 'any' = one graph serves every length configuration (pick a front "
        "point per call); 'pick' = selection ops only at the layers where the saved configuration drops tokens "
        "(faster when it keeps some layers at full length; serves only configurations that drop nowhere else)",
        json_schema_extra={IDENTITY_WHEN_SET: True},
    )


def export_model(
    model_dir: PathLike,
    config: ExportConfig,
    *,
    out: PathLike | None = None,
    data_root: str | None = None,
    calibration: Any = None,
) -> dict[str, Any]:
    """Export ``model_dir`` to ``out/model.onnx`` (fp32), check it against PyTorch, and copy tokenizer + metadata.

    A length-adaptive model (its folder has ``length_config.json``) is exported with
    :func:`slimformer.export.length.export_length_onnx`: the length configuration is a graph input whose default is
    the saved configuration (copied to ``out``); ``length_graph: pick`` leaves the selection ops out of the layers
    where that configuration drops nothing (:meth:`~slimformer.length.LengthConfig.selecting_layers`).

    Returns:
        ``{"export_dir", "onnx_fp32", "max_abs_diff", "size_mb"}`` (+ int8 outputs when ``config.int8`` is set).

    Raises:
        ExportError: ONNX Runtime and PyTorch differ by more than ``config.atol`` (nothing is written then).
        ConfigError: ``out`` is a file or cannot be written; the model's head does not fit the task its
            ``slimformer.json`` names.
    """
    out_dir = Path(out) if out else Path(model_dir) / "onnx"
    check_output_path(out_dir, kind="folder", option="export folder")
    loaded = load_model(model_dir)
    spec = TASKS.get(loaded.meta.task) if loaded.meta.task else None
    if spec is not None:  # slimformer.json names the task the head was trained for: they must agree
        check_model_for_task(loaded.model, spec, f"{model_dir} ({META_FILE}: task {spec.name})")
    summary = quantization_summary(loaded.model)
    if summary is not None:
        return _export_quantized(loaded, config, out_dir, summary)
    out_dir.mkdir(parents=True, exist_ok=True)
    length_config = load_length_config(model_dir)
    if length_config is None:
        fp32 = export_onnx(loaded.model, out_dir / FP32_FILE, opset=config.opset, atol=config.atol)
        diff = validate_outputs(loaded.model, fp32, atol=config.atol)
    else:  # a length-adaptive model: the configuration is a graph input, the saved one its default
        fp32 = out_dir / FP32_FILE
        select = length_config.selecting_layers() if config.length_graph == "pick" else None
        export_length_onnx(
            loaded.model, fp32, length_config, opset=config.opset, atol=config.atol, select_layers=select
        )
        diff = validate_length_outputs(loaded.model, fp32, [length_config], atol=config.atol)
        save_length_config(length_config, out_dir)
    _save_serving_files(loaded, out_dir)
    meta = loaded.meta
    meta.applied.append({"stage": "export", **config.model_dump(mode="json"), "max_abs_diff": diff})
    atomic_write_json(out_dir / META_FILE, asdict(meta))
    result: dict[str, Any] = {
        "export_dir": str(out_dir),
        "onnx_fp32": str(fp32),
        "max_abs_diff": diff,
        "size_mb": file_size_mb(fp32),
    }
    if config.int8 != "none":
        result.update(quantize_model(fp32, QuantizeConfig(mode=config.int8), data_root=data_root))
    return result


def _export_quantized(loaded: Any, config: ExportConfig, out_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """A quantized (QAT-converted) model: one QDQ graph with int8 weight codes, ``model.int8.onnx``."""
    if config.int8 != "none":
        raise ConfigError(
            f"{loaded.path}: the model is already quantized ({summary['label']}); int8: {config.int8} (ONNX Runtime "
            "PTQ) applies to fp32 models only, expected int8: none"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = export_onnx(loaded.model, out_dir / INT8_FILE, opset=config.opset, atol=config.qat_atol)
    diff = validate_outputs(loaded.model, path, atol=config.qat_atol)
    _save_serving_files(loaded, out_dir)
    meta = loaded.meta
    meta.applied.append(
        {"stage": "export", **config.model_dump(mode="json"), "max_abs_diff": diff, "quantization": summary}
    )
    atomic_write_json(out_dir / META_FILE, asdict(meta))
    return {
        "export_dir": str(out_dir),
        "onnx_int8": str(path),
        "max_abs_diff": diff,
        "size_mb": file_size_mb(path),
        "quantization": summary,
    }


def _save_serving_files(loaded: Any, out_dir: Path) -> None:
    """The tokenizer and the Hugging Face ``config.json`` (architecture, ``id2label`` / ``label2id``) beside the
    graphs, so ``slimformer.pipeline``, Optimum's ``ORTModelFor*`` and ``transformers.pipeline`` load the folder."""
    config = loaded.model.hf.config
    if loaded.meta.labels and config.num_labels == len(loaded.meta.labels):
        config.id2label = dict(enumerate(loaded.meta.labels))
        config.label2id = {name: i for i, name in enumerate(loaded.meta.labels)}
    with atomic_files(out_dir) as tmp:  # each file complete or absent, whenever the process is killed
        loaded.tokenizer.save_pretrained(tmp)
        config.save_pretrained(tmp)


def _check(plan: PlanState, cfg: ExportConfig) -> None:
    """Plan check: PTQ (``int8``) applies to a full-precision model only; withdraws the graphs it will not write
    (a quantized model exports one int8 QDQ graph and no fp32 one; ``int8: none`` writes no int8 graph)."""
    if plan.quantized_by is not None:
        if cfg.int8 != "none":
            raise ConfigError(
                f"int8: {cfg.int8} quantizes an fp32 graph, but the model of {plan.quantized_by!r} is already "
                "quantized (exported as one int8 QDQ graph); expected int8: none"
            )
        plan.withdraw("onnx_fp32")
    elif cfg.int8 == "none":
        plan.withdraw("onnx_int8")


@register_stage(
    "export", ExportConfig, needs=("model_dir",), produces=("export_dir", "onnx_fp32", "onnx_int8"), check=_check
)
def _export(ctx: RunContext, cfg: ExportConfig) -> dict[str, Any]:
    model_dir = require(ctx, "model_dir", "export", "finetune")
    return export_model(model_dir, cfg, out=ctx.stage_dir("export"), data_root=ctx.data_root)
