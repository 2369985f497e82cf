"""The ``search`` recipe stage: LAT evolutionary search on a held-out split, then a budget pick.

Recipe use (after ``length``; searches ``ctx.latest("model_dir")``, the LengthDrop-trained model)::

    - search: {cost: flops, search_examples: 2000, iterations: 30, max_loss: 1.0}
    - export: {int8: dynamic}      # exports the chosen configuration (the graph's default length inputs)

What it does (Kim & Cho 2021 §4 / QuaLA-MiniLM; METHODS.md §1(b) "Evolutionary search", §1(d), §2(f)):

1. Scores genes with :func:`~slimformer.length.evaluate.metric_fn` (PyTorch fp32, :func:`forward_with_config`)
   on the *search split* (:mod:`slimformer.length.search_split`: training examples no capped training stage
   used), never on the dev split that final figures use (pitfall 9). Default: 2,000 examples (a 95% interval of
   an accuracy near 0.9 is then about ±1.3 points wide; 500 gave ±2.6), for SST-2 only sentences of at least 10
   words (:data:`DEFAULT_MIN_WORDS`). Genes are applied as per-row ratios (``gene_form: ratios``), the form the
   ``length`` stage trains, and the smallest gene is the length stage's smallest sub-model
   (``length_drop_ratio`` defaults to the ``length_drop_ratio_bound`` recorded in the model).
2. Cost ``flops``: :func:`~slimformer.length.flops.cost_fn` (FLOPs = 2·MACs, batch 1, ``seq_len`` real
   tokens); or ``latency``: median ms of the ONNX Runtime int8 length graph at batch 1 on ``seq_len`` real
   tokens, the configuration fed as graph inputs. ``min_cost``/``max_cost`` bound the feasible range
   (default: the smallest LengthDrop gene .. the full model). The store file ``search.json`` in the stage
   folder caches every measurement, so a rerun (e.g. another budget) replays the search without
   re-evaluating; a store of other weights / split / cost is refused (one-line ``ConfigError``).
3. Measures, for every front point, both FLOPs and int8 latency (``measure_latency``), writes ``front.json``.
4. Picks one configuration: ``max_loss`` (points; 1.0 point = 0.01 accuracy or 1 F1 point) = the cheapest
   point (in the search's cost) within that loss of the reference on the search split (``loss_reference:
   full`` = the full-length searched model, ``teacher`` = the fp32 teacher), judged on the lower end of the 95%
   bootstrap interval of its difference to the reference (:func:`~slimformer.length.selection.add_intervals`:
   every front point carries its intervals in ``front.json``); ``budget_ms`` = the most accurate
   point whose measured int8 latency fits; ``max_flops`` likewise in FLOPs. Without any, ``max_loss: 1.0``.
   The pick is saved as ``model/`` (the weights plus ``length_config.json`` holding it), which becomes the
   recipe's ``model_dir``: the next ``export`` stage writes one graph whose default inputs are the pick.

An impossible budget (below the smallest configuration) is a one-line ``ConfigError``: checked before the
search when the budget is in the search's unit, otherwise after it; the store keeps every measurement.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from slimformer.bench.machine import physical_cores
from slimformer.checkpoint import load_model
from slimformer.config import IDENTITY_WHEN_SET, RUN_CONTROL, StageConfig, resolve_data_path
from slimformer.errors import ConfigError
from slimformer.export.length_ort import LengthOrtModel, full_length_batch, latency_ms
from slimformer.length import selection as rep
from slimformer.length.evaluate import evaluate_config, evaluate_config_scores
from slimformer.length.flops import cost_fn
from slimformer.length.genes import initial_population
from slimformer.length.search import evolutionary_search
from slimformer.length.search_split import DEFAULT_MIN_WORDS, SearchSplit, load_search_split
from slimformer.models import HeadKind
from slimformer.stages._length_artifacts import copy_model_with_config, export_length_int8, model_fingerprint
from slimformer.stages.base import PlanState, RunContext, register_stage, training_stages
from slimformer.tasks import get_task
from slimformer.tasks.data import load_eval_set

if TYPE_CHECKING:
    from slimformer.recipe import Recipe

__all__ = ["LengthBudget", "SearchStageConfig", "apply_budget", "run_search"]

_BUDGET_KEYS = ("max_loss", "budget_ms", "max_flops")
#: Stages that train the searched model itself (not its teacher): the search split should be held out from them.
STUDENT_STAGES = ("distill", "length")

#: The LengthDrop bound of the smallest gene when neither the search nor the model's ``length`` record sets one.
LENGTH_DROP_RATIO = 0.2


class LengthBudget(BaseModel):
    """Which configuration to pick from the front; at most one field set (the CLI's ``--max-loss`` ...)."""

    model_config = ConfigDict(extra="forbid")

    max_loss: float | None = Field(None, ge=0, description="largest metric loss in points (1.0 = 0.01 accuracy)")
    budget_ms: float | None = Field(None, gt=0, description="int8 ONNX Runtime latency budget, ms at batch 1")
    max_flops: float | None = Field(None, gt=0, description="FLOPs budget (2·MACs, batch 1, seq_len tokens)")

    @model_validator(mode="after")
    def _at_most_one(self) -> LengthBudget:
        given = [k for k in _BUDGET_KEYS if getattr(self, k) is not None]
        if len(given) > 1:
            raise ConfigError(f"give at most one of max_loss, budget_ms, max_flops; got {given}")
        return self


class SearchStageConfig(LengthBudget, StageConfig):
    """Evolutionary length search (LAT defaults, METHODS.md §1(c)) and the budget pick."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    task: str = Field(..., description="task name (the model's)")
    data: str = Field(..., description="task data folder (GLUE) or SQuAD json; relative to the data root")
    seed: int = Field(42, description="seed of the search split draw and of the search")
    cost: Literal["flops", "latency"] = Field("flops", description="search cost: FLOPs or int8 ORT ms (batch 1)")
    seq_len: int | None = Field(None, gt=1, description="N, tokens the cost refers to (default: the model's)")
    search_examples: int = Field(2000, ge=1, description="examples of the held-out search split")
    search_min_words: int | None = Field(
        None,
        ge=0,
        description="draw the search split from training examples of at least this many words; null: the task's "
        "default (10 for sst2, whose training file is mostly short phrases and whose dev set is whole sentences; "
        "all examples for other tasks); 0: all examples",
        json_schema_extra={IDENTITY_WHEN_SET: True},
    )
    search_split: Literal["train", "eval"] = Field(
        "train",
        description="train: held-out training examples (never the split figures are reported on); eval: the task's "
        "eval split, for tasks whose figures are reported on a test split of their own (a user task with a test "
        "file) and a teacher that may have trained on every training example",
        json_schema_extra={IDENTITY_WHEN_SET: True},
    )
    eval_batch_size: int = Field(64, ge=1)
    population: int = Field(20, ge=0)
    mutation_size: int = Field(30, ge=0)
    crossover_size: int = Field(30, ge=0)
    mutation_prob: float = Field(0.5, ge=0, le=1)
    iterations: int = Field(30, ge=0)
    parents: int | None = Field(None, ge=1, description="None: breed from the whole front (LAT)")
    min_length: int = Field(2, ge=1, description="fewest tokens a layer keeps")
    length_drop_ratio: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="smallest gene: this ratio dropped per layer; null: the length stage's length_drop_ratio_bound "
        "recorded in the model (its smallest sub-model), else 0.2",
    )
    gene_form: Literal["lengths", "ratios"] = Field(
        "ratios",
        description="apply genes as ratios of each input's length (what the length stage trains) or as absolute "
        "lengths (LAT)",
    )
    min_cost: float | None = Field(None, ge=0, description="feasible cost lower bound (FLOPs or ms)")
    max_cost: float | None = Field(None, gt=0, description="feasible cost upper bound (FLOPs or ms)")
    int8: Literal["dynamic", "static"] = Field("dynamic", description="int8 PTQ of the graph that is timed")
    calibration_examples: int = Field(256, ge=1, description="static int8: calibration examples")
    measure_latency: bool = Field(True, description="time every front point (int8 ORT, batch 1)")
    latency_warmup: int = Field(3, ge=0)
    latency_iters: int = Field(20, ge=1)
    threads: int | None = Field(None, ge=1, description="torch and ORT threads (default: physical cores)")
    loss_reference: Literal["full", "teacher"] = Field("full", description="max_loss relative to this model")
    teacher: str | None = Field(None, description="teacher folder (default: the one the distill stage recorded)")
    progress: bool = Field(True, description="progress bar over iterations")
    device: Literal["auto", "cpu"] = Field(
        "auto",
        description="where PyTorch scores configurations: auto = the CUDA GPU when there is one (fp32 either way; "
        "the timed int8 graphs always run on the CPU)",
        json_schema_extra={RUN_CONTROL: True},
    )

    @model_validator(mode="after")
    def _consistent(self) -> SearchStageConfig:
        if self.budget_ms is not None and self.cost != "latency" and not self.measure_latency:
            raise ConfigError("budget_ms needs measured latencies: set cost: latency or measure_latency: true")
        if self.min_cost is not None and self.max_cost is not None and self.min_cost > self.max_cost:
            raise ConfigError(f"min_cost {self.min_cost} is above max_cost {self.max_cost}")
        return self

    def budget(self) -> LengthBudget:
        """The pick this config asks for (``max_loss: 1.0`` when none is set)."""
        given = {k: getattr(self, k) for k in _BUDGET_KEYS if getattr(self, k) is not None}
        return LengthBudget(**(given or {"max_loss": 1.0}))

    def resolved(self, task: str, applied: list[dict[str, Any]]) -> SearchStageConfig:
        """A copy with the defaults that depend on the task and the model filled in.

        ``search_min_words``: unset -> :data:`DEFAULT_MIN_WORDS` of ``task`` (else ``None``, every example);
        0 -> ``None``. ``length_drop_ratio``: unset -> ``length_drop_ratio_bound`` of the model's latest ``length``
        record in ``applied`` (``slimformer.json``), else :data:`LENGTH_DROP_RATIO`.
        """
        words = DEFAULT_MIN_WORDS.get(task) if self.search_min_words is None else self.search_min_words
        ratio = self.length_drop_ratio
        if ratio is None:
            length = next((r for r in reversed(applied) if r.get("stage") == "length"), {})
            ratio = length.get("length_drop_ratio_bound", LENGTH_DROP_RATIO)
        return self.model_copy(update={"search_min_words": words or None, "length_drop_ratio": float(ratio)})


def apply_budget(recipe: Recipe, budget: LengthBudget) -> Recipe:
    """``recipe`` with every ``search`` stage's pick replaced by ``budget`` (the CLI's ``--max-loss`` ...).

    Raises:
        ConfigError: the recipe has no ``search`` stage, or the budget conflicts with a stage's options.
    """
    if not any(name == "search" for name, _ in recipe.stages):
        raise ConfigError(f"--max-loss/--budget-ms/--max-flops need a 'search' stage; recipe {recipe.name} has none")
    update = {k: getattr(budget, k) for k in _BUDGET_KEYS}
    stages = []
    for name, cfg in recipe.stages:
        if name == "search":
            try:
                cfg = SearchStageConfig.model_validate({**cfg.model_dump(), **update})
            except ValidationError as e:
                raise ConfigError(f"search: {e.errors()[0]['msg']}") from None
        stages.append((name, cfg))
    return recipe.model_copy(update={"stages": stages})


def run_search(
    config: SearchStageConfig, model_dir: str | Path, out: str | Path, *, data_root: str | None = None
) -> dict[str, Any]:
    """Search length configurations of ``model_dir``, pick one, save it as ``out/model``; see the module notes.

    Returns:
        ``{"model_dir" (the pick), "searched_model_dir", "front_json", "length_config", "selected",
        "search_onnx_int8" (or None), "store"}``.

    Raises:
        ConfigError: another task, no task head, an impossible budget or loss, a store of another search.
        DataError, ModelLoadError, ExportError: missing data, bad model folder, failed int8 export.
    """
    import torch

    out, model_dir = Path(out), Path(model_dir)
    loaded = load_model(model_dir)
    model, tok, meta = loaded.model, loaded.tokenizer, loaded.meta
    spec = get_task(config.task)
    if meta.task and meta.task != spec.name:
        raise ConfigError(f"search: the model in {model_dir} was trained on {meta.task!r}, not {spec.name!r}")
    if model.head is HeadKind.NONE:
        raise ConfigError(f"search: the model in {model_dir} has no task head to score configurations with")
    config = config.resolved(spec.name, meta.applied)
    threads = config.threads or physical_cores()
    torch.set_num_threads(threads)
    if config.device == "auto" and torch.cuda.is_available():
        model.to("cuda")  # scoring only: the weights saved with the pick are copied from model_dir, not from here
    n, layers = config.seq_len or meta.max_seq_length or spec.max_seq_length, model.num_layers
    budget = config.budget()
    flops_of = cost_fn(model, n, unit="flops")
    full, smallest = initial_population(
        0, num_layers=layers, max_length=n, min_length=config.min_length, length_drop_ratio=config.length_drop_ratio
    )[:2]
    if budget.max_flops is not None and config.min_cost is None:
        rep.check_budget(budget.max_flops, flops_of(smallest), smallest, "FLOPs")  # before any evaluation

    session, int8_path = None, None
    if config.cost == "latency" or config.measure_latency:
        _, int8_path = export_length_int8(
            model_dir,
            out / "onnx",
            mode=config.int8,
            calibration_examples=config.calibration_examples,
            data_root=data_root,
        )
        session = LengthOrtModel(int8_path, None, intra_op_num_threads=threads)
        timing_batch = full_length_batch(model.config.vocab_size, n, 1, seed=config.seed)

        def ms_of(gene: tuple[int, ...]) -> float:
            session.set_config(rep.gene_config(gene, config.gene_form, n))
            return latency_ms(session, timing_batch, warmup=config.latency_warmup, iters=config.latency_iters)

        if budget.budget_ms is not None and config.min_cost is None:
            rep.check_budget(budget.budget_ms, ms_of(smallest), smallest, "ms")

    ft = meta.origin() or {}
    if config.search_split == "eval":
        if spec.files is None or spec.files.test is None:
            raise ConfigError(
                "search_split: eval needs a task with a test file to report on (a user task with --test); the "
                "eval split of a preset is where its figures are reported, so the search never picks on it"
            )
        eval_data = load_eval_set(
            spec.name,
            resolve_data_path(config.data, data_root),
            tok,
            max_seq_length=meta.max_seq_length or spec.max_seq_length,
            max_examples=config.search_examples,
        )
        split = SearchSplit(
            data=eval_data,
            indices=list(range(len(eval_data.examples))),
            pool=len(eval_data.examples),
            source=f"eval ({spec.files.eval_name}); figures are reported on the test file",
        )
    else:
        split = load_search_split(
            spec.name,
            resolve_data_path(config.data, data_root),
            tok,
            records=meta.applied,
            training_stages=training_stages(),
            num_examples=config.search_examples,
            seed=config.seed,
            max_seq_length=meta.max_seq_length or spec.max_seq_length,
            squad_split=ft.get("squad_split", "dev-article-split"),
            doc_stride=ft.get("doc_stride", 128),
            min_words=config.search_min_words,
        )

    def metric(gene: tuple[int, ...]) -> float:
        cfg = rep.gene_config(gene, config.gene_form, n)
        kw = {"batch_size": config.eval_batch_size, "pad_token_id": tok.pad_token_id or 0}
        return evaluate_config(model, split.data, cfg, **kw)["main"]

    if config.cost == "latency":
        cost, cost_name = ms_of, f"ort-int8-{config.int8}-ms-bs1-N{n}-{threads}threads"
    else:
        cost, cost_name = flops_of, f"FLOPs-bs1-N{n}"
    # unset sides default to the search's own (cached) costs of the smallest and the full gene: measuring them here
    # again would give other values for a noisy latency, and bounds that exclude every measured gene
    bounds = None if config.min_cost is None and config.max_cost is None else (config.min_cost, config.max_cost)
    if config.min_cost is not None and config.max_cost is not None and config.min_cost > config.max_cost:
        raise ConfigError(f"search: min_cost {config.min_cost:.6g} is above max_cost {config.max_cost:.6g}")
    min_words = f",min_words={config.search_min_words}" if config.search_min_words else ""
    result = evolutionary_search(
        metric,
        cost,
        num_layers=layers,
        max_length=n,
        min_length=config.min_length,
        length_drop_ratio=config.length_drop_ratio,
        population=config.population,
        parents=config.parents,
        mutation_size=config.mutation_size,
        crossover_size=config.crossover_size,
        mutation_prob=config.mutation_prob,
        iterations=config.iterations,
        cost_bounds=bounds,
        seed=config.seed,
        store=out / "search.json",
        model_id=f"{model_dir.resolve()}#{model_fingerprint(model_dir)}",
        metric_name=f"{spec.main_metric}@{config.search_split if config.search_split == 'eval' else 'search'}-split"
        f"(n={config.search_examples},seed={config.seed}{min_words})"
        f"/{config.gene_form}@N={n}",
        cost_name=cost_name,
        progress=config.progress,
    )
    points = rep.front_points(result, config.cost, flops_of, ms_of if session is not None else None)

    per_example: dict[tuple[int, ...], Any] = {}

    def scores_of(gene: tuple[int, ...]) -> Any:  # per-example results for the intervals: one pass per front point
        if gene not in per_example:
            cfg = rep.gene_config(gene, config.gene_form, n)
            kw = {"batch_size": config.eval_batch_size, "pad_token_id": tok.pad_token_id or 0}
            per_example[gene] = evaluate_config_scores(model, split.data, cfg, **kw)[1]
        return per_example[gene]

    reference, reference_scores = rep.reference_metric(config, result, split, meta, data_root, scores_of=scores_of)
    intervals = rep.add_intervals(points, scores_of, reference_scores, reference["metric"], seed=config.seed)
    chosen = rep.pick(points, budget, config.cost, reference["metric"], spec.name)
    picked = rep.gene_config(chosen["length_config"], config.gene_form, n)
    chosen["saved_config"] = {k: v for k, v in picked.to_dict().items() if k in ("lengths", "ratios")}
    record = {"stage": "search", "budget": budget.model_dump(), "gene_form": config.gene_form, **chosen}
    picked_dir = copy_model_with_config(model_dir, out / "model", picked, record)
    front_json = rep.write_front(
        out / "front.json",
        config=config,
        result=result,
        points=points,
        chosen=chosen,
        budget=budget,
        reference=reference,
        split=split,
        seq_len=n,
        cost_name=cost_name,
        model_dir=model_dir,
        intervals=intervals,
    )
    return {
        "model_dir": str(picked_dir),
        "searched_model_dir": str(model_dir),
        "front_json": str(front_json),
        "length_config": list(chosen["length_config"]),
        "selected": chosen,
        "search_onnx_int8": str(int8_path) if int8_path else None,
        "store": str(out / "search.json"),
    }


def _check(plan: PlanState, cfg: SearchStageConfig) -> None:
    """Plan check: the files the search split and the report read are there (``needs`` an earlier model_dir), and
    an earlier ``length`` / ``distill`` stage's ``hold_out`` leaves the search at least ``search_examples`` examples;
    a note when one of them trains on the whole training file the split is drawn from."""
    plan.check_data(cfg, "train", "dev")
    if cfg.search_split != "train":
        return
    for name, c in plan.recipe.stages[: len(plan.stages)]:  # the earlier stages that train the searched model
        if name not in STUDENT_STAGES:
            continue
        held = getattr(c, "hold_out", None)
        if held is not None and cfg.search_examples > held:
            raise ConfigError(
                f"search_examples={cfg.search_examples} but the {name} stage holds out only {held} training "
                f"examples (hold_out); raise {name}.hold_out or lower search_examples"
            )
        if held is None and c.max_train_examples is None:  # trained on the whole file the split is drawn from
            plan.note(
                f"the search split is drawn from the training file, and the {name!r} stage trains on all of it (no "
                f"max_train_examples): max_loss is then judged on examples the searched model was trained on; "
                f"{name}.hold_out: {cfg.search_examples} keeps them out (docs/length-search.md)"
            )


@register_stage(
    "search",
    SearchStageConfig,
    inherits=("task", "data", "seed"),
    produces_model=True,
    needs=("model_dir",),
    produces=("front_json", "length_config"),
    check=_check,
)
def _search(ctx: RunContext, cfg: SearchStageConfig) -> dict[str, Any]:
    model_dir = ctx.latest("model_dir")
    if model_dir is None:
        raise ConfigError("stage 'search' needs a model_dir from an earlier 'length' stage in the recipe")
    outputs = run_search(cfg, model_dir, ctx.stage_dir("search"), data_root=ctx.data_root)
    return {**outputs, "task": cfg.task, "data": cfg.data}
