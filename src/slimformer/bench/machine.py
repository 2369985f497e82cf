"""What a timing depends on: CPU model and flags, core and thread counts, library versions, file sizes.

Nothing here imports onnxruntime (versions are read from package metadata).
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["physical_cores", "machine_info", "file_size_mb", "WEIGHT_SUFFIXES"]

#: File endings counted as weights by :func:`file_size_mb` on a folder.
WEIGHT_SUFFIXES = (".safetensors", ".onnx", ".onnx_data", ".onnx.data", ".bin", ".pt")

_CPU_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")


def _cpuinfo() -> list[dict[str, str]]:
    """``/proc/cpuinfo`` as one dict per logical CPU (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    cpus = []
    for block in text.strip().split("\n\n"):
        entry = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            entry[key.strip()] = value.strip()
        cpus.append(entry)
    return cpus


def physical_cores() -> int:
    """Number of physical cores available to this process (SMT siblings counted once; at least 1).

    Read from ``/proc/cpuinfo`` (distinct ``(physical id, core id)`` pairs among the CPUs this process may
    run on); falls back to the logical CPU count elsewhere.
    """
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores = {
        (c.get("physical id", "0"), c["core id"])
        for c in _cpuinfo()
        if "core id" in c and int(c.get("processor", -1)) in allowed
    }
    return max(1, len(cores) or len(allowed))


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """Describe the machine a timing was taken on (goes into results files as ``machine``).

    Args:
        threads: intra-op threads the timings used; defaults to :func:`physical_cores`.

    Returns:
        ``{"cpu", "physical_cores", "logical_cpus", "threads", "cpu_flags", "python", "torch", "onnxruntime",
        "onnx", "transformers", "numpy", "platform", "load_average_1min"}``; ``cpu_flags`` maps each of avx2 /
        avx512f / avx512bw / avx512_vnni / avx_vnni / avx512_bf16 / amx_int8 to whether the CPU has it;
        ``load_average_1min`` (other work on the machine) tells whether timings were taken on a busy machine.
    """
    cpus = _cpuinfo()
    first = cpus[0] if cpus else {}
    flags = set(first.get("flags", "").split())
    return {
        "cpu": first.get("model name") or platform.processor() or platform.machine(),
        "physical_cores": physical_cores(),
        "logical_cpus": os.cpu_count(),
        "threads": threads if threads is not None else physical_cores(),
        "cpu_flags": {f: f in flags for f in _CPU_FLAGS},
        "python": platform.python_version(),
        **{name: _version(name) for name in ("torch", "onnxruntime", "onnx", "transformers", "numpy")},
        "platform": platform.platform(),
        # Other work on the machine inflates timings (PyTorch's OpenMP threads most): record it.
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def file_size_mb(path: str | os.PathLike[str], *, weights_only: bool = True) -> float:
    """Size on disk in MB (1 MB = 10^6 bytes) of a file, or of a folder's weight files.

    Args:
        path: a file (counted whatever its name) or a folder.
        weights_only: for a folder, count only files ending in :data:`WEIGHT_SUFFIXES` (tokenizer and
            config files excluded); ``False`` counts every file below it.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    p = Path(path)
    if p.is_file():
        return p.stat().st_size / 1e6
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: no such file or folder")
    files = [f for f in p.rglob("*") if f.is_file()]
    if weights_only:
        files = [f for f in files if f.name.endswith(WEIGHT_SUFFIXES)]
    return sum(f.stat().st_size for f in files) / 1e6
