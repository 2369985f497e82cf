"""LengthConfig: validation (one-line ConfigError naming the value), rounding of keep ratios, (de)serialisation."""

from __future__ import annotations

import json
import math

import pytest

from slimformer.errors import ConfigError
from slimformer.length import LENGTH_CONFIG_FILE, LengthConfig, load_length_config, save_length_config


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(lengths=(10, 12, 8)), r"increases at layer 2 \(10 -> 12\)"),
        (dict(ratios=(0.5, 0.6)), r"increases at layer 2 \(0.5 -> 0.6\)"),
        (dict(lengths=(10, 0)), r"layer 2 keeps 0 tokens"),
        (dict(lengths=(10, -1)), r"layer 2 keeps -1 tokens"),
        (dict(ratios=(1.0, 0.0)), r"layer 2 ratio 0.0 is outside \(0, 1\]"),
        (dict(ratios=(1.5,)), r"layer 1 ratio 1.5 is outside"),
        (dict(lengths=(10, 2.5)), r"layer 2 length 2.5 is not an integer"),
        (dict(lengths=()), r"empty"),
        (dict(), r"exactly one of lengths or ratios"),
        (dict(lengths=(3,), ratios=(1.0,)), r"exactly one of lengths or ratios"),
    ],
)
def test_bad_configurations_raise_one_line(kwargs, match):
    with pytest.raises(ConfigError, match=match) as err:
        LengthConfig(**kwargs)
    assert "\n" not in str(err.value)


def test_wrong_number_of_layers():
    cfg = LengthConfig.from_lengths([8, 6, 4])
    assert cfg.check_layers(3) is cfg
    with pytest.raises(ConfigError, match=r"\(8, 6, 4\) has 3 layers; the model has 6"):
        cfg.check_layers(6)


def test_lengths_for_absolute_clamps_to_input_length():
    cfg = LengthConfig.from_lengths([315, 251, 242, 159, 142, 33])
    assert cfg.lengths_for(384) == (315, 251, 242, 159, 142, 33)
    assert cfg.lengths_for(200) == (200, 200, 200, 159, 142, 33)
    assert cfg.lengths_for(10) == (10,) * 6


@pytest.mark.parametrize(
    ("ratio", "n", "expected"),
    [
        (0.3, 10, 3),  # 0.3 * 10 is 3.0000001 in float32: the slack keeps it at 3
        (0.7, 10, 7),
        (0.25, 10, 3),  # 2.5 -> ceil -> 3
        (1 / 3, 9, 3),
        (0.01, 10, 1),  # never below 1 ([CLS])
        (1.0, 384, 384),
        (0.5, 1, 1),
        (0.2, 384, 77),  # 76.8 -> 77
    ],
)
def test_lengths_for_ratios_rounding(ratio, n, expected):
    assert LengthConfig.from_ratios([ratio]).lengths_for(n) == (expected,)


def test_lengths_for_ratios_is_non_increasing_and_at_least_one():
    cfg = LengthConfig.from_ratios([0.9, 0.61, 0.6, 0.05])
    for n in range(1, 200):
        ks = cfg.lengths_for(n)
        assert all(a >= b >= 1 for a, b in zip(ks, ks[1:]))
        assert ks[0] == max(1, math.ceil(0.9 * n - 1e-3))


def test_to_ratios_keeps_the_same_rows_at_the_reference_length():
    cfg = LengthConfig.from_lengths([315, 251, 242, 159, 142, 33])
    for n in (384, 320):
        assert cfg.to_ratios(n).lengths_for(n) == cfg.lengths_for(n)


def test_full_and_json_round_trip():
    full = LengthConfig.full(4)
    assert full.is_full and full.lengths_for(17) == (17,) * 4
    for cfg in (full, LengthConfig.from_lengths([9, 7, 7, 2]), LengthConfig.from_ratios([0.8, 0.5, 0.5, 0.25])):
        assert LengthConfig.from_json(cfg.to_json()) == cfg
        assert LengthConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert set(LengthConfig.from_lengths([3]).to_dict()) == {"lengths", "format_version", "slimformer_version"}


def test_save_and_load_with_the_model(tmp_path):
    assert load_length_config(tmp_path) is None
    cfg = LengthConfig.from_lengths([12, 8])
    path = save_length_config(cfg, tmp_path)
    assert path == tmp_path / LENGTH_CONFIG_FILE
    assert load_length_config(tmp_path) == cfg


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"lengths": [4, 5]}', r"length_config.json: length configuration lengths \(4, 5\) increases"),
        ('{"lengths": [4], "ratios": [1.0]}', r"exactly one of"),
        ('{"lengths": [4], "speed": 2}', r"unknown key\(s\) \['speed'\]"),
        ('{"lengths": 4}', r"must be a list"),
        ("[1, 2]", r"expected a mapping"),
        ("{lengths", r"not valid JSON"),
    ],
)
def test_bad_saved_file_names_the_file(tmp_path, text, match):
    (tmp_path / LENGTH_CONFIG_FILE).write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_length_config(tmp_path)
