"""Files the search and report stages derive from a model folder: its fingerprint and its int8 length graph.

* :func:`model_fingerprint` identifies the *weights* (the search store's ``model_id``; METHODS §1(f) pitfall 9
  and docs/length-search.md: a store written for other weights is refused).
* :func:`export_length_int8` writes the fp32 and int8 length-adaptive ONNX graphs of a model (the
  configuration is a graph input, default = full model) into a folder, with tokenizer and metadata so that
  static int8 calibration and evaluation find what they need; an up-to-date export is reused.
* :func:`copy_model_with_config` writes a model folder holding a chosen length configuration.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from slimformer.checkpoint import load_model
from slimformer.export import FP32_FILE, INT8_FILE
from slimformer.export.length import LENGTH_GRAPH_VERSION, export_length_onnx
from slimformer.io import atomic_dir, atomic_files, atomic_write_json, read_json
from slimformer.length.config import LENGTH_CONFIG_FILE, LengthConfig, save_length_config
from slimformer.models.load import META_FILE
from slimformer.stages.quantize import QuantizeConfig, quantize_model

__all__ = ["model_fingerprint", "export_length_int8", "copy_model_with_config"]

PathLike = str | os.PathLike[str]
_STAMP = "length_export.json"


def model_fingerprint(model_dir: PathLike) -> str:
    """``sha256:<first 16 hex>`` of the folder's ``model.safetensors`` (raises ``FileNotFoundError`` if absent)."""
    h = hashlib.sha256()
    with open(Path(model_dir) / "model.safetensors", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return f"sha256:{h.hexdigest()[:16]}"


def export_length_int8(
    model_dir: PathLike,
    out_dir: PathLike,
    *,
    mode: Literal["dynamic", "static"] = "dynamic",
    per_channel: bool = True,
    calibration_examples: int = 256,
    data_root: str | None = None,
    atol: float = 1e-4,
) -> tuple[Path, Path]:
    """fp32 and int8 length-adaptive graphs of ``model_dir`` in ``out_dir`` (``model.onnx``, ``model.int8.onnx``).

    The fp32 graph is checked against :func:`~slimformer.length.selector.forward_with_config` (``atol``);
    the int8 one is ONNX Runtime int8 post-training quantization (``mode``; static calibrates on
    ``calibration_examples`` training examples of the model's task). An export recorded in
    ``out_dir/length_export.json`` for the same weights, settings and graph version (``LENGTH_GRAPH_VERSION``)
    is reused as is.

    Returns:
        ``(fp32 path, int8 path)``.

    Raises:
        ExportError: the fp32 graph does not reproduce PyTorch. ModelLoadError: bad model folder.
    """
    out = Path(out_dir)
    fp32, int8 = out / FP32_FILE, out / INT8_FILE
    stamp = {
        "model": str(Path(model_dir).resolve()),
        "weights": model_fingerprint(model_dir),
        "mode": mode,
        "per_channel": per_channel,
        "calibration_examples": calibration_examples if mode == "static" else None,
        "graph": LENGTH_GRAPH_VERSION,
    }
    if fp32.is_file() and int8.is_file() and (out / _STAMP).is_file() and read_json(out / _STAMP) == stamp:
        return fp32, int8
    (out / _STAMP).unlink(missing_ok=True)
    loaded = load_model(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    export_length_onnx(loaded.model, fp32, None, atol=atol)
    with atomic_files(out) as tmp:
        loaded.tokenizer.save_pretrained(tmp)
    meta = loaded.meta
    meta.applied.append({"stage": "export", "length_adaptive": True, "default_length_config": "full"})
    atomic_write_json(out / META_FILE, asdict(meta))
    cfg = QuantizeConfig(mode=mode, per_channel=per_channel, calibration_examples=calibration_examples)
    quantize_model(fp32, cfg, data_root=data_root)
    atomic_write_json(out / _STAMP, stamp)
    return fp32, int8


def copy_model_with_config(model_dir: PathLike, out: PathLike, config: LengthConfig, record: dict[str, Any]) -> Path:
    """Write ``out``: the files of ``model_dir`` plus ``length_config.json`` = ``config`` and ``record`` appended
    to ``slimformer.json``'s ``applied`` (atomically; files are hard-linked when possible, else copied).

    Returns:
        ``out`` as a :class:`Path`.
    """
    src = Path(model_dir)
    with atomic_dir(out) as tmp:
        for f in src.iterdir():
            if not f.is_file() or f.name in (LENGTH_CONFIG_FILE, META_FILE, "eval_results.json"):
                continue
            try:
                os.link(f, tmp / f.name)
            except OSError:
                shutil.copy2(f, tmp / f.name)
        meta = read_json(src / META_FILE)
        meta["applied"] = [*meta.get("applied", []), record]
        atomic_write_json(tmp / META_FILE, meta)
        save_length_config(config, tmp)
    return Path(out)
