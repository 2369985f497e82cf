"""The base of every stage config, and the rules that decide a stage's identity for resuming.

Each stage config is a pydantic model with ``extra="forbid"``: an unknown key or a bad value is an error that
names the key. The configs themselves live with their stages (``slimformer.stages.<stage>``); the CLI only parses
arguments into them and recipes hold lists of them. ``slimformer.config.FinetuneConfig`` and the other four
configs of the built-in stages still resolve here (deprecated: import them from ``slimformer`` or their stage).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "StageConfig",
    "DATA_ENV",
    "PREVIOUS_MODEL",
    "RUN_CONTROL",
    "resolve_data_path",
    "run_control_fields",
    "identity_dump",
    "legacy_identity",
    "IDENTITY_WHEN_SET",
    "LEGACY_RUN_CONTROL",
]

#: ``model:`` value meaning "the model folder written by the previous stage of the recipe".
PREVIOUS_MODEL = "previous"

#: Environment variable holding the data root (folder with glue_data/, squad_v1.1/, ...).
DATA_ENV = "SLIMFORMER_DATA"


def resolve_data_path(path: str | os.PathLike[str], data_root: str | os.PathLike[str] | None = None) -> Path:
    """Resolve a data path: absolute or existing paths as given, others relative to the data root.

    The data root is ``data_root`` if given, else ``$SLIMFORMER_DATA``, else ``./data``.
    """
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    root = data_root if data_root is not None else os.environ.get(DATA_ENV, "data")
    return Path(root).expanduser() / p


#: ``json_schema_extra`` flag of stage-config fields that steer how a stage runs, not what it produces
#: (checkpoint cadence): changing them neither reruns a finished stage nor restarts an interrupted one.
RUN_CONTROL = "run_control"


#: ``json_schema_extra`` flag of stage-config fields added after runs already existed: such a field is part of a
#: stage's identity only when set to something other than its default, so runs made before it keep their identity
#: (the default must reproduce what the stage did before the field existed).
IDENTITY_WHEN_SET = "identity_when_set"


def run_control_fields(cfg: BaseModel) -> set[str]:
    """Names of the :data:`RUN_CONTROL` fields of a config."""
    return {k for k, f in type(cfg).model_fields.items() if (f.json_schema_extra or {}).get(RUN_CONTROL)}


def identity_dump(cfg: BaseModel) -> dict[str, Any]:
    """The config as JSON minus what does not change its result: the :data:`RUN_CONTROL` fields, and the
    :data:`IDENTITY_WHEN_SET` fields left at their defaults. Resume hashes and checkpoint records use this."""
    skip = run_control_fields(cfg)
    for name, field in type(cfg).model_fields.items():
        if (field.json_schema_extra or {}).get(IDENTITY_WHEN_SET) and getattr(cfg, name) == field.get_default(
            call_default_factory=True
        ):
            skip.add(name)
    return cfg.model_dump(mode="json", exclude=skip)


#: The run-control fields ``finetune`` counted in its identity before 0.1.0 (``save_steps``, ``save_total_limit``):
#: its records of that time hold them. A field made run-control later (``eval_each_epoch``) was never part of any
#: identity, so it is not added to the old records either.
LEGACY_RUN_CONTROL = ("save_steps", "save_total_limit")


def legacy_identity(cfg: BaseModel) -> dict[str, Any]:
    """:func:`identity_dump` plus the :data:`LEGACY_RUN_CONTROL` fields of ``cfg``: what a record written before
    those fields became run-control holds (accepted for resuming, so existing run folders are not retrained)."""
    dumped = cfg.model_dump(mode="json")
    return {**identity_dump(cfg), **{k: dumped[k] for k in LEGACY_RUN_CONTROL if k in dumped}}


class StageConfig(BaseModel):
    """Base of every stage config: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


#: Configs that lived in this module before the stages/ layout: name -> the stage module that holds them now.
_MOVED = {
    "FinetuneConfig": "finetune",
    "EvaluateConfig": "evaluate",
    "ExportConfig": "export",
    "QuantizeConfig": "quantize",
    "BenchmarkConfig": "benchmark",
}


def __getattr__(name: str) -> Any:
    """Deprecated aliases of the configs that moved to their stage modules (kept for user code and old scripts).

    The import is by name on purpose: this low-level module must not depend on ``slimformer.stages`` (the layer
    contracts in pyproject.toml forbid it), and the alias is resolved only when an old import asks for it.
    """
    if name in _MOVED:
        import importlib
        import warnings

        warnings.warn(
            f"slimformer.config.{name} moved to slimformer.stages.{_MOVED[name]}.{name} (also slimformer.{name})",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(f"slimformer.stages.{_MOVED[name]}"), name)
    raise AttributeError(f"module 'slimformer.config' has no attribute {name!r}")
