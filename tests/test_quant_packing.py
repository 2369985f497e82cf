"""Bit packing of weight codes (1/2/4/8 bits per code) and the quantizers' JSON form."""

from __future__ import annotations

import pytest
import torch

from slimformer.errors import ConfigError
from slimformer.quant import (
    ActivationQuantizer,
    BinaryWeight,
    PerGroup,
    PerRow,
    PerTensor,
    TernaryWeight,
    UniformWeight,
    pack_codes,
    unpack_codes,
)
from slimformer.quant.packing import code_range, packed_numel
from slimformer.quant.serialize import quantizer_from_dict, quantizer_to_dict, storage_bits

SHAPES = [(1,), (7,), (3, 5), (13, 1), (2, 3, 7), (64, 33), (0, 4)]


def _random_codes(shape: tuple[int, ...], bits: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if bits == 1:
        return torch.randint(0, 2, shape, generator=g).mul(2).sub(1).to(torch.int8)
    lo, hi = code_range(bits)
    return torch.randint(lo, hi + 1, shape, generator=g).to(torch.int8)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip_is_bit_exact(bits: int, shape: tuple[int, ...]) -> None:
    codes = _random_codes(shape, bits, seed=len(shape) * 10 + bits)
    packed = pack_codes(codes, bits)
    n = codes.numel()
    assert packed.dtype == torch.uint8 and packed.shape == (-(-n * bits // 8),)
    back = unpack_codes(packed, bits, shape)
    assert back.dtype == torch.int8 and back.shape == shape
    assert torch.equal(back, codes)


def test_ternary_codes_all_three_values_round_trip() -> None:
    codes = torch.tensor([[-1, 0, 1], [1, 1, -1], [0, 0, -1]], dtype=torch.int8)  # 9 codes -> 3 bytes
    assert torch.equal(unpack_codes(pack_codes(codes, 2), 2, (3, 3)), codes)


def test_packed_bytes_follow_the_documented_layout() -> None:
    # 2-bit two's complement, first code in the lowest bits: [1, -1, 0, 1] -> 0b01_00_11_01 = 0x4D
    assert pack_codes(torch.tensor([1, -1, 0, 1], dtype=torch.int8), 2).tolist() == [0b01001101]
    # 5 ternary codes: the second byte holds one code and zero padding
    assert pack_codes(torch.tensor([0, 0, 0, 0, -1], dtype=torch.int8), 2).tolist() == [0, 0b11]
    # 1-bit: +1 -> bit set; [1, -1, -1, 1, 1, -1, -1, -1, 1] -> 0b00011001, 0b1
    binary = torch.tensor([1, -1, -1, 1, 1, -1, -1, -1, 1], dtype=torch.int8)
    assert pack_codes(binary, 1).tolist() == [0b00011001, 0b1]
    # 4-bit: [-7, 7] -> low nibble 0b1001, high nibble 0b0111
    assert pack_codes(torch.tensor([-7, 7], dtype=torch.int8), 4).tolist() == [0b01111001]
    # 8-bit: the int8 bit pattern
    assert pack_codes(torch.tensor([-1, 127, -128], dtype=torch.int8), 8).tolist() == [255, 127, 128]


@pytest.mark.parametrize(("bits", "bad"), [(1, 0), (1, 2), (2, 2), (2, -3), (4, 8), (4, -9)])
def test_codes_that_do_not_fit_are_refused(bits: int, bad: int) -> None:
    with pytest.raises(ConfigError, match=rf"code {bad} does not fit {bits}-bit storage"):
        pack_codes(torch.tensor([0 if bits > 1 else 1, bad]), bits)


def test_bad_arguments_raise_config_error() -> None:
    codes = torch.zeros(4, dtype=torch.int8)
    with pytest.raises(ConfigError, match="storage bits must be one of 1, 2, 4, 8, got 3"):
        pack_codes(codes, 3)
    with pytest.raises(ConfigError, match="integer codes"):
        pack_codes(codes.float(), 2)
    packed = pack_codes(codes, 2)
    with pytest.raises(ConfigError, match=r"1 packed bytes do not hold 8 2-bit codes of shape \(2, 4\)"):
        unpack_codes(packed, 2, (2, 4))
    with pytest.raises(ConfigError, match="1-D uint8"):
        unpack_codes(packed.to(torch.int8), 2, (4,))
    assert packed_numel(33 * 64, 2) == 528 and packed_numel(5, 1) == 1


QUANTIZERS = [
    UniformWeight(8),
    UniformWeight(4, PerGroup(16), clip=0.1),
    UniformWeight(3, PerTensor()),
    TernaryWeight(),
    TernaryWeight(PerRow(), clip=None, threshold_factor=0.5),
    BinaryWeight(PerRow(), clip=None),
    ActivationQuantizer(),
    ActivationQuantizer(4, clip=2.5),
]


@pytest.mark.parametrize("q", QUANTIZERS, ids=repr)
def test_quantizer_json_round_trip(q) -> None:
    import json

    d = json.loads(json.dumps(quantizer_to_dict(q)))
    assert d["_type"] == type(q).__name__
    assert quantizer_from_dict(d) == q


def test_storage_bits_per_scheme() -> None:
    assert [storage_bits(q) for q in (BinaryWeight(), TernaryWeight(), UniformWeight(2))] == [1, 2, 2]
    assert [storage_bits(UniformWeight(b)) for b in (3, 4, 8)] == [4, 4, 8]


@pytest.mark.parametrize(
    ("d", "needle"),
    [
        ({"_type": "FancyWeight"}, "_type one of"),
        ({"_type": "UniformWeight", "bits": 5}, "bits must be one of"),
        ({"_type": "UniformWeight", "bits": 8, "scale": 1}, r"unknown key\(s\) \['scale'\]"),
        ({"_type": "TernaryWeight", "granularity": {"_type": "PerBlock"}}, "granularity must be"),
    ],
)
def test_quantizer_from_bad_dict_raises(d, needle) -> None:
    with pytest.raises(ConfigError, match=needle):
        quantizer_from_dict(d)
