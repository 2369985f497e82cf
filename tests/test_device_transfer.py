"""benchmarks/device_transfer.py: weights to and from the GPU machine as fp16, XOR against a reference, lossless
for the rounded weights; refuses weights that are not rounded, and a result that differs from what was packed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import device_transfer as dt  # noqa: E402


def _model(folder: Path, tensors: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / dt.WEIGHTS)
    return folder


@pytest.fixture
def base_and_tuned(tmp_path: Path) -> tuple[Path, Path]:
    """A base encoder (names without the task model's prefix) and a model fine-tuned from it: small relative
    changes of every weight, a new head, an integer buffer."""
    rng = np.random.default_rng(0)
    base = {"encoder.w": rng.normal(0, 0.05, (64, 32)).astype(np.float32), "emb.w": rng.normal(0, 1, (50, 8))}
    base = {k: v.astype(np.float32) for k, v in base.items()}
    tuned = {f"bert.{k}": v * (1 + rng.normal(0, 1e-3, v.shape)).astype(np.float32) for k, v in base.items()}
    tuned["qa_outputs.weight"] = rng.normal(0, 0.1, (2, 32)).astype(np.float32)
    tuned["bert.position_ids"] = np.arange(10, dtype=np.int64)
    return _model(tmp_path / "base", base), _model(tmp_path / "tuned", tuned)


def test_round_then_pack_unpack_is_bit_exact_and_the_reference_shrinks_it(base_and_tuned, tmp_path: Path) -> None:
    base, tuned = base_and_tuned
    before = load_file(tuned / dt.WEIGHTS)
    rounded = dt.round_model(tuned)
    for k, v in before.items():
        if v.dtype.kind == "f":
            np.testing.assert_array_equal(rounded[k], v.astype(np.float16).astype(np.float32))
            err, normal = np.abs(rounded[k] - v), np.abs(v) >= 2.0**-14  # fp16's normal range
            assert np.all(err[normal] <= 2.0**-11 * np.abs(v[normal])) and np.all(err[~normal] <= 2.0**-25)
        else:
            np.testing.assert_array_equal(rounded[k], v)
    with_ref = dt.pack(tuned, tmp_path / "out" / "m", base, part_mb=0.001)  # ~1 KB parts: several of them
    without = dt.pack(tuned, tmp_path / "raw" / "m", None, part_mb=15)
    assert len(with_ref["parts"]) > 1 and with_ref["compressed_mb"] < without["compressed_mb"]
    dt.unpack(tmp_path / "out" / "m", tmp_path / "back", base)
    back = load_file(tmp_path / "back" / dt.WEIGHTS)
    assert set(back) == set(rounded)
    for k, v in rounded.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k].view(np.uint8), v.view(np.uint8))


def test_unrounded_weights_are_refused_and_rounding_on_pack_leaves_the_source(base_and_tuned, tmp_path) -> None:
    base, tuned = base_and_tuned
    source = (tuned / dt.WEIGHTS).read_bytes()
    with pytest.raises(SystemExit, match="not fp16-representable"):
        dt.pack(tuned, tmp_path / "m", base, part_mb=15)
    dt.pack(tuned, tmp_path / "m", None, part_mb=15, rounding=True)
    assert (tuned / dt.WEIGHTS).read_bytes() == source
    dt.unpack(tmp_path / "m", tmp_path / "back", None)
    np.testing.assert_array_equal(
        load_file(tmp_path / "back" / dt.WEIGHTS)["qa_outputs.weight"],
        load_file(tuned / dt.WEIGHTS)["qa_outputs.weight"].astype(np.float16).astype(np.float32),
    )


def test_unpack_against_another_reference_is_refused(base_and_tuned, tmp_path: Path) -> None:
    base, tuned = base_and_tuned
    dt.round_model(tuned)
    dt.pack(tuned, tmp_path / "m", base, part_mb=15)
    with pytest.raises(SystemExit, match="pass --ref"):
        dt.unpack(tmp_path / "m", tmp_path / "back", None)
    other = {k: v + np.float32(0.01) for k, v in load_file(base / dt.WEIGHTS).items()}
    with pytest.raises(SystemExit, match="sha256"):
        dt.unpack(tmp_path / "m", tmp_path / "back", _model(tmp_path / "other", other))
    assert not (tmp_path / "back" / dt.WEIGHTS).exists()


def test_weights_beyond_fp16_are_refused_and_the_file_is_kept(tmp_path: Path) -> None:
    m = _model(tmp_path / "m", {"w": np.array([1.0, 7.0e4], dtype=np.float32)})
    source = (m / dt.WEIGHTS).read_bytes()
    with pytest.raises(SystemExit, match="beyond fp16"):
        dt.round_model(m)
    assert (m / dt.WEIGHTS).read_bytes() == source
