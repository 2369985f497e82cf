"""Atomic file and folder writes: write to a temporary name next to the target, fsync, then rename.

A failed stage therefore never leaves a half-written file and never replaces what a previous stage
wrote (the rename happens only after the new content is complete).

Temporary names are siblings of the target that carry the writer's process id:
``.<name>.slimtmp-<pid>-<random>`` (the new content) and ``.<name>.slimold-<pid>`` (the previous folder, for the
moment between the two renames of :func:`atomic_dir`). A process killed with ``kill -9`` cannot clean up after
itself, so every atomic write first calls :func:`clean_stale_temps` on its target: siblings of a process that no
longer runs are removed, and a previous folder left between the two renames is put back when the target is
missing (nothing that was complete is lost).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from slimformer.errors import ConfigError

__all__ = [
    "atomic_write_text",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_dir",
    "atomic_files",
    "read_json",
    "clean_stale_temps",
    "temp_prefix",
    "check_output_path",
    "fsync_path",
]

_TMP = "slimtmp"
_OLD = "slimold"
#: Temporary siblings written by releases before the pid-tagged names: ``.<name>.<random>.tmp`` and
#: ``.<name>.old-<pid>``; without a pid in the random ones, they are removed only once this old.
_LEGACY_TMP_AGE_S = 3600.0


def temp_prefix(target: str | os.PathLike[str]) -> str:
    """Name prefix of this process' temporary siblings of ``target`` (``.<name>.slimtmp-<pid>-``)."""
    return f".{Path(target).name}.{_TMP}-{os.getpid()}-"


def _old_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.{_OLD}-{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine). Unknown -> True: never remove what may be in use."""
    if pid == os.getpid():
        return True
    if os.name != "posix" or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, run by someone else
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clean_stale_temps(target: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary siblings of ``target`` left by killed writers; restore a previous folder if ``target`` is
    missing.

    Recognised names (see the module notes): ``.<name>.slimtmp-<pid>-*`` and ``.<name>.slimold-<pid>`` of a process
    that is no longer running; the pid-less names of earlier releases (``.<name>.*.tmp``, ``.<name>.old-<pid>``) once
    older than an hour (or, for ``old-<pid>``, of a dead process). Temporaries of running processes are left alone.

    Returns:
        The paths removed or restored.
    """
    target = Path(target)
    parent = target.parent
    head = f".{target.name}."
    try:
        names = [n for n in os.listdir(parent) if n.startswith(head)]
    except OSError:
        return []
    touched: list[Path] = []
    now = time.time()
    for name in sorted(names):
        rest = name[len(head) :]
        entry = parent / name
        m = re.fullmatch(rf"(?:{_TMP}-(\d+)-.*|({_OLD}|old)-(\d+))", rest)
        if m is not None:
            pid = int(m.group(1) or m.group(3))
            if _pid_alive(pid):
                continue
            if m.group(2) and entry.is_dir() and not target.exists():
                os.replace(entry, target)  # killed between the two renames: the previous folder is the latest
            else:
                _remove(entry)
            touched.append(entry)
        elif re.fullmatch(r"[a-z0-9_]{8}\.tmp", rest):
            try:
                old = now - entry.lstat().st_mtime > _LEGACY_TMP_AGE_S
            except OSError:
                continue
            if old:
                _remove(entry)
                touched.append(entry)
    return touched


def check_output_path(path: str | os.PathLike[str], *, kind: str = "folder", option: str = "output") -> Path:
    """Check, before any work, that ``path`` can be written as a ``kind`` (``"folder"`` or ``"file"``).

    Raises:
        ConfigError: ``path`` exists as the other kind; its nearest existing ancestor is not a folder or is not
            writable (names ``option`` and the path).
    """
    p = Path(path)
    if p.exists():
        if kind == "folder" and not p.is_dir():
            raise ConfigError(f"{option} {p}: exists and is a file; expected a folder or a new path")
        if kind == "file" and p.is_dir():
            raise ConfigError(f"{option} {p}: is a folder; expected a file path")
        return p
    ancestor = p.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{option} {p}: {ancestor} is a file, not a folder; cannot write under it")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {p}: folder {ancestor} is not writable")
    return p


def fsync_path(path: str | os.PathLike[str], *, tree: bool = False) -> None:
    """Flush ``path`` (a file, or a folder's entries) to disk; with ``tree``, every file and folder under it too.

    Write-once semantics: a temporary is fsynced before it is renamed into place, and the folder after the rename,
    so a crash of the machine (not only of the process) leaves the old or the new content, never an empty file.
    Best effort: a file system that refuses ``fsync`` on a folder (some network mounts) is not an error.
    """
    p = Path(path)
    if tree and p.is_dir():
        for root, dirs, files in os.walk(p):
            for name in files:
                fsync_path(Path(root) / name)
            for name in dirs:
                fsync_path(Path(root) / name)
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file, ``fsync`` and an atomic rename.

    Returns:
        The final path.
    """
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file, ``fsync`` and an atomic rename (a PNG drawn into memory,
    say): ``path`` holds either its old content or all of ``data``, never part of it.

    Returns:
        The final path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON through :func:`atomic_write_text`."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file (UTF-8)."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@contextmanager
def atomic_dir(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``path``, on failure it is removed.

    Args:
        path: the final folder.
        overwrite: when False and ``path`` exists, raise ``FileExistsError`` before writing anything.

    The previous content of ``path`` survives any exception raised inside the ``with`` block; temporaries of
    killed earlier writers are cleaned first (:func:`clean_stale_temps`).

    Raises:
        ConfigError: ``path`` exists and is not a folder (a file is never replaced by a folder).
        FileExistsError: ``overwrite`` is False and ``path`` exists.
    """
    path = Path(path)
    clean_stale_temps(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path}: exists and is a file; expected a folder (or a new path) to write the folder to")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path), dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_path(tmp, tree=True)
    old = None
    if path.exists():
        old = _old_name(path)
        os.replace(path, old)
    os.replace(tmp, path)
    fsync_path(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_files(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder inside ``folder``; on success each file written into it is fsynced and renamed into
    ``folder`` (replacing a file of the same name), on failure it is removed.

    For files a library writes by folder (``tokenizer.save_pretrained(dir)``, ``config.save_pretrained(dir)``) into
    a folder that holds other files too: each file appears complete or not at all. The temporary folder is
    ``.files.slimtmp-<pid>-*`` (a killed writer's is removed by the next call, :func:`clean_stale_temps`).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    anchor = folder / "files"
    clean_stale_temps(anchor)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(anchor), dir=folder))
    try:
        yield tmp
        for f in sorted(tmp.iterdir()):
            if f.is_file():
                fsync_path(f)
                os.replace(f, folder / f.name)
        fsync_path(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
