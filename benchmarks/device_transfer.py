"""Move model weights to and from the GPU machine of the `device` tool, whose transfers hold 64 MiB per call.

A MiniLM-L6 checkpoint is 91 MB in fp32, so weights travel as fp16, and a fine-tuned model travels as the XOR of its
fp16 bits with those of the model it was trained from (sign, exponent and high mantissa bits mostly agree, so the
byte planes compress to about half: 23 MB for a fine-tuned MiniLM-L6, 20 MB for a LengthDrop model against its
teacher). The fp16 rounding is made part of the pipeline, not of the transfer: ``round`` rewrites a checkpoint with
fp16-representable fp32 weights *before* anything is trained from, searched on or evaluated with it, so the weights
unpacked here are bit-identical to those the GPU machine used (a change of at most 2**-11 relative, or 2**-25 absolute
for the weights below fp16's normal range, |w| < 2**-14; a weight beyond fp16's range, |w| > 65504, is refused).

    python benchmarks/device_transfer.py round MODEL_DIR                       # in place: weights -> fp16 -> fp32
    python benchmarks/device_transfer.py pack MODEL_DIR OUT_PREFIX [--ref REF_DIR] [--part-mb 15] [--round]
    python benchmarks/device_transfer.py unpack OUT_PREFIX MODEL_DIR [--ref REF_DIR]

``pack`` writes ``OUT_PREFIX.json`` (tensor names, shapes, dtypes, reference keys, part files, sha256 of the
result) and ``OUT_PREFIX.partK`` (zlib streams of the byte planes); ``unpack`` writes ``MODEL_DIR/model.safetensors``
(fp32) and checks the sha256. No pickle: JSON, raw bytes and safetensors only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import zlib
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from slimformer.io import atomic_write_bytes, atomic_write_json

WEIGHTS = "model.safetensors"


def _fp16_bits(x: np.ndarray) -> np.ndarray:
    """(any shape) float array -> uint16 array of its fp16 bit patterns (round to nearest even)."""
    return np.ascontiguousarray(x.astype(np.float16)).view(np.uint16)


def _digest(tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(np.ascontiguousarray(tensors[k]).tobytes())
    return h.hexdigest()


def _ref_key(name: str, shape: tuple[int, ...], ref: dict[str, np.ndarray]) -> str | None:
    """The reference tensor of ``name``: the same name, or the name without the task model's first prefix
    (``bert.encoder...`` in a fine-tuned model is ``encoder...`` in the base encoder), of the same shape."""
    for key in (name, name.split(".", 1)[-1]):
        if key in ref and ref[key].shape == shape:
            return key
    return None


def _rounded(tensors: dict[str, np.ndarray], where: Path) -> dict[str, np.ndarray]:
    """Floating-point tensors rounded to fp16 (kept in their dtype); others unchanged.

    Raises:
        SystemExit: a finite weight that fp16 cannot hold (|w| > 65504).
    """
    out = {}
    for k, v in tensors.items():
        if v.dtype.kind == "f":
            with np.errstate(over="ignore"):  # checked just below
                r = v.astype(np.float16).astype(v.dtype)
            if not np.array_equal(np.isfinite(r), np.isfinite(v)):
                raise SystemExit(f"{where}: {k} holds values beyond fp16's range (|w| > 65504)")
            v = r
        out[k] = v
    return out


def round_model(model_dir: Path) -> dict[str, np.ndarray]:
    """Rewrite ``model_dir/model.safetensors`` with its floating-point weights rounded to fp16 (kept fp32).

    Returns:
        the rounded tensors (name -> array).

    Raises:
        SystemExit: a weight beyond fp16's range (the file is left as it was).
    """
    path = model_dir / WEIGHTS
    out = _rounded(load_file(path), path)
    tmp = path.with_suffix(".tmp")
    save_file(out, tmp, metadata={"format": "pt"})
    tmp.replace(path)
    return out


def pack(model_dir: Path, prefix: Path, ref_dir: Path | None, part_mb: float, *, rounding: bool = False) -> dict:
    """Pack ``model_dir``'s fp16-representable weights as XOR against ``ref_dir``'s (or raw), zlib, in parts.

    Args:
        rounding: round the weights to fp16 first (for a model that is only sent, like the base encoder: the
            receiving side trains from the rounded weights; ``model_dir`` is not changed).
        part_mb: largest part file, MiB (the `device` tool returns files of at most 16 MiB).

    Returns:
        ``{"compressed_mb": size of the zlib stream in MB (10**6 bytes), "parts": part file names}``.

    Raises:
        SystemExit: a floating-point weight is not fp16-representable (without ``rounding``: run ``round`` first).
    """
    tensors = load_file(model_dir / WEIGHTS)
    if rounding:
        tensors = _rounded(tensors, model_dir / WEIGHTS)
    ref = load_file(ref_dir / WEIGHTS) if ref_dir else {}
    entries, planes = [], []
    for k in sorted(tensors):
        v = tensors[k]
        if v.dtype.kind != "f":
            entries.append({"name": k, "shape": list(v.shape), "dtype": str(v.dtype), "raw": True})
            planes.append(np.ascontiguousarray(v).view(np.uint8).tobytes())
            continue
        bits = _fp16_bits(v)
        if not np.array_equal(bits.view(np.float16).astype(v.dtype), v):
            raise SystemExit(f"{model_dir / WEIGHTS}: {k} is not fp16-representable; run `round` on it first")
        ref_key = _ref_key(k, v.shape, ref)
        if ref_key is not None:
            bits = bits ^ _fp16_bits(ref[ref_key])
        entries.append({"name": k, "shape": list(v.shape), "dtype": str(v.dtype), "ref_key": ref_key})
        planes.append(bits.view(np.uint8).reshape(-1, 2).T.tobytes())  # low bytes, then high bytes
    blob = zlib.compress(b"".join(planes), 6)
    size = int(part_mb * 2**20)
    parts = []
    for i in range(0, max(len(blob), 1), size):
        name = f"{prefix.name}.part{len(parts)}"
        atomic_write_bytes(prefix.parent / name, blob[i : i + size])
        parts.append(name)
    header = {"tensors": entries, "parts": parts, "sha256": _digest(tensors), "ref": bool(ref_dir)}
    atomic_write_json(prefix.parent / f"{prefix.name}.json", header)
    return {"compressed_mb": len(blob) / 1e6, "parts": parts}


def unpack(prefix: Path, model_dir: Path, ref_dir: Path | None) -> None:
    """Rebuild ``model_dir/model.safetensors`` (fp32) from ``pack``'s files.

    Raises:
        SystemExit: a missing reference, or a result whose sha256 differs from the packed model's.
    """
    header = json.loads((prefix.parent / f"{prefix.name}.json").read_text())
    if header["ref"] and ref_dir is None:
        raise SystemExit(f"{prefix}: packed against a reference model; pass --ref")
    ref = load_file(ref_dir / WEIGHTS) if ref_dir else {}
    blob = zlib.decompress(b"".join((prefix.parent / p).read_bytes() for p in header["parts"]))
    out, pos = {}, 0
    for e in header["tensors"]:
        dtype, shape = np.dtype(e["dtype"]), tuple(e["shape"])
        n = int(np.prod(shape, dtype=np.int64))
        if e.get("raw"):
            nbytes = n * dtype.itemsize
            out[e["name"]] = np.frombuffer(blob[pos : pos + nbytes], dtype=dtype).reshape(shape).copy()
            pos += nbytes
            continue
        planes = np.frombuffer(blob[pos : pos + 2 * n], dtype=np.uint8).reshape(2, n)
        pos += 2 * n
        bits = np.ascontiguousarray(planes.T).view(np.uint16).reshape(shape)
        if e["ref_key"] is not None:
            bits = bits ^ _fp16_bits(ref[e["ref_key"]])
        out[e["name"]] = bits.view(np.float16).astype(dtype)
    if _digest(out) != header["sha256"]:
        raise SystemExit(f"{prefix}: the unpacked weights differ from the packed ones (sha256)")
    model_dir.mkdir(parents=True, exist_ok=True)
    save_file(out, model_dir / WEIGHTS, metadata={"format": "pt"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("round", help="weights -> fp16 -> fp32, in place")
    r.add_argument("model_dir", type=Path)
    p = sub.add_parser("pack", help="fp16 XOR reference, zlib, parts")
    p.add_argument("model_dir", type=Path)
    p.add_argument("prefix", type=Path)
    p.add_argument("--ref", type=Path)
    p.add_argument("--part-mb", type=float, default=15.0)
    p.add_argument("--round", action="store_true", help="round to fp16 first (model_dir unchanged)")
    u = sub.add_parser("unpack", help="rebuild model.safetensors")
    u.add_argument("prefix", type=Path)
    u.add_argument("model_dir", type=Path)
    u.add_argument("--ref", type=Path)
    a = ap.parse_args()
    if a.cmd == "round":
        round_model(a.model_dir)
    elif a.cmd == "pack":
        print(json.dumps(pack(a.model_dir, a.prefix, a.ref, a.part_mb, rounding=a.round)))
    else:
        unpack(a.prefix, a.model_dir, a.ref)


if __name__ == "__main__":
    main()
