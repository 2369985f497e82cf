"""Small helpers on ONNX files: atomic output paths, metadata properties, graph input names."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from slimformer._faults import kill_point
from slimformer.errors import ExportError
from slimformer.io import clean_stale_temps, fsync_path, temp_prefix

__all__ = ["atomic_output", "load_proto", "add_metadata", "read_metadata", "graph_input_names", "quiet_quantizer"]

#: Advice onnxruntime.quantization logs on every call that does not apply to slimformer's graphs.
_ORT_ADVICE = ("pre-processing before quantization", "pre-process", "is not constant. Please exclude")


@contextmanager
def atomic_output(out_path: str | os.PathLike[str], *, fault: str = "export") -> Iterator[Path]:
    """Yield a temporary file path next to ``out_path``; on success it is renamed to ``out_path``.

    The temporary file lives in a private folder in ``out_path``'s parent (same file system, so the rename is
    atomic; named ``.<name>.slimtmp-<pid>-*``, :func:`slimformer.io.temp_prefix`); the folder is removed whatever
    happens, so a failure leaves neither debris nor a clobbered file. A folder a killed earlier export left behind
    is removed first (:func:`slimformer.io.clean_stale_temps`). The file is fsynced before the rename; ``fault``
    names the kill point of the tests between the two (``<fault>:before-rename``, :mod:`slimformer._faults`).

    Raises:
        ExportError: ``out_path`` is an existing folder.
    """
    out_path = Path(out_path)
    if out_path.is_dir():
        raise ExportError(f"{out_path}: is a folder; expected the path of an .onnx file")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out_path)
    tmp_dir = Path(tempfile.mkdtemp(prefix=temp_prefix(out_path), dir=out_path.parent))
    try:
        tmp = tmp_dir / out_path.name
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"{tmp}: nothing was written")
        fsync_path(tmp)
        kill_point(f"{fault}:before-rename")
        os.replace(tmp, out_path)
        fsync_path(out_path.parent)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def load_proto(path: str | os.PathLike[str], *, load_external_data: bool = True) -> Any:
    """``onnx.load`` of a file that must be an ONNX model with a graph.

    Raises:
        ExportError: ``path`` is missing or a folder, or is not a readable ONNX model (garbage, truncated, empty);
            one line naming the file.
    """
    import onnx

    p = Path(path)
    if not p.is_file():
        what = "is a folder" if p.is_dir() else "no such file"
        raise ExportError(f"{p}: {what}; expected an ONNX model file (.onnx)")
    try:
        proto = onnx.load(str(p), load_external_data=load_external_data)
    except Exception as e:  # noqa: BLE001 - protobuf DecodeError, onnx's own errors: all mean "not a model"
        raise ExportError(f"{p}: not a readable ONNX model ({_first_line(e)}); export it again") from None
    if not proto.HasField("graph") or not proto.graph.node:
        raise ExportError(f"{p}: not a readable ONNX model (no graph; empty or truncated file); export it again")
    return proto


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (weights are not needed and may be skipped).

    Raises:
        ExportError: not a readable ONNX model (:func:`load_proto`).
    """
    proto = load_proto(path, load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def add_metadata(path: str | os.PathLike[str], props: dict[str, str]) -> None:
    """Set ``metadata_props`` entries of an ONNX file in place (existing keys are overwritten)."""
    import onnx

    proto = load_proto(path)
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in props.items():
        entry = existing.get(key) or proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def graph_input_names(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Names of an ONNX graph's inputs (initializers excluded)."""
    graph = load_proto(path, load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return tuple(i.name for i in graph.input if i.name not in initializers)


class _DropAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in _ORT_ADVICE)


@contextmanager
def quiet_quantizer() -> Iterator[None]:
    """Silence onnxruntime.quantization's fixed advice and calibration prints, for the ``with`` block only.

    The quantizer logs through the *root* logger (``logging.warning``), which would also install a handler on
    it when it has none; a ``NullHandler`` is added for the duration so the user's logging setup is unchanged.
    Other warnings pass through.
    """
    root = logging.getLogger()
    null = logging.NullHandler() if not root.handlers else None
    flt = _DropAdvice()
    if null is not None:
        root.addHandler(null)
    root.addFilter(flt)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # "Collecting tensor data and making histogram ..."
            yield
    finally:
        root.removeFilter(flt)
        if null is not None:
            root.removeHandler(null)
