"""On-disk form of a quantized model: packed codes + scales, and the config that rebuilds the modules.

A quantized model folder (written by :func:`slimformer.checkpoint.save_model`) holds, next to ``config.json``,
the tokenizer and ``slimformer.json``:

* ``model.safetensors`` — every tensor of the model's state dict that is *not* a quantized weight (embeddings
  left in fp32, LayerNorms, biases, task head), under the Hugging Face names.
* ``quantized.safetensors`` — per quantized module ``<fqn>``: ``<fqn>.weight_packed`` (``uint8``, codes packed
  at :func:`~slimformer.quant.serialize.storage_bits` bits each, see :mod:`slimformer.quant.packing`) and
  ``<fqn>.weight_scale`` (fp32, the quantizer's scale shape).
* ``compression_config.json`` — :data:`FORMAT_VERSION`, the QAT lifecycle state, and one record per quantized
  module: ``fqn``, ``kind`` (``linear`` / ``embedding``), ``scheme`` (``int8`` ... ``ternary``, ``binary``),
  ``bits`` (storage bits per weight), ``shape``, ``weight`` and ``activation`` quantizers (plain JSON).

The config is the model (STYLE.md §6): :func:`restore_quantized_` swaps :class:`QuantizedLinear` /
:class:`QuantizedEmbedding` modules back in from these records, and the loaded model computes exactly what the
saved one did (same codes, same scales, same forward).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from slimformer._version import __version__
from slimformer.errors import ConfigError, ModelLoadError
from slimformer.io import atomic_write_json, read_json
from slimformer.quant.embedding import QuantizedEmbedding
from slimformer.quant.granularity import group_layout
from slimformer.quant.modules import ActivationQuantizer, BinaryWeight, QuantizedLinear, TernaryWeight, UniformWeight
from slimformer.quant.packing import pack_codes, unpack_codes
from slimformer.quant.serialize import quantizer_from_dict, quantizer_to_dict, scheme_name, storage_bits

__all__ = [
    "COMPRESSION_FILE",
    "QUANTIZED_WEIGHTS_FILE",
    "FORMAT_VERSION",
    "quantized_modules",
    "split_quantized_state",
    "restore_quantized_",
    "is_quantized_folder",
    "save_quantized_weights",
    "load_quantized_weights_",
]

COMPRESSION_FILE = "compression_config.json"
QUANTIZED_WEIGHTS_FILE = "quantized.safetensors"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
_QUANT_BUFFERS = ("weight_codes", "weight_scale")

QuantizedModule = QuantizedLinear | QuantizedEmbedding


def quantized_modules(model: nn.Module) -> dict[str, QuantizedModule]:
    """``{fqn: module}`` of every :class:`QuantizedLinear` / :class:`QuantizedEmbedding` in ``model``."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (QuantizedLinear, QuantizedEmbedding))}


def _record(fqn: str, m: QuantizedModule) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "fqn": fqn,
        "kind": "linear" if isinstance(m, QuantizedLinear) else "embedding",
        "scheme": scheme_name(m.weight_q),
        "bits": storage_bits(m.weight_q),
        "shape": list(m.weight_codes.shape),
        "weight": quantizer_to_dict(m.weight_q),
    }
    if isinstance(m, QuantizedLinear):
        rec["activation"] = None if m.act_q is None else quantizer_to_dict(m.act_q)
        rec["bias"] = m.bias is not None
    else:
        rec["padding_idx"] = m.padding_idx
    return rec


def split_quantized_state(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Any]]:
    """Split ``model.state_dict()`` into plain tensors, packed quantized tensors and the compression config.

    Args:
        model: the module whose state-dict names the files use (for a SlimModel: ``model.hf``).

    Returns:
        ``(plain, packed, config)``: ``plain`` = every state-dict entry except the quantized modules'
        ``weight_codes`` / ``weight_scale``; ``packed`` = ``{fqn}.weight_packed`` ``uint8`` ``(ceil(numel·bits/8),)``
        and ``{fqn}.weight_scale`` per module; ``config`` = the JSON-ready ``compression_config.json`` (without
        the lifecycle state, which the caller adds). Tensors are contiguous and on the CPU.
    """
    modules = quantized_modules(model)
    quant_keys = {f"{fqn}.{b}" if fqn else b for fqn in modules for b in _QUANT_BUFFERS}
    plain = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k not in quant_keys}
    packed: dict[str, Tensor] = {}
    records, n_quant = [], 0
    for fqn, m in modules.items():
        packed[f"{fqn}.weight_packed"] = pack_codes(m.weight_codes.cpu(), storage_bits(m.weight_q))
        packed[f"{fqn}.weight_scale"] = m.weight_scale.detach().cpu().contiguous()
        records.append(_record(fqn, m))
        n_quant += m.weight_codes.numel()
    config = {
        "_type": "SlimformerCompression",
        "format_version": FORMAT_VERSION,
        "slimformer_version": __version__,
        "quantized_params": n_quant,
        "other_params": sum(v.numel() for v in plain.values() if v.is_floating_point()),
        "modules": records,
    }
    return plain, packed, config


# --------------------------------------------------------------------------------------------- loading


def _fail(source: str, fqn: str, msg: str) -> ModelLoadError:
    return ModelLoadError(f"{source}: quantized module {fqn!r}: {msg}")


def _max_code(weight_q: Any) -> int:
    if isinstance(weight_q, (TernaryWeight, BinaryWeight)):
        return 1
    return 2 ** (weight_q.bits - 1) - 1


def _decode_record(rec: Any, source: str) -> tuple[str, Any, Any]:
    if not isinstance(rec, dict) or not isinstance(rec.get("fqn"), str):
        raise ModelLoadError(f"{source}: a module record is not an object with an 'fqn' string: {rec!r}")
    fqn = rec["fqn"]
    missing = [k for k in ("kind", "shape", "weight", "bits") if k not in rec]
    if missing or rec["kind"] not in ("linear", "embedding"):
        raise _fail(source, fqn, f"record needs kind linear|embedding, shape, bits and weight; got {rec!r}")
    try:
        weight_q = quantizer_from_dict(rec["weight"])
        act = rec.get("activation")
        act_q = None if act is None else quantizer_from_dict(act)
    except ConfigError as e:
        raise _fail(source, fqn, str(e)) from e
    if not isinstance(weight_q, (UniformWeight, TernaryWeight, BinaryWeight)) or not (
        act_q is None or isinstance(act_q, ActivationQuantizer)
    ):
        raise _fail(source, fqn, "weight must be a weight quantizer and activation an ActivationQuantizer or null")
    if rec["bits"] != storage_bits(weight_q):
        raise _fail(source, fqn, f"bits {rec['bits']} do not match its {scheme_name(weight_q)} weight quantizer")
    return fqn, weight_q, act_q


def _take_tensors(
    tensors: Mapping[str, Tensor], fqn: str, rec: dict[str, Any], weight_q: Any, source: str
) -> tuple[Tensor, Tensor]:
    shape = tuple(rec["shape"])
    packed, scale = tensors.get(f"{fqn}.weight_packed"), tensors.get(f"{fqn}.weight_scale")
    if packed is None or scale is None:
        raise _fail(source, fqn, "weight_packed / weight_scale missing from the quantized weights file")
    try:
        codes = unpack_codes(packed, rec["bits"], shape)
        scale_shape = group_layout(shape, weight_q.granularity).scale_shape
    except ConfigError as e:
        raise _fail(source, fqn, str(e)) from e
    if tuple(scale.shape) != scale_shape or not scale.is_floating_point():
        raise _fail(source, fqn, f"weight_scale {scale.dtype} {tuple(scale.shape)}; expected float {scale_shape}")
    if not bool(torch.isfinite(scale).all()) or bool((scale < 0).any()):
        raise _fail(source, fqn, "weight_scale holds negative or non-finite values")
    qmax = _max_code(weight_q)
    if bool((codes.abs() > qmax).any()):
        raise _fail(source, fqn, f"codes outside [-{qmax}, {qmax}] for {scheme_name(weight_q)} (corrupt file?)")
    return codes, scale


def _swap(root: nn.Module, fqn: str, new: nn.Module) -> None:
    parent, _, child = fqn.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


def restore_quantized_(
    model: nn.Module, tensors: Mapping[str, Tensor], config: Any, *, source: str = "quantized model"
) -> nn.Module:
    """Swap the recorded quantized modules into an unquantized ``model``, in place, from packed tensors.

    Each record's ``fqn`` must name an ``nn.Linear`` (``kind: linear``) or ``nn.Embedding`` (``kind: embedding``)
    of ``model`` with the recorded shape; it is replaced by a :class:`QuantizedLinear` / :class:`QuantizedEmbedding`
    holding the unpacked codes and the scales (a Linear keeps its current bias, which the caller's state-dict load
    overwrites). Every tensor of ``tensors`` must belong to a record.

    Args:
        model: the freshly built model (e.g. ``SlimModel.hf``) whose names the records use.
        tensors: the contents of ``quantized.safetensors``.
        config: the parsed ``compression_config.json``.
        source: file name used in error messages.

    Returns:
        ``model``.

    Raises:
        ModelLoadError: wrong format version; a record that does not parse; a module that does not exist, is
            not a plain Linear / Embedding (already quantized) or has another shape; a missing, extra or
            malformed tensor (length, scale shape, codes out of range). Nothing is swapped when any check fails.
    """
    if not isinstance(config, dict) or config.get("format_version") != FORMAT_VERSION:
        found = config.get("format_version") if isinstance(config, dict) else config
        raise ModelLoadError(f"{source}: format_version {found!r}; this slimformer reads version {FORMAT_VERSION}")
    records = config.get("modules")
    if not isinstance(records, list):
        raise ModelLoadError(f"{source}: 'modules' must be a list of quantized module records")
    swaps: list[tuple[str, nn.Module]] = []
    used: set[str] = set()
    for rec in records:
        fqn, weight_q, act_q = _decode_record(rec, source)
        try:
            old = model.get_submodule(fqn)
        except AttributeError:
            raise _fail(source, fqn, f"no such module in the {type(model).__name__}") from None
        want = nn.Linear if rec["kind"] == "linear" else nn.Embedding
        if type(old) is not want:
            raise _fail(source, fqn, f"expected an unquantized {want.__name__}, found {type(old).__name__}")
        if tuple(old.weight.shape) != tuple(rec["shape"]):
            raise _fail(source, fqn, f"shape {tuple(rec['shape'])} but the model's is {tuple(old.weight.shape)}")
        codes, scale = _take_tensors(tensors, fqn, rec, weight_q, source)
        used.update({f"{fqn}.weight_packed", f"{fqn}.weight_scale"})
        if rec["kind"] == "linear":
            if rec.get("bias", True) != (old.bias is not None):
                raise _fail(source, fqn, "bias presence differs from the model's Linear")
            new: nn.Module = QuantizedLinear(codes, scale.float(), old.bias, weight_q, act_q)
        else:
            new = QuantizedEmbedding(codes, scale.float(), weight_q, rec.get("padding_idx"))
        swaps.append((fqn, new.train(old.training)))
    extra = sorted(set(tensors) - used)
    if extra:
        raise ModelLoadError(f"{source}: tensors {extra[:3]} belong to no recorded quantized module")
    for fqn, new in swaps:
        _swap(model, fqn, new)
    return model


# --------------------------------------------------------------------------------------------- files


def is_quantized_folder(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds a quantized model (has a ``compression_config.json``)."""
    return (Path(folder) / COMPRESSION_FILE).is_file()


def save_quantized_weights(model: nn.Module, folder: str | os.PathLike[str], *, qat_state: str) -> dict[str, Any]:
    """Write ``model.safetensors``, ``quantized.safetensors`` and ``compression_config.json`` into ``folder``.

    Args:
        model: the module whose state-dict names the files use (``SlimModel.hf``); it must hold quantized modules.
        folder: an existing folder (the caller writes ``config.json`` and the tokenizer).
        qat_state: the model's QAT lifecycle state, recorded for :func:`load_quantized_weights_`.

    Returns:
        The compression config written.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    plain, packed, config = split_quantized_state(model)
    config["qat_state"] = qat_state
    save_file(plain, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    save_file(packed, str(folder / QUANTIZED_WEIGHTS_FILE), metadata={"format": "pt"})
    atomic_write_json(folder / COMPRESSION_FILE, config)
    return config


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        needed = f"{WEIGHTS_FILE} and {QUANTIZED_WEIGHTS_FILE}"
        raise ModelLoadError(f"{path}: missing; a quantized model folder needs {needed}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelLoadError(f"{path}: not a readable safetensors file ({e})") from e


def load_quantized_weights_(model: nn.Module, folder: str | os.PathLike[str]) -> str:
    """Rebuild the quantized modules of ``model`` from ``folder`` and load every other tensor (strict).

    Args:
        model: an unquantized model built from the folder's ``config.json`` (``SlimModel.hf``).
        folder: a folder written by :func:`save_quantized_weights`.

    Returns:
        The recorded QAT lifecycle state (``"CONVERTED"`` for a QAT model).

    Raises:
        ModelLoadError: a file is missing, not valid JSON / safetensors, or does not match the model (see
            :func:`restore_quantized_`); ``model.safetensors`` lacks a tensor of the model or has an extra one.
    """
    folder = Path(folder)
    source = folder / COMPRESSION_FILE
    try:
        config = read_json(source)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{source}: not valid JSON ({e})") from e
    state = config.get("qat_state") if isinstance(config, dict) else None
    if state not in ("INITIALIZED", "CONVERTED"):
        raise ModelLoadError(f"{source}: qat_state {state!r}; expected 'INITIALIZED' or 'CONVERTED'")
    packed = _read_safetensors(folder / QUANTIZED_WEIGHTS_FILE)
    plain = _read_safetensors(folder / WEIGHTS_FILE)
    restore_quantized_(model, packed, config, source=str(source))
    quant_keys = {f"{fqn}.{b}" for fqn in quantized_modules(model) for b in _QUANT_BUFFERS}
    expected = set(model.state_dict()) - quant_keys
    missing, unexpected = sorted(expected - set(plain)), sorted(set(plain) - expected)
    if missing or unexpected:
        raise ModelLoadError(
            f"{folder / WEIGHTS_FILE}: does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    try:
        model.load_state_dict(plain, strict=False)
    except RuntimeError as e:  # size mismatch
        raise ModelLoadError(f"{folder / WEIGHTS_FILE}: {str(e).strip().splitlines()[-1].strip()}") from e
    return state
