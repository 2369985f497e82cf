"""Quantization granularity: which elements of a tensor share one scale (a value object, not a string).

Three granularities, following torchao's ``PerTensor`` / ``PerRow`` / ``PerGroup``:

* :class:`PerTensor` — one scale for the whole tensor.
* :class:`PerRow` — one scale per output row / channel, i.e. per index of axis 0 of an ``(out, in)`` weight
  (also per vocabulary row of an ``(vocab, hidden)`` embedding table).
* :class:`PerGroup` — one scale per run of ``group_size`` consecutive elements along the **last** axis
  (the input axis of an ``(out, in)`` weight), as in group-wise weight-only quantization.

:func:`group_layout` turns a granularity and a tensor shape into a :class:`GroupLayout`: the shape to view the
tensor as, and the dims of that view to reduce over (with ``keepdim=True``) to get one statistic per group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from slimformer.errors import ConfigError

__all__ = ["PerTensor", "PerRow", "PerGroup", "Granularity", "GroupLayout", "group_layout", "to_groups"]


@dataclass(frozen=True)
class PerTensor:
    """One scale (and zero point) for the whole tensor."""


@dataclass(frozen=True)
class PerRow:
    """One scale per index of axis 0: per output channel of an ``(out, in)`` weight, per row of an embedding."""


@dataclass(frozen=True)
class PerGroup:
    """One scale per ``group_size`` consecutive elements of the last axis.

    Args:
        group_size: Number of elements (along the last axis) sharing one scale; a positive int that must divide
            the last dimension of the tensor it is applied to.

    Raises:
        ConfigError: ``group_size`` is not a positive int.
    """

    group_size: int

    def __post_init__(self) -> None:
        size = self.group_size
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ConfigError(f"PerGroup group_size must be a positive int, got {size!r}")


Granularity = PerTensor | PerRow | PerGroup


@dataclass(frozen=True)
class GroupLayout:
    """How to view a tensor so that each group's statistic is a ``keepdim`` reduction.

    Attributes:
        view_shape: Shape to ``reshape`` the tensor to. Equal to the tensor's own shape for :class:`PerTensor`
            and :class:`PerRow`; ``(*shape[:-1], shape[-1] // group_size, group_size)`` for :class:`PerGroup`.
        reduce_dims: Dims of the view to reduce over (``keepdim=True``); the reduced shape is the scale's shape,
            which broadcasts against the view.
    """

    view_shape: tuple[int, ...]
    reduce_dims: tuple[int, ...]

    @property
    def scale_shape(self) -> tuple[int, ...]:
        """Shape of one statistic per group (the view shape with every reduced dim set to 1)."""
        return tuple(1 if d in self.reduce_dims else n for d, n in enumerate(self.view_shape))

    @property
    def group_numel(self) -> int:
        """Number of elements in one group (elements sharing one scale)."""
        return math.prod(self.view_shape[d] for d in self.reduce_dims)


def group_layout(shape: tuple[int, ...] | torch.Size, granularity: Granularity) -> GroupLayout:
    """Compute the view shape and reduction dims that give one statistic per group.

    Args:
        shape: Shape of the tensor to quantize, e.g. ``(out, in)`` for a Linear weight.
        granularity: :class:`PerTensor`, :class:`PerRow` or :class:`PerGroup`.

    Returns:
        The :class:`GroupLayout`. Examples for ``shape = (4, 8)``: ``PerTensor()`` -> view ``(4, 8)``, reduce
        ``(0, 1)``, scale ``(1, 1)``; ``PerRow()`` -> view ``(4, 8)``, reduce ``(1,)``, scale ``(4, 1)``;
        ``PerGroup(2)`` -> view ``(4, 4, 2)``, reduce ``(2,)``, scale ``(4, 4, 1)``.

    Raises:
        ConfigError: ``granularity`` is not one of the three classes; ``PerRow`` on a tensor with fewer than 2
            dims; ``PerGroup`` on a 0-d tensor or with a ``group_size`` that does not divide the last dimension.
    """
    shape = tuple(int(n) for n in shape)
    if isinstance(granularity, PerTensor):
        return GroupLayout(view_shape=shape, reduce_dims=tuple(range(len(shape))))
    if isinstance(granularity, PerRow):
        if len(shape) < 2:
            raise ConfigError(f"PerRow needs a tensor with at least 2 dims (out, in), got shape {shape}")
        return GroupLayout(view_shape=shape, reduce_dims=tuple(range(1, len(shape))))
    if isinstance(granularity, PerGroup):
        size = granularity.group_size
        if len(shape) < 1 or shape[-1] % size != 0:
            raise ConfigError(
                f"PerGroup group_size {size} must divide the last dimension of the tensor, got shape {shape}"
            )
        # (..., in) -> (..., in // size, size)
        return GroupLayout(view_shape=(*shape[:-1], shape[-1] // size, size), reduce_dims=(len(shape),))
    raise ConfigError(f"granularity must be PerTensor(), PerRow() or PerGroup(n), got {granularity!r}")


def to_groups(x: torch.Tensor, granularity: Granularity) -> tuple[torch.Tensor, GroupLayout]:
    """View ``x`` in its group layout (see :func:`group_layout`).

    Args:
        x: Tensor of any shape accepted by ``granularity``.
        granularity: :class:`PerTensor`, :class:`PerRow` or :class:`PerGroup`.

    Returns:
        ``(x_view, layout)``; ``x_view.reshape(x.shape)`` restores the original shape.

    Raises:
        ConfigError: As :func:`group_layout`.
    """
    layout = group_layout(x.shape, granularity)
    return x.reshape(layout.view_shape), layout
