"""Shared helpers of the distillation losses: logits/layer types, shape checks, layer maps."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from torch import Tensor

from slimformer.errors import ConfigError

if TYPE_CHECKING:
    pass


#: Classification logits ``(B, C)``, or span-QA logits as a ``(start, end)`` pair of ``(B, N)`` tensors.
Logits = Tensor | tuple[Tensor, Tensor]
Layers = Tensor | Sequence[Tensor]


def _span_mean(fn: Callable[[Tensor, Tensor], Tensor], student: Logits, teacher: Logits) -> Tensor:
    """Apply ``fn`` to a tensor pair, or average it over the (start, end) pairs of span QA."""
    if isinstance(student, Tensor) and isinstance(teacher, Tensor):
        return fn(student, teacher)
    if isinstance(student, Tensor) or isinstance(teacher, Tensor) or len(student) != 2 or len(teacher) != 2:
        raise ValueError("span-QA logits must be (start, end) pairs for both student and teacher")
    return 0.5 * (fn(student[0], teacher[0]) + fn(student[1], teacher[1]))


def _check_shapes(student: Tensor, teacher: Tensor, what: str) -> None:
    if student.shape != teacher.shape:
        raise ValueError(f"{what}: student shape {tuple(student.shape)} != teacher shape {tuple(teacher.shape)}")


def _layers(x: Layers) -> list[Tensor]:
    return [x] if isinstance(x, Tensor) else list(x)


def _pairs(student: Layers, teacher: Layers, layer_map: Mapping[int, int] | None, what: str):
    """``(student_layer, teacher_layer)`` tensor pairs, checking counts, map indices and shapes."""
    s, t = _layers(student), _layers(teacher)
    if layer_map is None:
        if len(s) != len(t):
            raise ConfigError(
                f"{what}: student has {len(s)} layers but teacher has {len(t)}; "
                "pass a layer_map {student_layer: teacher_layer} to distill models of different depth"
            )
        layer_map = {i: i for i in range(len(s))}
    if not layer_map:
        raise ConfigError(f"{what}: layer_map is empty")
    out = []
    for si, ti in layer_map.items():
        if not 0 <= si < len(s):
            raise ConfigError(f"{what}: layer_map student index {si} is outside the student's 0..{len(s) - 1}")
        if not 0 <= ti < len(t):
            raise ConfigError(f"{what}: layer_map teacher index {ti} is outside the teacher's 0..{len(t) - 1}")
        _check_shapes(s[si], t[ti], f"{what} (student layer {si}, teacher layer {ti})")
        out.append((s[si], t[ti].detach()))
    return out
