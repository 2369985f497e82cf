"""The ``sdq`` recipe stage: Self-Distilled Quantization (METHODS §5), trained and saved as ``qat`` is."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from slimformer.errors import ConfigError
from slimformer.quant.qat import QATConfig
from slimformer.quant.sdq import QuantNoiseCallback, QuantNoiseSchedule, prepare_quant_noise_
from slimformer.stages._kd import check_kd_stage
from slimformer.stages.base import register_stage
from slimformer.stages.qat import QATStageConfig, run_stage

__all__ = ["SDQStageConfig"]


class SDQStageConfig(QATStageConfig):
    """The ``sdq`` stage: Quant-Noise QAT self-distilled from the fp32 model (OUR RECONSTRUCTION of SDQ, §5(b)).

    ``L = gt_weight · CE + λ_out · τ² · KL(p_T^τ ‖ p_S^τ) + λ_att · sdq_attention_kl`` with
    ``λ_out = kd_losses.logits_kd``, ``λ_att = kd_losses.sdq_attention_kl``. For the "attention output"
    reading of the paper (METHODS §5(b) ambiguity) use ``kd_losses: {logits_kd: 1, attention_output_mse: 1}``.
    """

    stage_name: ClassVar[str] = "sdq"

    weight_quantizer: str = Field("uniform", description="SDQ needs uniform k-bit weights (Quant-Noise)")
    weight_bits: int | None = Field(8, description="bits per weight: 8 (the paper) or 4")
    kd_losses: dict[str, float] = Field(
        default_factory=lambda: {"logits_kd": 1.0, "sdq_attention_kl": 1.0},
        description="{loss name: weight}; default: output KD + attention-map KL over all layers and heads",
    )
    gt_weight: float = Field(1.0, ge=0, description="weight of the ground-truth task loss")
    temperature_squared: bool = Field(True, description="multiply logits_kd by temperature²")
    noise_start: float = Field(0.25, ge=0, le=1, description="Quant-Noise rate at step 0 (fraction of weights)")
    noise_end: float = Field(1.0, ge=0, le=1, description="Quant-Noise rate after the ramp")
    noise_ramp: float = Field(0.5, ge=0, le=1, description="fraction of training steps over which the rate ramps")
    noise_block_size: int = Field(1, ge=1, description="weights per Quant-Noise block (along the input axis)")

    def qat_config(self) -> QATConfig:
        """As :meth:`QATStageConfig.qat_config`, for uniform unclipped weights only (Quant-Noise).

        Raises:
            ConfigError: another quantizer or a weight clip; as :meth:`QATStageConfig.qat_config`.
        """
        if self.weight_quantizer != "uniform" or self.weight_clip not in ("default", None):
            raise ConfigError(
                f"sdq needs weight_quantizer: uniform without weight_clip (Quant-Noise on k-bit weights), "
                f"got weight_quantizer={self.weight_quantizer!r}, weight_clip={self.weight_clip!r}"
            )
        return super().qat_config()

    def prepare(self, model: Any) -> list[Any]:
        schedule = QuantNoiseSchedule(self.noise_start, self.noise_end, self.noise_ramp)
        prepare_quant_noise_(model, self.qat_config(), p=schedule(0, 1), block_size=self.noise_block_size)
        return [QuantNoiseCallback(schedule)]


register_stage(
    "sdq",
    SDQStageConfig,
    inherits=("task", "data", "seed"),
    trains=True,
    quantized_output=True,
    produces_model=True,
    check=check_kd_stage,
)(run_stage)
