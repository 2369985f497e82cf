"""Save and load slimformer model folders, with the structure compression methods add to a model.

A model folder is an ordinary Hugging Face checkpoint (``config.json``, ``model.safetensors``, tokenizer files)
plus ``slimformer.json`` (:class:`~slimformer.models.ModelMeta`). Methods that change how a model is stored
register here, so this module (and :mod:`slimformer.models` below it) imports no method:

- a **weight format** (:func:`register_weight_format`) stores a model's weights other than with
  ``save_pretrained``; :mod:`slimformer.quant.storage` registers ``quantized`` (packed codes and scales in
  ``quantized.safetensors`` with ``compression_config.json``);
- a **structure** (:func:`register_structure`) is module structure that ``config.json`` records and Hugging Face
  cannot rebuild; :mod:`slimformer.embeddings.transform` registers the factorised word-embedding table;
- a **save check** (:func:`register_save_check`) refuses a model that cannot be saved as it is (a QAT model in
  state PREPARED: :mod:`slimformer.quant.qat`).

Importing ``slimformer.stages`` (as the CLI, the API and recipes do) imports every method, so every format is
registered. A folder that needs a format or structure nobody registered is refused with a one-line error, never
loaded half-way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from slimformer.errors import ModelLoadError
from slimformer.io import atomic_dir, atomic_write_json, read_json
from slimformer.models import META_FILE, HeadKind, LoadedModel, ModelMeta, SlimModel, library_versions
from slimformer.models.load import (
    AUTO_CLASS,
    check_checkpoint_dir,
    check_tokenizer_files,
    load_hf_model,
    load_tokenizer,
    read_config,
    resolve_model_path,
)
from slimformer.tasks import task_from_dict

__all__ = [
    "WeightFormat",
    "Structure",
    "register_weight_format",
    "register_structure",
    "register_save_check",
    "WEIGHT_FORMATS",
    "STRUCTURES",
    "load_pretrained",
    "load_model",
    "save_model",
    "read_meta",
]

#: Marker file of a folder whose weights are not in the plain Hugging Face layout (a weight format's own config).
COMPRESSION_FILE = "compression_config.json"
#: ``config.json`` keys of this prefix record structure a registered :class:`Structure` must rebuild.
STRUCTURE_KEY_PREFIX = "slimformer_"


@dataclass(frozen=True)
class WeightFormat:
    """A way of storing a model's weights other than ``save_pretrained``.

    Attributes:
        name: the format's name (``quantized``).
        stores_folder: ``folder -> bool``: the folder is stored in this format.
        stores_model: ``model -> bool``: the model must be saved in this format.
        save: ``(model, folder) -> None``: write the weights (and the format's own files) into an existing folder;
            ``config.json``, the tokenizer and ``slimformer.json`` are written by :func:`save_model`.
        load: ``(model, folder) -> None``: rebuild the format's modules in a model built from ``config.json`` (and
            every registered structure) and load every tensor strictly.
        describe: a few words for error messages ("a quantized model: packed codes, no fp32 weights").
    """

    name: str
    stores_folder: Callable[[Path], bool]
    stores_model: Callable[[SlimModel], bool]
    save: Callable[[SlimModel, Path], None]
    load: Callable[[SlimModel, Path], None]
    describe: str = ""


@dataclass(frozen=True)
class Structure:
    """Module structure that ``config.json`` records under ``config_key`` and Hugging Face cannot rebuild.

    Attributes:
        config_key: the ``config.json`` key recording it (starts with ``slimformer_``).
        build: ``model -> None``: install the (uninitialised) modules the config records, before a strict load.
        restore: ``(model, folder) -> None``: after a Hugging Face ``from_pretrained``, rebuild the modules and load
            their tensors from the folder's safetensors; checks that weights and config agree.
    """

    config_key: str
    build: Callable[[SlimModel], object]
    restore: Callable[[SlimModel, Path], object]


WEIGHT_FORMATS: dict[str, WeightFormat] = {}
STRUCTURES: dict[str, Structure] = {}
_SAVE_CHECKS: list[Callable[[SlimModel], None]] = []


def register_weight_format(fmt: WeightFormat) -> WeightFormat:
    """Register a :class:`WeightFormat` (idempotent by name)."""
    WEIGHT_FORMATS[fmt.name] = fmt
    return fmt


def register_structure(structure: Structure) -> Structure:
    """Register a :class:`Structure` (idempotent by ``config_key``).

    Raises:
        ValueError: the key does not start with ``slimformer_``.
    """
    if not structure.config_key.startswith(STRUCTURE_KEY_PREFIX):
        raise ValueError(f"structure key {structure.config_key!r} must start with {STRUCTURE_KEY_PREFIX!r}")
    STRUCTURES[structure.config_key] = structure
    return structure


def register_save_check(check: Callable[[SlimModel], None]) -> Callable[[SlimModel], None]:
    """Register ``check(model)``, called by :func:`save_model` before anything is written; it raises to refuse."""
    if check not in _SAVE_CHECKS:
        _SAVE_CHECKS.append(check)
    return check


def _folder_format(path: Path) -> WeightFormat | None:
    fmt = next((f for f in WEIGHT_FORMATS.values() if f.stores_folder(path)), None)
    if fmt is None and (path / COMPRESSION_FILE).is_file():
        raise ModelLoadError(
            f"{path}: has {COMPRESSION_FILE} but no registered weight format reads it (registered: "
            f"{sorted(WEIGHT_FORMATS)}); import slimformer.stages (or the method package that wrote it) first"
        )
    return fmt


def _check_structures(path: Path) -> list[str]:
    """The structure keys ``config.json`` records; each must be registered."""
    try:
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
        keys = [k for k in raw if k.startswith(STRUCTURE_KEY_PREFIX)]
    except (OSError, ValueError, AttributeError) as e:
        raise ModelLoadError(f"{path / 'config.json'}: not a valid JSON object ({e})") from e
    unknown = [k for k in keys if k not in STRUCTURES]
    if unknown:
        raise ModelLoadError(
            f"{path / 'config.json'}: records {unknown} but no registered structure rebuilds it (registered: "
            f"{sorted(STRUCTURES)}); import slimformer.stages (or the method package that wrote it) first"
        )
    return keys


def load_pretrained(
    name_or_path: str | os.PathLike[str],
    head: HeadKind | str,
    *,
    num_labels: int | None = None,
    labels: list[str] | None = None,
    new_head: bool = False,
) -> tuple[SlimModel, Any]:
    """Load a pretrained encoder (alias, local folder or hub id) with a new or existing task head.

    Registered structures recorded in a local folder's ``config.json`` (a factorised embedding table) are rebuilt
    and loaded.

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
        ModelLoadError: see :func:`~slimformer.models.resolve_model_path`; the architecture is not
            BERT/RoBERTa/XLM-R; the weights or the tokenizer files are missing or unreadable; the folder is stored
            in a weight format (load it with :func:`load_model`) or records an unregistered structure.
    """
    head = HeadKind(head)
    path = resolve_model_path(name_or_path)
    local = Path(path).is_dir()
    structure_keys: list[str] = []
    if local:
        fmt = _folder_format(Path(path))
        if fmt is not None:
            raise ModelLoadError(
                f"{path}: holds {fmt.describe or fmt.name + ' weights'}; load it with slimformer.checkpoint."
                "load_model, not into an unquantized model"
            )
        structure_keys = _check_structures(Path(path))
    read_config(path, local)  # checks the architecture before any weights are read
    kwargs: dict[str, Any] = {}
    if head is HeadKind.CLASSIFICATION and num_labels is not None:
        kwargs["num_labels"] = num_labels
        if labels is not None:
            kwargs["id2label"] = dict(enumerate(labels))
            kwargs["label2id"] = {name: i for i, name in enumerate(labels)}
    check_tokenizer_files(path, local)
    # expected missing weights (a new head, a recorded structure): no load report
    hf = load_hf_model(path, head, quiet=bool(new_head or kwargs or structure_keys), **kwargs)
    model = SlimModel(hf, head)
    if local:  # structure HF cannot know is rebuilt from config.json (each restore also checks weights vs config)
        for structure in STRUCTURES.values():
            structure.restore(model, Path(path))
    return model, load_tokenizer(path, local)


def _load_in_format(path: Path, head: HeadKind, fmt: WeightFormat) -> tuple[SlimModel, Any]:
    """Build the architecture from ``config.json`` and its structures, then let ``fmt`` load every tensor."""
    import transformers

    config = read_config(str(path), True)
    check_tokenizer_files(str(path), True)
    hf = getattr(transformers, AUTO_CLASS[head]).from_config(config).eval()
    model = SlimModel(hf, head)
    for key in _check_structures(path):
        STRUCTURES[key].build(model)  # e.g. a factorised table must exist before the strict load
    fmt.load(model, path)
    return model, load_tokenizer(str(path), True)


def load_model(path: str | os.PathLike[str]) -> LoadedModel:
    """Load a model folder written by :func:`save_model` (reads ``slimformer.json`` for its head and metadata).

    Raises:
        ModelLoadError: the folder is missing, has no weights / pickle-only weights, no valid ``slimformer.json``,
            or needs a weight format / structure that is not registered.
    """
    p = Path(path)
    if not p.is_dir():
        if p.exists():
            raise ModelLoadError(f"{p}: is a file, not a model folder (expected a folder written by slimformer)")
        raise ModelLoadError(f"{p}: no such model folder")
    check_checkpoint_dir(p)
    if not (p / META_FILE).is_file():
        raise ModelLoadError(f"{p}: no {META_FILE}; not a slimformer model folder (use load_pretrained for HF folders)")
    meta = read_meta(p)
    fmt = _folder_format(p)
    head = HeadKind(meta.head)
    model, tok = _load_in_format(p, head, fmt) if fmt is not None else load_pretrained(p, head)
    return LoadedModel(model=model, tokenizer=tok, meta=meta, path=p)


def save_model(model: SlimModel, tokenizer: Any, out: str | os.PathLike[str], meta: ModelMeta) -> Path:
    """Save weights (safetensors), config, tokenizer and ``slimformer.json`` to ``out`` atomically.

    The folder is written under a temporary name and renamed at the end, so an existing ``out`` is replaced only
    by a complete model. A model a registered :class:`WeightFormat` claims (a quantized model after
    ``convert_qat_`` or ``quantize_embeddings_``) is stored in that format: ``config.json`` plus the format's files.

    Raises:
        RuntimeError: a registered save check refuses the model (e.g. QAT state PREPARED: fake-quant modules would
            be saved as plain fp32 weights, losing the quantizers; call ``convert_qat_`` first).
    """
    for check in _SAVE_CHECKS:
        check(model)
    meta.versions = library_versions()
    fmt = next((f for f in WEIGHT_FORMATS.values() if f.stores_model(model)), None)
    with atomic_dir(out) as tmp:
        if fmt is not None:
            model.hf.config.save_pretrained(tmp)
            fmt.save(model, tmp)
        else:
            model.hf.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / META_FILE, asdict(meta))
    return Path(out)


def _register_task(meta: ModelMeta, source: str) -> None:
    """Register the user task a model was trained on (recorded in its ``slimformer.json``), so stages find it."""
    if meta.task_spec is not None:
        task_from_dict(meta.task_spec, f"{source}: task_spec")


def read_meta(folder: str | os.PathLike[str]) -> ModelMeta:
    """The ``slimformer.json`` of a model or export folder (its user task registered).

    Raises:
        ModelLoadError: no ``slimformer.json``, not valid JSON, or not a valid record.
    """
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise ModelLoadError(f"{Path(folder)}: no {META_FILE}; not a slimformer model or export folder")
    try:
        raw = read_json(path)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{path}: not valid JSON ({' '.join(str(e).split())[:200]})") from None
    meta = ModelMeta.from_dict(raw, str(path))
    _register_task(meta, str(path))
    return meta
