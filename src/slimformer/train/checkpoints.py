"""Resumable training runs: the Trainer checkpoint folder beside a model folder, resumed only with the same config.

Every long training stage (``finetune``, ``length``) checkpoints every ``save_steps`` optimizer steps into
``<out>.checkpoints`` and, started again with the same record, continues from the last checkpoint (Hugging Face
``Trainer.train(resume_from_checkpoint=...)`` restores weights, optimizer, scheduler, RNG states and the data
position). The folder is removed once the model folder is written.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from slimformer._faults import kill_point, kill_requested
from slimformer.config import identity_dump
from slimformer.io import atomic_write_json, read_json

__all__ = [
    "CKPT_RECORD",
    "checkpoint_dir",
    "last_checkpoint",
    "is_complete_checkpoint",
    "kill_callbacks",
    "prepare_checkpoints",
    "remove_checkpoints",
    "resume_record",
]

#: The file in the checkpoint folder recording the config the checkpoints were written with.
CKPT_RECORD = "slimformer-finetune.json"


def checkpoint_dir(out: str | Path) -> Path:
    """The Trainer's checkpoint folder for a model written to ``out`` (kept beside it, not inside it)."""
    out = Path(out)
    return out.parent / f"{out.name}.checkpoints"


#: The Trainer writes ``trainer_state.json`` last (after weights, optimizer, scheduler and RNG states): a checkpoint
#: folder without it, or without weights, is one a kill interrupted.
_STATE_FILE = "trainer_state.json"
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def is_complete_checkpoint(folder: Path) -> bool:
    """Whether a ``checkpoint-<step>`` folder was written to the end: ``trainer_state.json`` and a weights file."""
    return (folder / _STATE_FILE).is_file() and any((folder / name).is_file() for name in _WEIGHT_FILES)


def last_checkpoint(ckpt: Path) -> Path | None:
    """The newest complete ``checkpoint-<step>`` folder of ``ckpt``, or ``None``.

    A checkpoint folder a kill interrupted (no ``trainer_state.json`` or no weights: :func:`is_complete_checkpoint`)
    is deleted, so resuming continues from the newest complete one.
    """
    if not ckpt.is_dir():
        return None
    found: list[tuple[int, Path]] = []
    for entry in ckpt.iterdir():
        m = _CHECKPOINT_NAME.match(entry.name)
        if m is None or not entry.is_dir():
            continue
        if is_complete_checkpoint(entry):
            found.append((int(m.group(1)), entry))
        else:
            print(f"{entry}: incomplete checkpoint (interrupted while it was written); removed")
            shutil.rmtree(entry, ignore_errors=True)
    return max(found)[1] if found else None


def resume_record(config: BaseModel, **identity: Any) -> dict[str, Any]:
    """What an interrupted run must match to be resumed: :func:`~slimformer.config.identity_dump` of the config
    (no run-control fields), plus ``identity`` (the input model folder, the teacher, ...)."""
    return {**identity_dump(config), **identity}


def prepare_checkpoints(
    ckpt: Path, record: dict[str, Any], resume: bool, *, legacy: dict[str, Any] | None = None
) -> Path | None:
    """The checkpoint to resume from, or ``None``; checkpoints that must not be resumed are removed first.

    ``record`` (the stage config as JSON, plus anything else that must match, e.g. the input model) is written to
    ``ckpt/slimformer-finetune.json``: an interrupted run is resumed only with the same record (the Trainer would
    otherwise restore another run's optimizer and schedule), and a fresh run never mixes its checkpoints with
    older ones. ``legacy``: the record an earlier release wrote for the same run (e.g. before a field became
    run-control), also accepted for resuming.
    """
    recorded = ckpt / CKPT_RECORD
    last = last_checkpoint(ckpt)
    same = recorded.is_file() and read_json(recorded) in [r for r in (record, legacy) if r is not None]
    if last is not None and not (resume and same):
        if resume:
            print(f"{ckpt}: checkpoints were written with another config; starting over")
        shutil.rmtree(ckpt, ignore_errors=True)
        last = None
    atomic_write_json(recorded, record)
    return last


def remove_checkpoints(ckpt: Path) -> None:
    """Delete the checkpoint folder of a finished run."""
    shutil.rmtree(ckpt, ignore_errors=True)


def kill_callbacks() -> list[Any]:
    """Trainer callbacks of the kill-and-resume tests (:mod:`slimformer._faults`): after each checkpoint is saved,
    the point ``<stage>:after-checkpoint`` (``<stage>`` = the checkpoint folder's name without ``.checkpoints``).
    Empty unless ``SLIMFORMER_KILL_AT`` is set, so a normal run's Trainer is unchanged."""
    if not kill_requested():
        return []
    from transformers import TrainerCallback

    class _KillAfterSave(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:  # the checkpoint is on disk
            kill_point(f"{Path(args.output_dir).name.removesuffix('.checkpoints')}:after-checkpoint")

    return [_KillAfterSave()]
