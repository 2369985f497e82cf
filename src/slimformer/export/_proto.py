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

__all__ = ["atomic_output", "add_metadata", "read_metadata", "graph_input_names", "quiet_quantizer"]

#: Advice onnxruntime.quantization logs on every call that does not apply to slimformer's graphs.
_ORT_ADVICE = ("pre-processing before quantization", "pre-process", "is not constant. Please exclude")


@contextmanager
def atomic_output(out_path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file path next to ``out_path``; on success it is renamed to ``out_path``.

    The temporary file lives in a private folder in ``out_path``'s parent (same file system, so the rename is
    atomic); the folder is removed whatever happens, so a failure leaves neither debris nor a clobbered file.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent))
    try:
        tmp = tmp_dir / out_path.name
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"{tmp}: nothing was written")
        os.replace(tmp, out_path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (weights are not needed and may be skipped)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def add_metadata(path: str | os.PathLike[str], props: dict[str, str]) -> None:
    """Set ``metadata_props`` entries of an ONNX file in place (existing keys are overwritten)."""
    import onnx

    proto = onnx.load(str(path))
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in props.items():
        entry = existing.get(key) or proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def graph_input_names(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Names of an ONNX graph's inputs (initializers excluded)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
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
