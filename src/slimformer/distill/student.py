"""Students for task distillation: a subset of the teacher's layers, or any checkpoint (METHODS.md §2(b)).

Layer selection keeps the hidden size, heads and FFN width and copies the embeddings and the task head, as
DistilBERT / "layer dropping" students do (Sanh et al. 2019, arXiv:1910.01108, take every other layer); the
default layer map of the ``distill`` stage pairs student layer ``i`` with teacher layer ``student_layers[i]``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from slimformer.checkpoint import load_model, load_pretrained
from slimformer.errors import ConfigError
from slimformer.models import SlimModel
from slimformer.models.load import META_FILE

__all__ = ["select_layers", "load_student", "check_student_layers"]


def check_student_layers(layers: Sequence[int], teacher_layers: int) -> list[int]:
    """Validate ``student_layers`` against a teacher with ``teacher_layers`` encoder layers.

    Raises:
        ConfigError: empty list; more layers than the teacher (a student deeper than its teacher); an index
            outside ``0..teacher_layers-1``; indices not strictly increasing (a repeated layer would share weights).
    """
    layers = list(layers)
    if not layers:
        raise ConfigError("student_layers is empty; list the teacher layers to keep, e.g. [1, 3, 5]")
    if len(layers) > teacher_layers:
        raise ConfigError(
            f"student_layers has {len(layers)} layers but the teacher has only {teacher_layers}; "
            "a student cannot be deeper than its teacher"
        )
    for i in layers:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < teacher_layers:
            raise ConfigError(f"student_layers: layer {i!r} is outside the teacher's layers 0..{teacher_layers - 1}")
    if any(b <= a for a, b in zip(layers, layers[1:], strict=False)):
        raise ConfigError(f"student_layers must be strictly increasing, got {layers}")
    return layers


def select_layers(teacher: SlimModel, layers: Sequence[int]) -> SlimModel:
    """A new student made of the teacher's layers ``layers`` (copied), embeddings and task head (copied).

    Args:
        teacher: the fine-tuned teacher (left unchanged).
        layers: 0-based teacher layer indices, strictly increasing, e.g. ``[1, 3, 5]`` of a 6-layer teacher.

    Returns:
        A :class:`SlimModel` with ``len(layers)`` layers; its config's ``num_hidden_layers`` is updated, so
        ``save_pretrained`` / ``from_pretrained`` round-trip it.

    Raises:
        ConfigError: see :func:`check_student_layers`.
    """
    layers = check_student_layers(layers, teacher.num_layers)
    student = copy.deepcopy(teacher)
    base = student.base
    base.encoder.layer = nn.ModuleList([base.encoder.layer[i] for i in layers])
    for new_idx, layer in enumerate(base.encoder.layer):
        for m in layer.modules():  # HF attention modules carry their index (used for caches, not here)
            if hasattr(m, "layer_idx"):
                m.layer_idx = new_idx
    student.hf.config.num_hidden_layers = len(layers)
    return student


def load_student(path: str | Path, teacher: SlimModel, teacher_labels: list[str] | None) -> tuple[SlimModel, Any]:
    """Load a student checkpoint to distill into: a slimformer model folder, or a HF folder / alias (new head).

    A bare encoder gets a new head of the teacher's kind (and the teacher's labels).

    Raises:
        ModelLoadError: the checkpoint cannot be loaded. ConfigError: the student is deeper than the teacher,
            its head or vocabulary differs from the teacher's.
    """
    p = Path(path)
    if (p / META_FILE).is_file():
        loaded = load_model(p)
        student, tok = loaded.model, loaded.tokenizer
    else:
        n = teacher.config.num_labels if teacher.head.value == "classification" else None
        student, tok = load_pretrained(str(path), teacher.head, num_labels=n, labels=teacher_labels, new_head=True)
    if student.head is not teacher.head:
        raise ConfigError(f"student {path} has a {student.head.value} head; the teacher has {teacher.head.value}")
    if student.num_layers > teacher.num_layers:
        raise ConfigError(
            f"student {path} has {student.num_layers} layers, deeper than the teacher's {teacher.num_layers}"
        )
    if student.config.vocab_size != teacher.config.vocab_size:
        raise ConfigError(
            f"student {path} has vocabulary size {student.config.vocab_size} but the teacher "
            f"{teacher.config.vocab_size}; both must share one tokenizer"
        )
    return student, tok
