"""Helpers of the distillation / QAT stage tests: a tiny fine-tuned teacher folder with its slimformer.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import make_tiny_model
from slimformer.checkpoint import save_model
from slimformer.models import ModelMeta


def save_teacher(out: Path, tokenizer: Any, data: Path, *, task: str = "sst2", seed: int = 0, **cfg: Any) -> Path:
    """Save a tiny random BERT classifier as if a ``finetune`` stage had trained it on ``task`` / ``data``."""
    model = make_tiny_model("classification", seed=seed, **{"num_labels": 2, **cfg})
    meta = ModelMeta(
        head="classification",
        task=task,
        base_model="tiny",
        applied=[{"stage": "finetune", "task": task, "data": str(data), "seed": 42}],
        seed=42,
        max_seq_length=32,
        labels=["0", "1"],
    )
    return save_model(model, tokenizer, out, meta)
