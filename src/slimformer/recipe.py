"""Recipes: an ordered list of stages, loaded from YAML into typed configs and run into one run folder.

A recipe file::

    name: quickstart-sst2
    task: sst2
    model: minilm-l6
    data: glue_data/SST-2          # relative to the data root (--data-root / $SLIMFORMER_DATA)
    seed: 42
    stages:
      - finetune: {epochs: 1, max_train_examples: 8000}
      - evaluate: {}
      - export: {}
      - quantize: {mode: dynamic}
      - benchmark: {batch_sizes: [1, 32]}

Every stage name maps to a config class and a handler through :func:`slimformer.stages.register_stage`
(no if/elif over names; ``slimformer.stages`` imports every stage). Unknown stages, unknown keys and bad values
are :class:`~slimformer.errors.ConfigError` naming the file and the key path. A run writes
``recipe.resolved.yaml`` and ``state.json`` into the run folder and, when started again, skips the stages already
done with the same config (resume at the stage it stopped in).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slimformer import dist
from slimformer._faults import kill_point
from slimformer.config import StageConfig, identity_dump, legacy_identity, resolve_data_path
from slimformer.errors import ConfigError, SlimformerError
from slimformer.io import atomic_write_json, atomic_write_text, check_output_path, read_json
from slimformer.stages import STAGES, PlanState, RunContext, StageSpec, register_stage
from slimformer.stages.teacher import task_head
from slimformer.tasks import get_task
from slimformer.tasks.userdata import DataFiles, describe_task
from slimformer.yamlio import load_yaml, load_yaml_file

__all__ = [
    "Recipe",
    "RunContext",
    "StageSpec",
    "register_stage",
    "STAGES",
    "load_recipe",
    "run_recipe",
    "validate_plan",
    "plan_rows",
    "plan_recipe",
]


class Recipe(BaseModel):
    """A validated recipe. ``stages`` holds ``(stage name, validated config)`` pairs in order."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    task: str
    model: str = "minilm-l6"
    data: str
    seed: int = 42
    run_dir: str | None = None
    description: str | None = None
    stages: list[tuple[str, StageConfig]] = Field(default_factory=list)
    #: the ``task:`` mapping of a recipe over the user's own data (files, columns, labels), else None
    task_description: dict[str, Any] | None = Field(None, exclude=True)

    def to_yaml_dict(self) -> dict[str, Any]:
        """The resolved recipe (every default filled in) as plain data."""
        head = self.model_dump(exclude={"stages"}, exclude_none=True)
        if self.task_description is not None:
            head["task"] = self.task_description
        head["stages"] = [{name: cfg.model_dump(mode="json")} for name, cfg in self.stages]
        return head


#: Keys of a recipe's ``task:`` mapping (a task described by the user's data).
_TASK_KEYS = {"name", "files", "labels", "main_metric", "max_seq_length"}


def _describe_user_task(task: dict[str, Any], model: str, source: str, data_root: str | None = None) -> str:
    """Register the user task a recipe's ``task:`` mapping describes; returns its name.

    Labels come from ``labels:``, else from the teacher's ``id2label`` when ``model`` is a fine-tuned folder with
    named labels, else from the training data (sorted).

    Raises:
        ConfigError: unknown or missing keys, bad files description. DataError: unreadable data.
    """
    where = f"{source}: task"
    unknown = sorted(set(task) - _TASK_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(_TASK_KEYS)}")
    name = task.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name: expected the task's name (e.g. banking77), got {name!r}")
    files = DataFiles.from_dict(task.get("files"), f"{where}.files")
    files = files.resolved(lambda p: str(resolve_data_path(p, data_root)))
    labels = task.get("labels")
    if labels is None:
        head = task_head(model) if Path(str(model)).expanduser().is_dir() else None
        id2label = head[1] if head else {}
        names = [id2label[i] for i in sorted(id2label)]
        if names and not all(n == f"LABEL_{i}" for i, n in enumerate(names)):
            labels = names
    elif not isinstance(labels, list) or not all(isinstance(x, (str, int)) for x in labels):
        raise ConfigError(f"{where}.labels: expected a list of label names, got {labels!r}")
    msl = task.get("max_seq_length", 128)
    if not isinstance(msl, int) or not 8 < msl <= 4096:
        raise ConfigError(f"{where}.max_seq_length: expected tokens in (8, 4096], got {msl!r}")
    describe_task(
        name,
        files,
        labels=[str(x) for x in labels] if labels is not None else None,
        main_metric=task.get("main_metric"),
        max_seq_length=msl,
    )
    return name


#: Stages after which a recipe has a task model; before any other first stage, a user's fine-tuned folder given
#: as ``model:`` is taken in by a ``teacher`` stage.
_MAKES_TASK_MODEL = ("finetune", "teacher", "embeddings")


def _format_validation(prefix: str, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(x) for x in first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    sep = "" if prefix.endswith(": ") else "."
    return f"{prefix}{sep + loc if loc else ''}: {msg} (got {first.get('input')!r})"


def parse_recipe(raw: Any, source: str = "<recipe>", *, data_root: str | None = None) -> Recipe:
    """Validate parsed YAML into a :class:`Recipe`.

    ``data_root`` resolves the relative file paths of a ``task:`` mapping (default ``$SLIMFORMER_DATA``).

    Raises:
        ConfigError: not a mapping, unknown stage, unknown key, bad value; the message names ``source`` and the key.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a recipe must be a mapping with name, task, data and stages")
    _check_keys(raw, source)
    raw = dict(raw)
    stages_raw = raw.pop("stages", None)
    if not isinstance(stages_raw, list) or not stages_raw:
        raise ConfigError(f"{source}: 'stages' must be a non-empty list of {{stage_name: {{...}}}} entries")
    description = raw.get("task") if isinstance(raw.get("task"), dict) else None
    if description is not None:
        raw["task"] = _describe_user_task(description, str(raw.get("model", "minilm-l6")), source, data_root)
        raw.setdefault("data", str(description.get("files", {}).get("train", "")))
    try:
        recipe = Recipe(**raw)
    except ValidationError as e:
        raise ConfigError(_format_validation(f"{source}: ", e).replace(": : ", ": ")) from None
    recipe.task_description = description
    first = next(iter(stages_raw[0])) if isinstance(stages_raw[0], dict) and len(stages_raw[0]) == 1 else None
    if first not in _MAKES_TASK_MODEL and task_head(recipe.model) is not None:
        stages_raw = [{"teacher": {}}, *stages_raw]  # the user's fine-tuned folder is the teacher
    top = {"model": recipe.model, "task": recipe.task, "data": recipe.data, "seed": recipe.seed}
    for i, entry in enumerate(stages_raw):
        where = f"{source}: stages[{i}]"
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ConfigError(f"{where}: expected a single-key mapping {{stage_name: {{options}}}}, got {entry!r}")
        ((name, kwargs),) = entry.items()
        if name not in STAGES:
            raise ConfigError(f"{where}: unknown stage {name!r}; expected one of {sorted(STAGES)}")
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, dict):
            raise ConfigError(
                f"{where}.{name}: options must be a mapping {{option: value}} (or empty), got "
                f"{type(kwargs).__name__} {_short(kwargs)}"
            )
        _check_keys(kwargs, f"{where}.{name}")
        kwargs = dict(kwargs)
        spec = STAGES[name]
        for key in spec.inherits:
            kwargs.setdefault(key, top[key])
        try:
            cfg = spec.config_cls(**kwargs)
        except ValidationError as e:
            raise ConfigError(_format_validation(f"{where}.{name}", e)) from None
        for_task = getattr(cfg, "for_task", None)  # defaults that depend on the task (a regression KD loss ...)
        if for_task is not None:
            cfg = for_task(_task_kind(recipe.task, source), set(kwargs))
        recipe.stages.append((name, cfg))
    return recipe


def _task_kind(task: str, source: str) -> str:
    """The kind of ``task`` (classification, regression, qa).

    Raises:
        ConfigError: unknown task (names the recipe file).
    """
    try:
        return get_task(task).kind
    except ConfigError as e:
        raise ConfigError(f"{source}: task: {e}") from None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_keys(mapping: dict[Any, Any], where: str) -> None:
    """Every key of a recipe mapping is a string (YAML also allows numbers, booleans, null, dates ... as keys)."""
    for bad in mapping:
        if isinstance(bad, str):
            continue
        raise ConfigError(f"{where}: key {_short(bad)} ({type(bad).__name__}) is not a string; expected option names")


def load_recipe(
    path: str | os.PathLike[str], overrides: list[str] | None = None, *, data_root: str | None = None
) -> Recipe:
    """Read a YAML recipe (:func:`slimformer.yamlio.load_yaml_file`: safe tags, bounded work) and apply overrides.

    Overrides address top-level keys (``seed=1``) or stage options by index (``stages.0.finetune.epochs=2``);
    values are parsed as YAML scalars.

    Raises:
        ConfigError: missing file, invalid YAML, bad override, or any validation error of :func:`parse_recipe`.
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: recipe file not found")
    raw = load_yaml_file(p)  # one-line ConfigError: a folder, invalid YAML, alias bombs, deep nesting, duplicate keys
    for ov in overrides or []:
        _apply_override(raw, ov, str(p))
    return parse_recipe(raw, str(p), data_root=data_root)


def _apply_override(raw: Any, override: str, source: str) -> None:
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected key=value")
    key, value = override.split("=", 1)
    parts = key.split(".")
    node = raw
    parsed = load_yaml(value, f"{source}: override {override!r}")
    try:
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        last = parts[-1]
        if isinstance(node, list):
            node[int(last)] = parsed
        else:
            node[last] = parsed
    except (KeyError, IndexError, ValueError, TypeError, AttributeError):
        raise ConfigError(f"{source}: override {override!r} does not address a recipe key") from None


def _config_hash(name: str, cfg: StageConfig) -> str:
    """Identity of a stage's config for resuming: :func:`~slimformer.config.identity_dump` (every field except the
    run-control ones and the unset identity-when-set ones)."""
    payload = json.dumps([name, identity_dump(cfg)], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _legacy_hash(name: str, cfg: StageConfig) -> str:
    """The hash an earlier release recorded when some of today's run-control fields were still part of a stage's
    identity (``finetune``'s ``save_steps`` / ``save_total_limit``, made run-control in 0.1.0 for consistency with
    the other training stages): the identity plus those two fields (:func:`~slimformer.config.legacy_identity`; a
    field made run-control since was in no identity). Accepted for resuming, so existing run
    folders are not retrained; a new record is written with :func:`_config_hash` when the stage next runs."""
    payload = json.dumps([name, legacy_identity(cfg)], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _stage_position(recipe: Recipe, stage: str) -> int:
    """0-based position of ``stage`` (a name, first occurrence, or an index) in ``recipe``.

    Raises:
        ConfigError: no such stage (names the recipe's stages).
    """
    names = [name for name, _ in recipe.stages]
    if stage.isdigit() and int(stage) < len(names):
        return int(stage)
    if stage in names:
        return names.index(stage)
    listed = ", ".join(f"{i}-{n}" for i, n in enumerate(names))
    raise ConfigError(f"rerun from {stage!r}: recipe {recipe.name!r} has no such stage (stages: {listed})")


def validate_plan(recipe: Recipe, *, data_root: str | None = None, skip: int = 0) -> PlanState:
    """Check the whole recipe before its first stage runs: every stage gets what it needs from the stages before it,
    and each stage's ``check`` (:class:`~slimformer.stages.StageSpec`) accepts its config against the task, its head,
    the data files and the earlier stages. Reads configs and file headers only: seconds, not a training.

    Args:
        skip: the first ``skip`` stages are done already (resumed): their outputs count, their checks do not run
            (their data may be gone).

    Returns:
        The :class:`~slimformer.stages.PlanState` after the last stage.

    Raises:
        ConfigError, DataError: naming the stage (``stages[<i>].<name>``), the key and what was expected.
    """
    state = PlanState(recipe=recipe, task=get_task(recipe.task), data_root=data_root)
    for i, (name, cfg) in enumerate(recipe.stages):
        spec = STAGES[name]
        where = f"recipe {recipe.name!r}: stages[{i}].{name}"
        if i >= skip:
            for key in spec.needs:
                if key not in state.available:
                    made = " or ".join(repr(p) for p in state.producers(key))
                    after = f" (the model of {state.quantized_by!r} is quantized)" if state.quantized_by else ""
                    raise ConfigError(f"{where}: needs {key} from an earlier {made} stage{after}")
        state.added = set(spec.produces)  # the check may withdraw keys its config does not produce
        if i >= skip:
            try:
                if spec.trains and isinstance(getattr(cfg, "batch_size", None), int):
                    dist.per_process_batch(cfg.batch_size)  # several processes split the global batch evenly
                if spec.check is not None:
                    spec.check(state, cfg)
            except SlimformerError as e:
                raise type(e)(f"{where}: {e}") from None
        state.available.update(state.added)
        if spec.produces_model:
            state.quantized_by = name if spec.quantized_output else None
        state.stages.append(name)
    return state


def plan_rows(recipe: Recipe, done: list[dict[str, Any]], first_rerun: int | None = None) -> list[dict[str, Any]]:
    """The resolved plan ``--dry-run`` prints: per stage, whether it is resumed or runs, and its full config."""
    rows, resuming = [], True
    for i, (name, cfg) in enumerate(recipe.stages):
        if first_rerun is not None and i >= first_rerun:
            resuming = False
        resuming = resuming and _is_done(done, i, name, cfg)
        rows.append(
            {
                "stage": f"{i}-{name}",
                "action": "done earlier: skipped (resume)" if resuming else "runs",
                "needs": list(STAGES[name].needs),
                "produces": list(STAGES[name].produces),
                "config": cfg.model_dump(mode="json"),
            }
        )
    return rows


def _checked_plan(
    recipe: Recipe, done: list[dict[str, Any]], first_rerun: int | None, data_root: str | None
) -> tuple[list[dict[str, Any]], int, list[str]]:
    """:func:`plan_rows` (with each stage's ``notes``), the number of leading stages resumed, and the notes as lines
    (``stages[<i>].<name>: ...``), after :func:`validate_plan` of the rest."""
    rows = plan_rows(recipe, done, first_rerun)
    skipped = sum(row["action"] != "runs" for row in rows)  # the leading stages done earlier with the same config
    state = validate_plan(recipe, data_root=data_root, skip=skipped)
    lines = []
    for i, message in state.notes:
        rows[i].setdefault("notes", []).append(message)
        lines.append(f"stages[{i}].{recipe.stages[i][0]}: {message}")
    return rows, skipped, lines


def plan_recipe(
    recipe: Recipe,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    data_root: str | None = None,
    restart: bool = False,
    rerun_from: str | None = None,
) -> list[dict[str, Any]]:
    """What :func:`run_recipe` would do with the same arguments, checked (:func:`validate_plan`) but not run: one
    row per stage (:func:`plan_rows`). Writes nothing (``compress --dry-run``).

    Raises:
        ConfigError, DataError: a stage that cannot work (as :func:`run_recipe` would raise before its first stage).
    """
    first_rerun = None if rerun_from is None else _stage_position(recipe, rerun_from)
    state_path = Path(run_dir or recipe.run_dir or Path("runs") / recipe.name) / "state.json"
    done = _read_state(state_path) if state_path.is_file() and not restart else []
    return _checked_plan(recipe, done, first_rerun, data_root)[0]


def _is_done(done: list[dict[str, Any]], i: int, name: str, cfg: StageConfig) -> bool:
    prev = done[i] if i < len(done) else None
    return (
        isinstance(prev, dict)
        and prev.get("name") == name
        and prev.get("hash") in {_config_hash(name, cfg), _legacy_hash(name, cfg)}
        and prev.get("status") == "done"
    )


def run_recipe(
    recipe: Recipe,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    data_root: str | None = None,
    restart: bool = False,
    rerun_from: str | None = None,
    log: Callable[[str], None] = print,
) -> RunContext:
    """Run every stage of ``recipe`` into the run folder, resuming after the last completed stage.

    A stage is skipped when ``state.json`` records it as done with an identical config and every earlier
    stage was skipped too; otherwise it runs, and the record of later stages is dropped (they rerun).
    ``state.json`` is rewritten atomically after each stage, so an interruption loses at most the running stage.
    ``recipe.resolved.yaml`` is written with it: both describe the stages done, and neither changes before a stage
    has finished (a stage that refuses, e.g. an impossible budget, leaves the records of the run folder as they were).

    Args:
        restart: rerun every stage.
        rerun_from: rerun this stage and every later one, reusing the earlier ones: a stage name (its first
            occurrence) or a 0-based stage index. For artefacts an upgrade of slimformer would make differently
            (e.g. a faster exported graph) while the configs, hence the resume records, are unchanged.

    Returns:
        The :class:`RunContext` with every stage's outputs.

    Raises:
        ConfigError: ``rerun_from`` names no stage of the recipe; the run folder is a file or cannot be written;
            its ``state.json`` is not readable (without ``restart``).
    """
    first_rerun = len(recipe.stages) if rerun_from is None else _stage_position(recipe, rerun_from)
    rd = check_output_path(run_dir or recipe.run_dir or Path("runs") / recipe.name, option="run folder")
    resolved_path, state_path = rd / "recipe.resolved.yaml", rd / "state.json"
    resolved = yaml.safe_dump(recipe.to_yaml_dict(), sort_keys=False)
    dist.init()
    # several processes: every rank takes the main process's reading of state.json (it may write it any moment)
    done: list[dict[str, Any]] = dist.on_main(
        lambda: _read_state(state_path) if state_path.is_file() and not restart else []
    )

    def write_records(stages: list[dict[str, Any]]) -> None:
        # The records change together, and only once a stage has finished (or a record is migrated): a stage that
        # refuses to run (an impossible budget, bad data) leaves the run folder's records as they were.
        if not dist.is_main():  # several processes: one writer (slimformer.dist)
            return
        atomic_write_text(resolved_path, resolved)
        atomic_write_json(state_path, {"recipe": recipe.name, "stages": stages})

    ctx = RunContext(run_dir=rd, recipe=recipe, data_root=data_root)
    _, skipped, notes = _checked_plan(recipe, done, first_rerun, data_root)  # a stage that cannot work fails now
    rd.mkdir(parents=True, exist_ok=True)  # only once the plan holds: a refused recipe leaves no run folder
    if not dist.is_main():
        log = _quiet
    for line in notes:
        log(f"note: {line}")
    for i, (name, cfg) in enumerate(recipe.stages):
        h = _config_hash(name, cfg)
        if i < skipped:
            prev = done[i]
            ctx.record(name, prev.get("outputs", {}))
            if prev["hash"] != h:  # a legacy record: store today's identity, so run-control changes stay free
                prev["hash"] = h
                write_records(done)
            log(f"[{i + 1}/{len(recipe.stages)}] {name}: done earlier, skipped (resume)")
            continue
        done = done[:i]
        log(f"[{i + 1}/{len(recipe.stages)}] {name}: running")
        spec = STAGES[name]
        if spec.trains:  # every process trains (data-parallel); the stage writes its folder on the main one
            outputs = {**spec.handler(ctx, cfg), "processes": dist.world_size()}
        else:  # exports, searches, evaluations, benchmarks, reports: once, on the main process
            outputs = dist.on_main(lambda spec=spec, cfg=cfg: spec.handler(ctx, cfg))
        ctx.record(name, outputs)
        kill_point(f"{name}:before-state")  # test hook (slimformer._faults): outputs written, state.json not yet
        done.append({"name": name, "hash": h, "status": "done", "outputs": outputs})
        write_records(done)
    if not resolved_path.is_file() and dist.is_main():  # every stage was done earlier, by a run without one
        atomic_write_text(resolved_path, resolved)
    dist.barrier()
    return ctx


def _quiet(message: str) -> None:
    """The log of a non-main process: the main one reports progress."""


def _read_state(path: Path) -> list[dict[str, Any]]:
    """The stage records of a run folder's ``state.json``.

    Raises:
        ConfigError: the file is not valid JSON or not ``{"stages": [...]}`` (it is left as it is).
    """
    try:
        state = read_json(path)
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"{path}: not valid JSON ({' '.join(str(e).split())[:120]}); fix it, or rerun with --restart"
        ) from None
    stages = state.get("stages", []) if isinstance(state, dict) else None
    if not isinstance(stages, list):
        raise ConfigError(f"{path}: expected {{'recipe': ..., 'stages': [...]}}; fix it, or rerun with --restart")
    return stages
