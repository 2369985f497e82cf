"""``Int8Config``: how :func:`~slimformer.export.quantize.quantize_int8` quantizes an fp32 ONNX graph."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from slimformer._version import __version__
from slimformer.errors import ConfigError

__all__ = ["Int8Config"]

_CHOICES = {
    "mode": ("dynamic", "static"),
    "calibration_method": ("minmax", "entropy", "percentile"),
    "quant_format": ("qdq", "qoperator"),
}


@dataclass(frozen=True)
class Int8Config:
    """int8 post-training quantization with ONNX Runtime: weights int8 (symmetric), activations uint8.

    Build it from a preset (:meth:`dynamic`, :meth:`dynamic_per_tensor`, :meth:`static`,
    :meth:`static_accurate`) or directly; invalid values raise :class:`~slimformer.errors.ConfigError`.
    """

    mode: Literal["dynamic", "static"] = field(
        default="dynamic",
        metadata={"help": "dynamic: activation ranges at run time; static: fixed from calibration batches"},
    )
    per_channel: bool = field(default=True, metadata={"help": "one weight scale per output channel"})
    reduce_range: bool = field(
        default=False, metadata={"help": "7-bit weights; only for CPUs without VNNI (AVX2 saturation)"}
    )
    quantize_embeddings: bool = field(
        default=True,
        metadata={"help": "store the embedding tables (Gather) in int8 too (~2.5x smaller file)"},
    )
    fp32_ffn_output: bool = field(
        default=False,
        metadata={
            "help": "keep each FFN down-projection (intermediate -> hidden) MatMul in fp32: its input "
            "has the outlier activations that static ranges clip (Bondarenko et al. 2021)"
        },
    )
    optimize: bool = field(
        default=False,
        metadata={"help": "fuse attention/LayerNorm/GELU with ORT's transformer optimizer first; dynamic only"},
    )
    calibration_examples: int = field(default=128, metadata={"help": "static: sequences used for calibration"})
    calibration_method: Literal["minmax", "entropy", "percentile"] = field(
        default="minmax", metadata={"help": "static: how activation ranges are chosen"}
    )
    percentile: float = field(default=99.999, metadata={"help": "static, percentile method: range percentile"})
    quant_format: Literal["qdq", "qoperator"] = field(
        default="qdq",
        metadata={"help": "static: QuantizeLinear/DequantizeLinear pairs, or QLinear* operators"},
    )
    exclude_nodes: tuple[str, ...] = field(default=(), metadata={"help": "ONNX node names kept in fp32"})
    version: int = 1

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"Int8Config.{name}={getattr(self, name)!r}; expected one of {list(allowed)}")
        if self.calibration_examples < 1:
            raise ConfigError(f"Int8Config.calibration_examples={self.calibration_examples}; expected >= 1")
        if not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"Int8Config.percentile={self.percentile}; expected a value in (50, 100]")
        if self.optimize and self.mode == "static":
            raise ConfigError("Int8Config.optimize=True needs mode='dynamic' (ORT cannot static-quantize fused graphs)")
        object.__setattr__(self, "exclude_nodes", tuple(self.exclude_nodes))

    @classmethod
    def dynamic(cls, **overrides: Any) -> Int8Config:
        """Preset: dynamic, per-channel weights, int8 embeddings (the recommended CPU deployment)."""
        return cls(**{"mode": "dynamic", **overrides})

    @classmethod
    def dynamic_per_tensor(cls, **overrides: Any) -> Int8Config:
        """Preset: dynamic with one scale per weight matrix (less accurate; for comparison)."""
        return cls(**{"mode": "dynamic", "per_channel": False, **overrides})

    @classmethod
    def static(cls, **overrides: Any) -> Int8Config:
        """Preset: static QDQ, per-channel weights, MinMax ranges from 128 calibration sequences."""
        return cls(**{"mode": "static", **overrides})

    @classmethod
    def static_accurate(cls, **overrides: Any) -> Int8Config:
        """Preset: static QOperator with the FFN down-projections in fp32 (closest to fp32; larger file)."""
        return cls(**{"mode": "static", "quant_format": "qoperator", "fp32_ffn_output": True, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, with the config class and the slimformer version."""
        return {
            "_type": type(self).__name__,
            **asdict(self),
            "exclude_nodes": list(self.exclude_nodes),
            "slimformer_version": __version__,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Int8Config:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        d = {k: v for k, v in d.items() if k not in ("_type", "slimformer_version")}
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"Int8Config: unknown key(s) {unknown}; expected some of {[f.name for f in fields(cls)]}")
        return cls(**{**d, "exclude_nodes": tuple(d.get("exclude_nodes", ()))})
