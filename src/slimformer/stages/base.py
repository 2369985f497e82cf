"""The stage registry and what a stage handler sees of its run.

A stage is a config class (a :class:`~slimformer.config.StageConfig`) and a handler ``handler(ctx, config) ->
outputs``, registered under its recipe name with :func:`register_stage`. The registration carries the facts other
code needs about the stage (does it train? is its model quantized?), so nothing keeps hand lists of stage names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimformer.config import StageConfig, resolve_data_path
from slimformer.errors import ConfigError
from slimformer.tasks.data import check_task_data

if TYPE_CHECKING:
    from slimformer.recipe import Recipe

__all__ = [
    "StageHandler",
    "StageSpec",
    "StageCheck",
    "PlanState",
    "STAGES",
    "register_stage",
    "RunContext",
    "require",
    "training_stages",
    "quantized_stages",
]

StageHandler = Callable[["RunContext", Any], dict[str, Any]]
#: ``check(plan, config)``: what a stage can verify before the recipe's first stage runs (see :class:`PlanState`).
StageCheck = Callable[["PlanState", Any], None]


@dataclass(frozen=True)
class StageSpec:
    """A registered stage.

    Attributes:
        name: the stage's name in recipes (``finetune``, ``distill`` ...).
        config_cls: its config class.
        handler: ``handler(ctx, config) -> outputs`` (paths and figures; ``state.json`` records them).
        inherits: recipe-level keys (``model``, ``task``, ``data``, ``seed``) copied into the stage config when the
            stage does not set them.
        trains: the stage trains weights on the task's training data (the search split must avoid what it saw).
        quantized_output: the model it writes holds quantized weights (never a teacher, never PTQ'd again).
        produces_model: it writes a model folder (``outputs["model_dir"]``).
        needs: output keys an earlier stage must produce (``model_dir``, ``onnx_fp32``, ``front_json`` ...).
        produces: output keys it produces (its ``check`` may add ones that depend on its config).
        check: ``check(plan, config)``, run by :func:`~slimformer.recipe.validate_plan` before the recipe's first
            stage: raises :class:`~slimformer.errors.ConfigError` when the stage cannot work (a loss that does not
            fit the task's head, an unlabelled split, a teacher of another task ...), in seconds.
    """

    name: str
    config_cls: type[StageConfig]
    handler: StageHandler
    inherits: tuple[str, ...] = ()
    trains: bool = False
    quantized_output: bool = False
    produces_model: bool = False
    needs: tuple[str, ...] = ()
    produces: tuple[str, ...] = ()
    check: StageCheck | None = None


#: Stage registry: name -> :class:`StageSpec`, filled by the stage modules that ``slimformer.stages`` imports.
STAGES: dict[str, StageSpec] = {}


def register_stage(
    name: str,
    config_cls: type[StageConfig],
    *,
    inherits: tuple[str, ...] = (),
    trains: bool = False,
    quantized_output: bool = False,
    produces_model: bool = False,
    needs: tuple[str, ...] = (),
    produces: tuple[str, ...] = (),
    check: StageCheck | None = None,
) -> Callable[[StageHandler], StageHandler]:
    """Decorator registering ``handler(ctx, config) -> outputs`` as the stage ``name`` (see :class:`StageSpec`).

    Raises:
        ValueError: ``name`` is registered already (two stages cannot share a recipe name).
    """

    def deco(fn: StageHandler) -> StageHandler:
        if name in STAGES and STAGES[name].handler is not fn:
            raise ValueError(f"stage {name!r} is registered twice")
        made = (*produces, "model_dir") if produces_model and "model_dir" not in produces else produces
        STAGES[name] = StageSpec(
            name, config_cls, fn, inherits, trains, quantized_output, produces_model, needs, made, check
        )
        return fn

    return deco


@dataclass
class PlanState:
    """What the stages before the one being checked will have produced, as :func:`validate_plan` walks a recipe.

    Attributes:
        recipe: the recipe. task: its :class:`~slimformer.tasks.registry.TaskSpec` (kind, labels, files).
        data_root: root of relative data paths.
        available: output keys of the earlier stages (``model_dir``, ``onnx_fp32`` ...).
        quantized_by: the stage whose quantized model is the latest one (``qat`` / ``sdq``), else None.
        stages: names of the earlier stages, in order.
        added: the keys the stage being checked will add once its check passed (its ``produces``, less withdrawn).
        notes: ``(stage index, message)``: what a check found that works but that the user should know (shown by
            ``compress`` before the first stage and in the ``--dry-run`` plan).
    """

    recipe: Recipe
    task: Any
    data_root: str | None = None
    available: set[str] = field(default_factory=set)
    quantized_by: str | None = None
    stages: list[str] = field(default_factory=list)
    added: set[str] = field(default_factory=set)
    notes: list[tuple[int, str]] = field(default_factory=list)

    def note(self, message: str) -> None:
        """Record ``message`` for the stage being checked (a warning, not an error)."""
        self.notes.append((len(self.stages), message))

    def withdraw(self, key: str) -> None:
        """The stage being checked will not produce ``key`` after all (its config decides); an earlier stage's
        ``key`` stays available."""
        self.added.discard(key)

    def data(self, config: Any) -> str:
        """The resolved data folder of a stage config that has ``data`` (else the recipe's)."""
        return str(resolve_data_path(getattr(config, "data", None) or self.recipe.data, self.data_root))

    def check_data(self, config: Any, *splits: str) -> None:
        """The files of ``splits`` exist and have the task's columns (:func:`slimformer.tasks.data.check_task_data`)."""
        check_task_data(self.task, self.data(config), splits)

    def producers(self, key: str) -> list[str]:
        """Names of the registered stages that produce ``key`` (for error messages)."""
        return sorted(n for n, s in STAGES.items() if key in s.produces)


def training_stages() -> frozenset[str]:
    """Names of the registered stages that train on the task's training data (``trains=True``)."""
    return frozenset(n for n, s in STAGES.items() if s.trains)


def quantized_stages() -> frozenset[str]:
    """Names of the registered stages whose model holds quantized weights (``quantized_output=True``)."""
    return frozenset(n for n, s in STAGES.items() if s.quantized_output)


@dataclass
class RunContext:
    """What a stage handler sees: the run folder, the recipe, the data root, and earlier stages' outputs.

    ``history`` holds ``(stage name, outputs)`` of the stages run (or resumed) so far, in recipe order.
    """

    run_dir: Path
    recipe: Recipe
    data_root: str | None = None
    history: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def stage_dir(self, name: str) -> Path:
        """The folder where stage ``name`` writes."""
        return self.run_dir / name

    def record(self, name: str, outputs: dict[str, Any]) -> None:
        """Append the outputs of stage ``name`` (the recipe runner calls this after each stage)."""
        self.history.append((name, outputs))

    def earlier(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(stage name, outputs)`` of the earlier stages, most recent first."""
        return reversed(self.history)

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        """Each stage's outputs keyed ``"<index>-<stage name>"`` (``"3-search"``), in recipe order.

        A read-only view for callers that address a stage by its position (what ``compress`` returns to users);
        stage code looks earlier stages up by name with :meth:`output_of` / :meth:`latest` instead.
        """
        return {f"{i}-{name}": out for i, (name, out) in enumerate(self.history)}

    def latest(self, key: str) -> Any:
        """The most recent output ``key`` of any earlier stage (e.g. ``model_dir``, ``onnx_fp32``), or None."""
        return next((out[key] for _, out in self.earlier() if key in out), None)

    def output_of(self, stage: str) -> dict[str, Any] | None:
        """The outputs of the most recent earlier stage named ``stage``, or None."""
        return next((out for name, out in self.earlier() if name == stage), None)


def require(ctx: RunContext, key: str, stage: str, producer: str) -> Any:
    """``ctx.latest(key)``, or a :class:`ConfigError` saying which earlier stage must produce it."""
    value = ctx.latest(key)
    if value is None:
        raise ConfigError(f"stage {stage!r} needs a {key} from an earlier {producer!r} stage in the recipe")
    return value
