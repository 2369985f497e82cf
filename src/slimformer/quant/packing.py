"""Bit packing of low-bit integer weight codes into ``uint8`` bytes, for storage on disk.

A code tensor of any shape is flattened (row-major), zero-padded to a whole number of bytes and packed
``8 // bits`` codes per byte, the first code in the lowest bits (little-endian within the byte). The original
shape is not stored in the bytes: the caller records it (``compression_config.json``) and passes it back to
:func:`unpack_codes`, which checks that the byte count fits.

Code conventions per storage width (:data:`STORAGE_BITS`):

* ``1`` — binary sign codes ``{-1, +1}`` (BWN): bit 1 = ``+1``, bit 0 = ``-1``.
* ``2`` — signed 2-bit two's complement ``[-2, 1]``; ternary codes ``{-1, 0, 1}`` (TWN) and symmetric uniform
  2-bit codes use ``-1 -> 0b11``, ``0 -> 0b00``, ``1 -> 0b01``.
* ``4`` — signed 4-bit two's complement ``[-8, 7]`` (uniform 3/4-bit codes), two codes per byte.
* ``8`` — ``int8`` codes, one per byte (the bytes are the ``int8`` bit patterns).

Round trip: ``unpack_codes(pack_codes(c, b), b, c.shape)`` equals ``c`` exactly for every valid ``c``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from slimformer.errors import ConfigError

__all__ = ["STORAGE_BITS", "code_range", "packed_numel", "pack_codes", "unpack_codes"]

#: Storage widths (bits per code) that :func:`pack_codes` supports.
STORAGE_BITS: tuple[int, ...] = (1, 2, 4, 8)


def _check_bits(bits: Any) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in STORAGE_BITS:
        raise ConfigError(f"storage bits must be one of {', '.join(map(str, STORAGE_BITS))}, got {bits!r}")
    return bits


def code_range(bits: int) -> tuple[int, int]:
    """Smallest and largest code a ``bits``-bit storage width holds (``1`` -> ``(-1, 1)`` with no 0).

    Raises:
        ConfigError: ``bits`` is not in :data:`STORAGE_BITS`.
    """
    bits = _check_bits(bits)
    if bits == 1:
        return -1, 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def packed_numel(numel: int, bits: int) -> int:
    """Bytes that ``numel`` codes of ``bits`` bits take once packed: ``ceil(numel · bits / 8)``."""
    return math.ceil(numel * _check_bits(bits) / 8)


def pack_codes(codes: Tensor, bits: int) -> Tensor:
    """Pack integer codes into bytes, ``8 // bits`` per byte (see the module notes for the conventions).

    Args:
        codes: Integer tensor of any shape (e.g. ``(out, in)`` int8 weight codes), values within the range
            of ``bits``: ``{-1, 1}`` for 1 bit, ``[-2, 1]`` for 2, ``[-8, 7]`` for 4, ``[-128, 127]`` for 8.
        bits: Storage width (bits per code), one of :data:`STORAGE_BITS`.

    Returns:
        ``uint8`` tensor of shape ``(packed_numel(codes.numel(), bits),)`` on ``codes``' device.

    Raises:
        ConfigError: Unsupported ``bits``, a non-integer ``codes`` dtype, or a code outside the range (a 0 in
            binary codes included).
    """
    bits = _check_bits(bits)
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise ConfigError(f"pack_codes needs integer codes, got dtype {codes.dtype}")
    flat = codes.detach().reshape(-1).to(torch.int16)  # (n,)
    lo, hi = code_range(bits)
    bad = (flat < lo) | (flat > hi) if bits != 1 else (flat != 1) & (flat != -1)
    if bool(bad.any()):
        value = int(flat[bad][0])
        allowed = "{-1, 1}" if bits == 1 else f"[{lo}, {hi}]"
        raise ConfigError(f"code {value} does not fit {bits}-bit storage (allowed {allowed})")
    if bits == 8:
        return flat.to(torch.int8).view(torch.uint8).clone()
    # unsigned field values: sign bit for 1-bit, two's complement (value mod 2^bits) otherwise
    field = (flat > 0).to(torch.int16) if bits == 1 else flat & (2**bits - 1)
    per_byte = 8 // bits
    pad = (-flat.numel()) % per_byte
    field = torch.cat([field, field.new_zeros(pad)]).view(-1, per_byte)  # (n_bytes, per_byte)
    shifts = torch.arange(per_byte, device=flat.device, dtype=torch.int16) * bits  # first code in the low bits
    return (field << shifts).sum(dim=1).to(torch.uint8)


def unpack_codes(packed: Tensor, bits: int, shape: Sequence[int]) -> Tensor:
    """Inverse of :func:`pack_codes`: bytes back to ``int8`` codes of ``shape``.

    Args:
        packed: ``uint8`` tensor ``(packed_numel(prod(shape), bits),)``.
        bits: Storage width the codes were packed with.
        shape: Shape of the original code tensor (e.g. ``(out, in)``).

    Returns:
        ``int8`` codes of ``shape`` (binary: ``{-1, 1}``; 2/4-bit: sign-extended two's complement).

    Raises:
        ConfigError: Unsupported ``bits``, ``packed`` not a 1-D ``uint8`` tensor, or its length does not match
            ``shape`` (a truncated or foreign file).
    """
    bits = _check_bits(bits)
    shape = tuple(int(n) for n in shape)
    numel = math.prod(shape)
    if packed.dtype != torch.uint8 or packed.dim() != 1:
        raise ConfigError(f"packed codes must be a 1-D uint8 tensor, got {packed.dtype} of shape {tuple(packed.shape)}")
    if packed.numel() != packed_numel(numel, bits):
        raise ConfigError(
            f"{packed.numel()} packed bytes do not hold {numel} {bits}-bit codes of shape {shape} "
            f"(expected {packed_numel(numel, bits)} bytes)"
        )
    if bits == 8:
        return packed.view(torch.int8).reshape(shape).clone()
    per_byte = 8 // bits
    shifts = torch.arange(per_byte, device=packed.device, dtype=torch.int16) * bits
    field = (packed.to(torch.int16).unsqueeze(1) >> shifts) & (2**bits - 1)  # (n_bytes, per_byte)
    field = field.reshape(-1)[:numel]
    if bits == 1:
        codes = field * 2 - 1  # 0 -> -1, 1 -> +1
    else:
        codes = torch.where(field >= 2 ** (bits - 1), field - 2**bits, field)  # sign extension
    return codes.to(torch.int8).reshape(shape)
