"""The ``qat`` recipe stage (low-bit QAT with KD losses, METHODS §4); ``sdq`` (§5, :mod:`slimformer.stages.sdq`)
shares its training and saving.

Both take the fine-tuned teacher (``teacher:`` or the previous stage's ``model_dir``), train a copy of it as the
student with a :class:`~slimformer.distill.trainer.DistillationTrainer`, convert it
(:func:`~slimformer.quant.convert_qat_`: ``QuantizedLinear`` codes + scales) and save it with
:func:`~slimformer.checkpoint.save_model`. The ``applied`` entry of ``slimformer.json`` records the whole stage
config, the resolved quantizers (``quantization``), the bit widths, the loss set and the seed.

* ``qat`` defaults to KD-QAT's unified recipe: ternary (TWN) weights, 8-bit activations,
  ``L_pred + L_rep + L_map + L_out`` (Kim et al., EMNLP 2022). Plain QAT without distillation:
  ``kd_losses: {}`` and ``gt_weight: 1``.
* ``sdq`` (OUR RECONSTRUCTION, see :mod:`slimformer.quant.sdq`): uniform int8 (or 4-bit) weights with
  Quant-Noise on a scheduled fraction of weights, self-distilled from the fp32 starting model at the logits
  and at every self-attention block (``logits_kd`` + ``sdq_attention_kl``), plus the ground-truth loss.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from slimformer import dist
from slimformer.errors import ConfigError
from slimformer.quant.granularity import PerRow, PerTensor
from slimformer.quant.modules import ActivationQuantizer, BinaryWeight, TernaryWeight, UniformWeight
from slimformer.quant.qat import QATConfig, convert_qat_, prepare_qat_
from slimformer.quant.serialize import WEIGHT_QUANTIZERS, describe_qat_config
from slimformer.stages._kd import (
    KDTrainConfig,
    check_kd_stage,
    evaluate_model,
    load_teacher,
    save_student,
    teacher_dir,
    train_student,
)
from slimformer.stages.base import RunContext, register_stage

__all__ = ["QATStageConfig", "WEIGHT_QUANTIZERS", "run_qat", "run_stage", "describe_qat_config"]

_GRANULARITY = {"per_tensor": PerTensor, "per_row": PerRow}

#: KD-QAT's unified Map + Output loss set, ``L_pred + L_rep + L_map + L_out`` with β = 1 (METHODS §4(b)).
KD_QAT_MAP_OUTPUT = {"prediction": 1.0, "hidden_mse": 1.0, "attention_map_kl": 1.0, "attention_output_mse": 1.0}


def _embedding_quantizer(bits: int | None) -> Any:
    """The per-row quantizer of a ``bits``-bit word-embedding table (TernaryBERT's row-wise scheme), or None."""
    if bits is None:
        return None
    if bits == 1:
        return BinaryWeight(PerRow())
    return TernaryWeight(PerRow()) if bits == 2 else UniformWeight(bits, PerRow())


class QATStageConfig(KDTrainConfig):
    """The ``qat`` stage: low-bit QAT of a copy of the teacher with KD losses (KD-QAT, arXiv:2211.11014)."""

    stage_name: ClassVar[str] = "qat"

    weight_quantizer: str = Field("ternary", description="ternary (TWN), binary (BWN) or uniform (k-bit)")
    weight_bits: int | None = Field(
        None, description="bits per weight: ternary 2, binary 1, uniform 2/3/4/8 (default: the quantizer's own)"
    )
    weight_granularity: Literal["default", "per_tensor", "per_row"] = Field(
        "default", description="scale sharing (default: per tensor for ternary/binary, per row for uniform)"
    )
    weight_clip: float | Literal["default"] | None = Field(
        "default", description="weight clip (default: ternary 2.5, binary STE 1.0, uniform none)"
    )
    act_bits: int | None = Field(8, description="bits of the Linear inputs (dynamic max-abs); null = weights only")
    act_clip: float | None = Field(None, gt=0, description="activation pre-clip (KD-QAT: 2.5); null = none")
    quantize_pooler: bool = Field(True, description="also quantize the pooler dense layer (KD-QAT does)")
    embedding_bits: Literal[1, 2, 4, 8] | None = Field(
        None,
        description="train the word-embedding table quantized, one scale per row: 8/4 uniform, 2 ternary "
        "(TernaryBERT), 1 binary; null = fp32 table",
    )
    kd_losses: dict[str, float] = Field(
        default_factory=lambda: dict(KD_QAT_MAP_OUTPUT),
        description="{loss name: weight}; default KD-QAT Map+Output: L_pred + L_rep + L_map + L_out",
    )

    @model_validator(mode="after")
    def _check_quantizers(self) -> QATStageConfig:
        self.qat_config()  # unknown quantizer / impossible bit width -> ConfigError at parse time
        return self

    def qat_config(self) -> QATConfig:
        """The :class:`~slimformer.quant.QATConfig` these options describe.

        Raises:
            ConfigError: unknown ``weight_quantizer``; a bit width the quantizer cannot do; bad clip or bits.
        """
        if self.weight_quantizer not in WEIGHT_QUANTIZERS:
            raise ConfigError(
                f"weight_quantizer {self.weight_quantizer!r} is unknown; expected one of {sorted(WEIGHT_QUANTIZERS)} "
                "(learned step size, LSQ, is a primitive only: no LSQ weight quantizer for QAT yet)"
            )
        cls, bits = WEIGHT_QUANTIZERS[self.weight_quantizer]
        if bits is None and self.weight_bits is None:
            raise ConfigError("weight_quantizer 'uniform' needs weight_bits (one of 2, 3, 4, 8)")
        if bits is not None and self.weight_bits not in (None, bits):
            raise ConfigError(
                f"weight_quantizer {self.weight_quantizer!r} has {bits}-bit weights, "
                f"got weight_bits={self.weight_bits} (use weight_quantizer: uniform for k-bit weights)"
            )
        kw: dict[str, Any] = {} if bits is not None else {"bits": self.weight_bits}
        if self.weight_granularity != "default":
            kw["granularity"] = _GRANULARITY[self.weight_granularity]()
        if self.weight_clip != "default":
            kw["clip"] = self.weight_clip
        act = None if self.act_bits is None else ActivationQuantizer(bits=self.act_bits, clip=self.act_clip)
        emb = _embedding_quantizer(self.embedding_bits)
        return QATConfig(weight=cls(**kw), activation=act, quantize_pooler=self.quantize_pooler, embedding=emb)

    def prepare(self, model: Any) -> list[Any]:
        """Prepare ``model`` for QAT in place; returns the Trainer callbacks the method needs (none here)."""
        prepare_qat_(model, self.qat_config())
        return []


def run_qat(
    config: QATStageConfig, out: str | Path, *, teacher: str | Path, data_root: str | None = None
) -> dict[str, Any]:
    """Quantization-aware training of a copy of ``teacher`` (``qat`` / ``sdq`` by the config class), saved to ``out``.

    Returns:
        ``{"model_dir", "quantized": True, "metrics", "bits", "kd_losses", "train_examples", "steps",
        "learning_curve"}``; ``metrics`` are the converted model's official dev metrics (PyTorch; fake-quant ==
        converted numerics); the learning curve's earlier points score the fake-quantized model after each epoch.

    Raises:
        ConfigError: bad quantizer / loss set, teacher trained on another task or already quantized.
        ModelLoadError: bad teacher folder. DataError: missing data.
    """
    out = Path(out)
    loaded = load_teacher(teacher, config.task)
    student = copy.deepcopy(loaded.model)  # own parameters: nothing aliases the frozen teacher
    callbacks = config.prepare(student)
    kd = config.loss()
    run = train_student(
        student,
        loaded.model if kd.needs_teacher else None,
        loaded.tokenizer,
        config,
        teacher_meta=loaded.meta,
        work_dir=out.parent / f"{out.name}.trainer",
        data_root=data_root,
        identity={"teacher": str(Path(teacher).resolve())},
        callbacks=callbacks,
    )
    # several processes: equal weights on every rank now; the main process evaluates and writes (slimformer.dist)
    return dist.on_main(lambda: _finish(student, config, loaded, teacher, out, run, kd, data_root))


def _finish(
    student: Any,
    config: QATStageConfig,
    loaded: Any,
    teacher: str | Path,
    out: Path,
    run: Any,
    kd: Any,
    data_root: str | None,
) -> dict[str, Any]:
    """Convert the trained student to its quantized form, score it on the dev set and save it (main process)."""
    convert_qat_(student)
    student.eval()
    metrics = evaluate_model(student, loaded.tokenizer, config, teacher_meta=loaded.meta, data_root=data_root)
    quantization = describe_qat_config(config.qat_config())
    bits = {"weight": quantization["weight"]["bits"], "activation": config.act_bits}
    record = {
        "stage": config.stage_name,
        "teacher": str(teacher),
        "quantization": quantization,
        "bits": bits,
        "train_examples": run.train_examples,
        "steps": run.steps,
        "train_loss": run.train_loss,
    }
    save_student(student, loaded.tokenizer, out, loaded.meta, config, record, metrics, run)
    return {
        "model_dir": str(out),
        "quantized": True,
        "metrics": metrics,
        "bits": bits,
        "kd_losses": kd.losses,
        "train_examples": run.train_examples,
        "steps": run.steps,
        "learning_curve": run.learning_curve(metrics),
    }


def _handler(ctx: RunContext, config: QATStageConfig) -> dict[str, Any]:
    out = ctx.stage_dir(config.stage_name)
    teacher = teacher_dir(ctx, config.teacher, config.stage_name)
    return run_qat(config, out, teacher=teacher, data_root=ctx.data_root)


def run_stage(ctx: RunContext, config: QATStageConfig) -> dict[str, Any]:
    """The handler of the ``qat`` and ``sdq`` stages: train, convert and save against the run's teacher."""
    return _handler(ctx, config)


register_stage(
    "qat",
    QATStageConfig,
    inherits=("task", "data", "seed"),
    trains=True,
    quantized_output=True,
    produces_model=True,
    check=check_kd_stage,
)(run_stage)
