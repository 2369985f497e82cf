"""The recipe stages: the workflow layer (one module per stage: its config, its run function, its registration).

Each stage module registers itself with :func:`~slimformer.stages.base.register_stage` when imported; this package
imports every built-in stage explicitly, so importing ``slimformer.stages`` fills :data:`STAGES`. Adding a stage
is one module here plus one import line below (docs/contributing.md).

Stages are the only code that knows about run folders, resume records and reports; the method packages
(``distill``, ``length``, ``quant``, ``embeddings``) are libraries they call.
"""

from slimformer.stages import (  # noqa: F401  (imported to register the stages, in the order they usually run)
    benchmark,
    distill,
    embeddings,
    evaluate,
    export,
    finetune,
    length,
    length_benchmark,
    qat,
    quantize,
    sdq,
    search,
    teacher,
)
from slimformer.stages.base import (
    STAGES,
    PlanState,
    RunContext,
    StageSpec,
    quantized_stages,
    register_stage,
    require,
    training_stages,
)

__all__ = [
    "STAGES",
    "PlanState",
    "RunContext",
    "StageSpec",
    "register_stage",
    "require",
    "training_stages",
    "quantized_stages",
]
