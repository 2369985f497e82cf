"""The ``teacher`` stage: the user's own fine-tuned Hugging Face folder becomes the run's teacher.

A plain folder (``config.json`` with a task head and ``id2label``, ``model.safetensors``, tokenizer files; no
``slimformer.json``) is checked against the task (head kind; label names and count), scored on the eval split, and
saved as a slimformer model folder whose ``slimformer.json`` records ``teacher_source: hf-folder``. Later stages
(``distill``, ``length``, ``qat`` ...) take it as they take a model made by ``finetune``.

A recipe whose ``model:`` is such a folder and whose first stage does not make a model gets this stage first
(``slimformer.recipe.parse_recipe``), so ``model: <your folder>`` + ``distill`` just works.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field

from slimformer.checkpoint import load_pretrained, save_model
from slimformer.config import StageConfig, resolve_data_path
from slimformer.errors import ConfigError, ModelLoadError
from slimformer.evaluate import evaluate_predictor, torch_predictor
from slimformer.io import atomic_write_json
from slimformer.models import META_FILE, HeadKind, ModelMeta, resolve_model_path
from slimformer.stages.base import PlanState, RunContext, register_stage
from slimformer.tasks import TaskSpec, get_task, task_to_dict
from slimformer.tasks.data import load_eval_set

__all__ = ["TeacherConfig", "task_head", "check_teacher_fits", "import_teacher", "TASK_HEAD_SUFFIXES"]

#: ``config.json`` architecture suffix -> the head slimformer loads it with.
TASK_HEAD_SUFFIXES = {"ForSequenceClassification": HeadKind.CLASSIFICATION, "ForQuestionAnswering": HeadKind.QA}
_GENERIC = "LABEL_"


class TeacherConfig(StageConfig):
    """Take a user's fine-tuned Hugging Face folder (task head, ``id2label``) as the run's teacher."""

    model: str = Field(..., description="the fine-tuned Hugging Face folder (task head; no slimformer.json needed)")
    task: str = Field(..., description="task name (a preset or the user task of the recipe)")
    data: str = Field(..., description="task data (GLUE folder, SQuAD json; user tasks name their files)")
    max_seq_length: int | None = Field(None, gt=8, le=4096, description="tokens per sequence (default: the task's)")
    eval_batch_size: int = Field(64, ge=1)
    max_eval_examples: int | None = Field(None, ge=1, description="cap on evaluation examples (None: full split)")
    squad_split: str = Field("dev-article-split", description="SQuAD presets: the named article split")
    doc_stride: int = Field(128, ge=1, description="QA: token overlap between windows of a long context")
    threads: int | None = Field(None, ge=1)


def task_head(folder: str | Path) -> tuple[HeadKind, dict[int, str]] | None:
    """The task head and ``id2label`` of a Hugging Face folder's ``config.json``, or None for a base encoder (or a
    folder slimformer wrote, which has ``slimformer.json``, or anything that is not a local folder).

    Raises:
        ModelLoadError: ``config.json`` is not valid JSON.
    """
    p = Path(folder).expanduser()
    if not (p / "config.json").is_file() or (p / META_FILE).is_file():
        return None
    try:
        config = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{p / 'config.json'}: not valid JSON ({e})") from None
    archs = config.get("architectures") or [] if isinstance(config, dict) else []
    head = next((h for a in archs for s, h in TASK_HEAD_SUFFIXES.items() if str(a).endswith(s)), None)
    if head is None:
        return None
    id2label = {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}
    if not id2label and head is HeadKind.CLASSIFICATION:  # transformers omits the default names
        id2label = {i: f"{_GENERIC}{i}" for i in range(int(config.get("num_labels") or 2))}
    return head, id2label


def _check_fit(folder: str, head: HeadKind, id2label: dict[int, str], spec: TaskSpec) -> None:
    """The teacher's head and labels fit the task, else a one-line ConfigError naming both."""
    want = HeadKind.QA if spec.kind == "qa" else HeadKind.CLASSIFICATION
    if head is not want:
        raise ConfigError(
            f"{folder}: has a {head.value} head; task {spec.name} ({spec.kind}) needs a {want.value} head"
        )
    if spec.kind == "regression" and len(id2label) not in (0, 1):
        raise ConfigError(f"{folder}: has {len(id2label)} labels; task {spec.name} is a regression (1 output)")
    if spec.kind != "classification":
        return
    assert spec.labels is not None
    names = [id2label[i] for i in sorted(id2label)]
    if len(names) != len(spec.labels):
        raise ConfigError(
            f"{folder}: has {len(names)} labels (id2label); task {spec.name} has {len(spec.labels)} "
            f"({list(spec.labels)[:5]}...)"
        )
    generic = all(n == f"{_GENERIC}{i}" for i, n in enumerate(names))
    if not generic and names != list(spec.labels):
        diff = [(i, n, t) for i, (n, t) in enumerate(zip(names, spec.labels)) if n != t][:3]
        raise ConfigError(
            f"{folder}: id2label does not match the labels of task {spec.name} (id, model, task: {diff}); "
            "relabel the data or the model"
        )


def check_teacher_fits(folder: str, spec: TaskSpec) -> None:
    """A fine-tuned folder's head and labels fit the task (checked before anything runs), else a one-line error.

    Raises:
        ConfigError: no task head, another head kind, another label count or other label names.
    """
    found = task_head(resolve_model_path(folder))
    if found is None:
        raise ConfigError(f"{folder}: no task head in config.json (architectures); a base encoder needs 'finetune'")
    _check_fit(folder, found[0], found[1], spec)


def import_teacher(cfg: TeacherConfig, out: Path, *, data_root: str | None = None) -> dict[str, Any]:
    """Check ``cfg.model`` against the task, score it on the eval split, save it to ``out`` as a model folder.

    Returns:
        ``{"model_dir", "metrics", "task", "data", "teacher_source": "hf-folder"}``.

    Raises:
        ConfigError: no task head (a base encoder needs ``finetune``), the head or labels do not fit the task.
        ModelLoadError: the folder cannot be loaded. DataError: the eval data cannot be read.
    """
    import torch

    path = resolve_model_path(cfg.model)
    found = task_head(path)
    if found is None:
        raise ConfigError(
            f"{cfg.model}: no task head in config.json (architectures) or already a slimformer folder; a base encoder "
            "is fine-tuned with a 'finetune' stage first"
        )
    head, id2label = found
    spec = get_task(cfg.task)
    _check_fit(cfg.model, head, id2label, spec)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model, tok = load_pretrained(path, head)
    msl = cfg.max_seq_length or spec.max_seq_length
    dev = load_eval_set(
        spec.name,
        resolve_data_path(cfg.data, data_root),
        tok,
        max_seq_length=msl,
        max_examples=cfg.max_eval_examples,
        squad_split=cfg.squad_split,
        doc_stride=cfg.doc_stride,
    )
    metrics = evaluate_predictor(
        torch_predictor(model.eval()), dev, batch_size=cfg.eval_batch_size, pad_token_id=tok.pad_token_id or 0
    )
    record = {"stage": "teacher", **cfg.model_dump(mode="json"), "teacher_source": "hf-folder"}
    meta = ModelMeta(
        head=head.value,
        task=spec.name,
        base_model=cfg.model,
        applied=[record],
        max_seq_length=msl,
        labels=list(spec.labels) if spec.labels else None,
        task_spec=task_to_dict(spec) if spec.files is not None else None,
        teacher_source="hf-folder",
    )
    save_model(model, tok, out, meta)
    atomic_write_json(
        out / "eval_results.json",
        {"task": spec.name, "split": dev.split, "examples": len(dev.examples), "metrics": metrics},
    )
    return {
        "model_dir": str(out),
        "metrics": metrics,
        "task": spec.name,
        "data": cfg.data,
        "teacher_source": "hf-folder",
    }


def _check(plan: PlanState, cfg: TeacherConfig) -> None:
    """Plan check: the folder's head and labels fit the task (:func:`check_teacher_fits`); the eval file is there."""
    check_teacher_fits(cfg.model, plan.task)
    plan.check_data(cfg, "dev")


@register_stage("teacher", TeacherConfig, inherits=("model", "task", "data"), produces_model=True, check=_check)
def _teacher(ctx: RunContext, cfg: TeacherConfig) -> dict[str, Any]:
    return import_teacher(cfg, ctx.stage_dir("teacher"), data_root=ctx.data_root)
