"""Fault injection for the kill-and-resume tests: :func:`kill_point` SIGKILLs its own process at a named point.

A test hook, not a feature. Set ``SLIMFORMER_KILL_AT=<point>`` (or ``<point>#<n>``: the ``n``-th time the point is
reached in this process) and run a command: when the code reaches that point the process sends itself
``SIGKILL``, as ``kill -9`` from outside would (no ``finally`` block, no ``atexit``, no flush of Python's buffers
beyond stdout/stderr). ``tests/test_kill_resume.py`` and ``benchmarks/reliability.py`` then rerun the same command
and check that the run completes with the metrics of an uninterrupted one.

Points (``<stage>`` is the training stage whose checkpoint folder is ``<out>.checkpoints``, e.g. ``finetune``,
``distill``'s ``student``, ``length``):

* ``<stage>:after-checkpoint``: a Trainer checkpoint is complete on disk (``train/checkpoints.kill_callbacks``);
* ``search:after-store``: the search store was rewritten with a new evaluation (``length/search_store.py``);
* ``export:before-rename`` / ``quantize:before-rename``: an fp32 / int8 ONNX graph is complete under its temporary
  name, not yet renamed into place (``export/_proto.atomic_output``);
* ``report:after-json``: ``report.json`` is written, ``report.md`` not yet (``bench/report.write_report``);
* ``<stage>:before-state``: a recipe stage has written all its outputs, ``state.json`` does not record it yet
  (``recipe.run_recipe``).

Without the variable a point costs one environment lookup. This module is in the lowest layer (it imports nothing of
slimformer), so any layer may mark a point.
"""

from __future__ import annotations

import os
import signal
import sys

__all__ = ["KILL_ENV", "kill_point", "kill_requested"]

#: The environment variable naming the point to die at (``point`` or ``point#n``).
KILL_ENV = "SLIMFORMER_KILL_AT"

_hits: dict[str, int] = {}


def kill_requested() -> bool:
    """Whether ``SLIMFORMER_KILL_AT`` is set (callers may skip setting up a hook otherwise)."""
    return bool(os.environ.get(KILL_ENV))


def kill_point(name: str) -> None:
    """SIGKILL this process if ``SLIMFORMER_KILL_AT`` names ``name`` (and this is its ``n``-th hit); else nothing.

    Args:
        name: the point, ``<where>:<when>`` (see the module notes for the points the code marks).
    """
    target = os.environ.get(KILL_ENV)
    if not target:
        return
    point, _, nth = target.partition("#")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] < (int(nth) if nth.isdigit() else 1):
        return
    try:
        sys.stdout.flush()
        sys.stderr.write(f"\n{KILL_ENV}={target}: killing process {os.getpid()} (SIGKILL)\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed stream: die all the same
        pass
    os.kill(os.getpid(), signal.SIGKILL)
