"""Typed, validated configs shared by the Python API, the CLI and YAML recipes.

Each config is a pydantic model with ``extra="forbid"``: an unknown key or a bad value is an error that
names the key. The CLI only parses arguments into these objects; recipes hold lists of them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "StageConfig",
    "FinetuneConfig",
    "EvaluateConfig",
    "ExportConfig",
    "QuantizeConfig",
    "BenchmarkConfig",
    "DATA_ENV",
    "PREVIOUS_MODEL",
    "RUN_CONTROL",
    "resolve_data_path",
    "run_control_fields",
    "identity_dump",
    "IDENTITY_WHEN_SET",
]

#: ``model:`` value meaning "the model folder written by the previous stage of the recipe".
PREVIOUS_MODEL = "previous"

#: Environment variable holding the data root (folder with glue_data/, squad_v1.1/, ...).
DATA_ENV = "SLIMFORMER_DATA"


def resolve_data_path(path: str | os.PathLike[str], data_root: str | os.PathLike[str] | None = None) -> Path:
    """Resolve a data path: absolute or existing paths as given, others relative to the data root.

    The data root is ``data_root`` if given, else ``$SLIMFORMER_DATA``, else ``./data``.
    """
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    root = data_root if data_root is not None else os.environ.get(DATA_ENV, "data")
    return Path(root).expanduser() / p


#: ``json_schema_extra`` flag of stage-config fields that steer how a stage runs, not what it produces
#: (checkpoint cadence): changing them neither reruns a finished stage nor restarts an interrupted one.
RUN_CONTROL = "run_control"


#: ``json_schema_extra`` flag of stage-config fields added after runs already existed: such a field is part of a
#: stage's identity only when set to something other than its default, so runs made before it keep their identity
#: (the default must reproduce what the stage did before the field existed).
IDENTITY_WHEN_SET = "identity_when_set"


def run_control_fields(cfg: BaseModel) -> set[str]:
    """Names of the :data:`RUN_CONTROL` fields of a config."""
    return {k for k, f in type(cfg).model_fields.items() if (f.json_schema_extra or {}).get(RUN_CONTROL)}


def identity_dump(cfg: BaseModel) -> dict[str, Any]:
    """The config as JSON minus what does not change its result: the :data:`RUN_CONTROL` fields, and the
    :data:`IDENTITY_WHEN_SET` fields left at their defaults. Resume hashes and checkpoint records use this."""
    skip = run_control_fields(cfg)
    for name, field in type(cfg).model_fields.items():
        if (field.json_schema_extra or {}).get(IDENTITY_WHEN_SET) and getattr(cfg, name) == field.get_default(
            call_default_factory=True
        ):
            skip.add(name)
    return cfg.model_dump(mode="json", exclude=skip)


class StageConfig(BaseModel):
    """Base of every stage config: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class FinetuneConfig(StageConfig):
    """Fine-tune a pretrained encoder on a task with the Hugging Face Trainer (Accelerate underneath)."""

    model: str = Field(
        "minilm-l6",
        description="model alias (minilm-l6), local HF folder, hub id, or 'previous' (in a recipe: the model "
        "written by an earlier stage, e.g. embeddings)",
    )
    task: str = Field(..., description="task name: cola sst2 mrpc stsb qqp mnli qnli rte wnli squad")
    data: str = Field(..., description="task data folder (GLUE) or SQuAD json; relative to the data root")
    max_seq_length: int | None = Field(None, gt=8, le=4096, description="tokens per sequence (default: the task's)")
    epochs: float = Field(3.0, gt=0, description="training epochs")
    max_steps: int = Field(-1, description="stop after this many optimizer steps (-1: use epochs)")
    learning_rate: float = Field(5e-5, gt=0, lt=1)
    batch_size: int = Field(32, ge=1, description="training batch size (sequences)")
    eval_batch_size: int = Field(64, ge=1)
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="linear warm-up, fraction of total steps")
    weight_decay: float = Field(0.01, ge=0)
    seed: int = Field(42)
    max_train_examples: int | None = Field(
        None, ge=1, description="cap on training examples (first N after a seeded shuffle)"
    )
    max_eval_examples: int | None = Field(None, ge=1, description="cap on evaluation examples (None: full split)")
    squad_split: str = Field(
        "dev-article-split", description="named article-level split of SQuAD dev (train part/eval part)"
    )
    doc_stride: int = Field(128, ge=1, description="SQuAD: token overlap between windows of a long context")
    logging_steps: int = Field(50, ge=1)
    save_steps: int = Field(200, ge=1, description="checkpoint every N optimizer steps (for --resume)")
    save_total_limit: int = Field(2, ge=1)
    threads: int | None = Field(None, ge=1, description="torch threads (default: all cores)")


class EvaluateConfig(StageConfig):
    """Evaluate a model (PyTorch folder or ONNX file) on a task split with the official metric."""

    split: str = Field(
        "dev", description="split name: dev (GLUE; MNLI dev_matched), dev_mismatched, or the SQuAD eval part"
    )
    batch_size: int = Field(64, ge=1)
    max_examples: int | None = Field(None, ge=1)
    threads: int | None = Field(None, ge=1)


class ExportConfig(StageConfig):
    """Export to ONNX (fp32), with an output check against PyTorch, and optionally int8 in one go."""

    format: Literal["onnx"] = "onnx"
    opset: int = Field(17, ge=13, le=23)
    atol: float = Field(1e-4, gt=0, description="max abs difference allowed between PyTorch and ONNX Runtime (fp32)")
    qat_atol: float = Field(
        0.5,
        gt=0,
        description="same, for QAT-converted models (int8 kernels): float rounding flips dynamically quantized "
        "activations by one step, so outputs differ by ~0.01-0.4 (docs/quantization.md)",
    )
    int8: Literal["none", "dynamic", "static"] = Field("none", description="also write an int8 model")


class QuantizeConfig(StageConfig):
    """int8 post-training quantization of the exported ONNX model with ONNX Runtime's tools."""

    method: Literal["int8-ptq"] = "int8-ptq"
    mode: Literal["dynamic", "static"] = "dynamic"
    per_channel: bool = Field(True, description="per-channel (per output row) weight scales")
    calibration_examples: int = Field(256, ge=1, description="static: training examples used for calibration")

    @field_validator("calibration_examples")
    @classmethod
    def _cap(cls, v: int) -> int:
        if v > 100_000:
            raise ValueError("calibration_examples above 100000 is not useful; expected ≤ 100000")
        return v


class BenchmarkConfig(StageConfig):
    """Accuracy, latency (bs 1), throughput (bs 32) and size of every runtime of a run."""

    batch_sizes: list[int] = Field([1, 32], min_length=1, description="batch sizes to time")
    seq_len: int | None = Field(None, gt=0, description="tokens per sequence (default: the task's max_seq_length)")
    warmup: int = Field(5, ge=0, description="untimed calls before timing")
    iters: int = Field(30, ge=1, description="timed calls; medians are reported")
    threads: int | None = Field(None, ge=1, description="threads pinned for every runtime (default: physical cores)")
    runtimes: list[Literal["pytorch-fp32", "onnxruntime-fp32", "onnxruntime-int8"]] = Field(
        ["pytorch-fp32", "onnxruntime-fp32", "onnxruntime-int8"], min_length=1
    )
    evaluate: bool = Field(True, description="also measure the task metric of each runtime on the eval split")
    max_eval_examples: int | None = Field(None, ge=1)

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v):
            raise ValueError(f"batch sizes must be ≥ 1, got {v}")
        return v
