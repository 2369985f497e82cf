"""Plain-JSON forms of the quantizer value objects, for ``compression_config.json`` (STYLE.md §6).

``quantizer_to_dict(UniformWeight(4, PerRow()))`` gives
``{"_type": "UniformWeight", "bits": 4, "granularity": {"_type": "PerRow"}, "clip": None}`` and
:func:`quantizer_from_dict` rebuilds the same frozen object (``==``). Unknown types or keys are errors, so a
file written by a newer version fails loudly instead of rebuilding a different quantizer.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from slimformer.errors import ConfigError
from slimformer.quant.granularity import Granularity, PerGroup, PerRow, PerTensor
from slimformer.quant.modules import ActivationQuantizer, BinaryWeight, TernaryWeight, UniformWeight, WeightQuantizer

__all__ = [
    "WEIGHT_QUANTIZERS",
    "quantizer_name",
    "nominal_bits",
    "quantizer_to_dict",
    "quantizer_from_dict",
    "storage_bits",
    "scheme_name",
    "describe_qat_config",
]

#: The one table of weight quantizer names: name -> (class, the bit width it implies; None: a chosen uniform width).
WEIGHT_QUANTIZERS: dict[str, tuple[type[WeightQuantizer], int | None]] = {
    "ternary": (TernaryWeight, 2),  # TWN, values {-α, 0, +α} (TernaryBERT's weight_bits=2)
    "binary": (BinaryWeight, 1),  # BWN, values {-α, +α}
    "uniform": (UniformWeight, None),  # symmetric k-bit, k in SUPPORTED_BITS (2, 3, 4, 8)
}


def quantizer_name(weight_q: WeightQuantizer) -> str:
    """The :data:`WEIGHT_QUANTIZERS` name of a weight quantizer (``ternary``, ``binary``, ``uniform``).

    Raises:
        ConfigError: not one of the table's classes.
    """
    for name, (cls, _) in WEIGHT_QUANTIZERS.items():
        if type(weight_q) is cls:
            return name
    raise ConfigError(f"unknown weight quantizer {weight_q!r}; expected one of {sorted(WEIGHT_QUANTIZERS)}")


def nominal_bits(weight_q: WeightQuantizer) -> int:
    """Bits a scheme is named by: binary 1, ternary 2 (TernaryBERT's "2-bit"), uniform k -> k."""
    implied = WEIGHT_QUANTIZERS[quantizer_name(weight_q)][1]
    return implied if implied is not None else weight_q.bits


_GRANULARITIES = {cls.__name__: cls for cls in (PerTensor, PerRow, PerGroup)}
_QUANTIZERS = {cls.__name__: cls for cls in (UniformWeight, TernaryWeight, BinaryWeight, ActivationQuantizer)}


def _granularity_to_dict(g: Granularity) -> dict[str, Any]:
    return {"_type": type(g).__name__, **({"group_size": g.group_size} if isinstance(g, PerGroup) else {})}


def quantizer_to_dict(q: WeightQuantizer | ActivationQuantizer) -> dict[str, Any]:
    """JSON-ready dict of a quantizer value object (``_type`` + its fields; granularity as a nested dict).

    Raises:
        ConfigError: ``q`` is not one of the four quantizer classes.
    """
    if type(q).__name__ not in _QUANTIZERS or not isinstance(q, tuple(_QUANTIZERS.values())):
        raise ConfigError(f"cannot serialize quantizer {q!r}; expected {sorted(_QUANTIZERS)}")
    out: dict[str, Any] = {"_type": type(q).__name__}
    for f in fields(q):
        value = getattr(q, f.name)
        out[f.name] = _granularity_to_dict(value) if f.name == "granularity" else value
    return out


def _build(kind: dict[str, type], d: Any, what: str) -> Any:
    if not isinstance(d, dict) or d.get("_type") not in kind:
        raise ConfigError(f"{what} must be an object with _type one of {sorted(kind)}, got {d!r}")
    cls = kind[d["_type"]]
    allowed = {f.name for f in fields(cls)}
    kwargs = {k: v for k, v in d.items() if k != "_type"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ConfigError(f"{what} {d['_type']}: unknown key(s) {unknown}; expected some of {sorted(allowed)}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{what} {d['_type']}: {e}") from e


def quantizer_from_dict(d: Any) -> WeightQuantizer | ActivationQuantizer:
    """Inverse of :func:`quantizer_to_dict`.

    Raises:
        ConfigError: unknown ``_type`` or key, or a value the quantizer rejects (e.g. ``bits: 5``).
    """
    if isinstance(d, dict) and isinstance(d.get("granularity"), dict):
        d = {**d, "granularity": _build(_GRANULARITIES, d["granularity"], "granularity")}
    return _build(_QUANTIZERS, d, "quantizer")


def storage_bits(weight_q: WeightQuantizer) -> int:
    """Bits per weight code on disk: binary 1, ternary 2, uniform 2 -> 2, 3/4 -> 4, 8 -> 8."""
    if isinstance(weight_q, BinaryWeight):
        return 1
    if isinstance(weight_q, TernaryWeight):
        return 2
    return {2: 2, 3: 4, 4: 4, 8: 8}[weight_q.bits]


def scheme_name(weight_q: WeightQuantizer) -> str:
    """Short name of a weight scheme: ``int8``, ``int4``, ``int3``, ``int2``, ``ternary`` or ``binary``."""
    name = quantizer_name(weight_q)
    return name if name != "uniform" else f"int{weight_q.bits}"


def describe_qat_config(config: Any) -> dict[str, Any]:
    """A JSON-able description of the quantizers of ``config`` (recorded in ``slimformer.json``)."""
    w = config.weight
    weight: dict[str, Any] = {
        "quantizer": quantizer_name(w),
        "bits": nominal_bits(w),
        "granularity": type(w.granularity).__name__,
        "clip": w.clip,
    }
    if isinstance(w, TernaryWeight):
        weight["threshold_factor"] = w.threshold_factor
    act = config.activation
    e = config.embedding
    embedding = None
    if e is not None:
        embedding = {
            "quantizer": quantizer_name(e),
            "bits": nominal_bits(e),
            "granularity": type(e.granularity).__name__,
            "trained": True,
        }
    return {
        "embedding": embedding,
        "weight": weight,
        "activation": None if act is None else {"bits": act.bits, "clip": act.clip, "scale": "dynamic max-abs"},
        "quantize_pooler": config.quantize_pooler,
    }
