"""LengthDrop vs truncation at matched FLOPs budgets, with paired tests (issue 14).

    SLIMFORMER_DATA=../shared/data python benchmarks/lengthdrop_vs_truncation.py            # every run pair found
    python benchmarks/lengthdrop_vs_truncation.py --pair sst2 l4 42 runs/quala-sst2-l4 runs/quala-sst2-l4-truncation

Input: pairs of run folders of the variant recipes (docs/quala.md, "Variants"): a LengthDrop run
(``recipes/quala-<task>-<variant>.yaml``) and its truncation twin (``...-truncation.yaml``: the same search on the
model without LengthDrop training), per task, variant and seed. Without ``--pair`` the runs are found by name under
``--runs``: ``quala-<task>-<variant>[-seed<S>]`` and ``quala-<task>-<variant>-truncation[-seed<S>]`` (no suffix:
seed 42), for the variants ``la-full``, ``l4``, ``l3b`` and the original 3-layer recipes (``quala-<task>``, variant
``l3``); only pairs where both runs finished their ``search`` stage are compared.

For each pair:

1. Both searches' fronts (``search/front.json``: every front point and the full model, each with its FLOPs and its
   metric on the *search split*). The two must have searched alike (task, seq_len, gene form, search split size,
   seed and words): otherwise their FLOPs and picks are not comparable (one-line error).
2. ``--budgets`` (default 5) FLOPs budgets spread evenly over the FLOPs range both fronts cover (from the larger of
   the two cheapest points to the smaller of the two full models). For each budget and model the configuration with
   the best *search-split* metric among the front points within the budget is picked (never on dev).
3. Each picked configuration is scored on the dev split per example (``--runtime int8``: the search's int8 ONNX
   Runtime length graph, configuration fed, what is deployed; ``pytorch``: fp32 eager), and the two picks of a
   budget are compared with a paired test on the same examples: McNemar (accuracy), paired bootstrap of the mean
   difference (SQuAD F1 per question), or a paired bootstrap of the metric difference (metrics that are not means).

Writes ``benchmarks/results/lengthdrop-vs-truncation.json`` (``rows``: task, variant, seed, budget, flops,
lengthdrop_metric, truncation_metric, p_value, test, the two configurations and their FLOPs; ``summary`` per task and
variant: at how many budgets LengthDrop is better / worse with p < 0.05; ``machine``) and one figure per task and
x-axis under ``benchmarks/plots/``: ``lengthdrop-vs-truncation-<task>-flops.png`` and ``...-latency.png`` (dev metric
of every variant's front from its ``length_benchmark`` report when present, else of the budget picks; truncation
dashed; the fp32 and int8 teachers as horizontal lines).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimformer.bench.machine import machine_info, physical_cores
from slimformer.bench.stats import paired_test as stats_paired_test
from slimformer.checkpoint import load_model, read_meta
from slimformer.config import resolve_data_path
from slimformer.errors import ConfigError
from slimformer.evaluate import ExampleScores, evaluate_predictor_scores
from slimformer.io import atomic_write_bytes, atomic_write_json, read_json
from slimformer.length.evaluate import evaluate_config_scores
from slimformer.length.search_split import indices_digest, search_split_indices
from slimformer.length.selection import gene_config
from slimformer.stages import training_stages
from slimformer.tasks.data import load_eval_set

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "lengthdrop-vs-truncation.json"
PLOTS = ROOT / "benchmarks" / "plots"
#: variant names of the recipes (docs/quala.md, "Variants"): recipe suffix -> what it is
VARIANTS = {
    "la-full": "full depth (6 layers), no layer cut",
    "l4": "4-layer student, teacher layers [0, 2, 3, 5]",
    "l3b": "3-layer student, teacher layers [0, 2, 5]",
    "l3": "3-layer student, teacher layers [1, 3, 5] (recipes/quala-<task>.yaml)",
}
ALPHA = 0.05
#: front.json fields that must agree between the two searches of a pair
SAME_SEARCH = ("task", "metric", "seq_len", "gene_form")
SAME_SPLIT = ("split", "examples", "pool", "min_words")


@dataclass
class SearchedRun:
    """What the driver reads from one run folder: its search front and how to score a configuration on dev."""

    run_dir: Path
    front: dict[str, Any]
    model_dir: Path
    onnx_int8: str | None
    data: str
    report: dict[str, Any] | None = None
    _cache: dict[tuple[int, ...], ExampleScores] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str]) -> SearchedRun:
        """Read ``state.json`` (the ``search`` stage's outputs), ``front.json`` and ``report.json`` if present.

        Raises:
            ConfigError: no ``state.json`` or no finished ``search`` stage in it.
        """
        run_dir = Path(run_dir)
        state_path = run_dir / "state.json"
        if not state_path.is_file():
            raise ConfigError(f"{run_dir}: no state.json (not a finished slimformer run folder)")
        stages = read_json(state_path).get("stages", [])
        search = next((s.get("outputs", {}) for s in stages if s.get("name") == "search"), None)
        if search is None or "front_json" not in search:
            raise ConfigError(f"{state_path}: no finished 'search' stage (run the recipe up to its search first)")
        report_path = run_dir / "report.json"
        return cls(
            run_dir=run_dir,
            front=read_json(search["front_json"]),
            model_dir=Path(search["searched_model_dir"]),
            onnx_int8=search.get("search_onnx_int8"),
            data=search["data"],
            report=read_json(report_path) if report_path.is_file() else None,
        )

    def points(self) -> list[dict[str, Any]]:
        """Front points and the full model (each: ``length_config``, ``flops``, ``metric`` on the search split)."""
        return [*self.front["front"], self.front["full"]]


def split_indices(run: SearchedRun, data_root: str | None = None) -> list[int]:
    """The training-file indices ``run``'s search scored, its draw replayed (``search_split_indices``).

    The replay reads the searched model's ``applied`` records and the search's seed, size and word minimum, as
    ``load_search_split`` drew them (no tokenization: reading the training file only).

    Raises:
        ConfigError: the search scored the eval split (nothing to replay), or the replay's draw fails.
        DataError: the training file is missing.
    """
    split = run.front["search_split"]
    if not str(split.get("split", "")).startswith("search"):
        raise ConfigError(f"{run.run_dir}: its search scored {split.get('split')!r}, not a split of the training file")
    meta = read_meta(run.model_dir)
    return search_split_indices(
        run.front["task"],
        resolve_data_path(run.data, data_root),
        records=meta.applied,
        training_stages=training_stages(),
        num_examples=int(split["examples"]),
        seed=int(run.front["search"]["settings"]["seed"]),
        squad_split=(meta.origin() or {}).get("squad_split", "dev-article-split"),
        min_words=split.get("min_words"),
    )


def split_digest(run: SearchedRun, data_root: str | None = None) -> str:
    """SHA-256 of the training-file indices ``run``'s search scored (``indices_digest``).

    Read from ``front.json`` (``search_split.indices_sha256``); a front written before that field was recorded gets
    its draw replayed (:func:`split_indices`).

    Raises:
        ConfigError, DataError: as :func:`split_indices`.
    """
    recorded = run.front["search_split"].get("indices_sha256")
    return str(recorded) if recorded else indices_digest(split_indices(run, data_root))


def check_comparable(
    a: SearchedRun, b: SearchedRun, *, allow_pool_mismatch: bool = False, data_root: str | None = None
) -> None:
    """The two runs searched alike, so their FLOPs budgets and search-split picks can be matched.

    Search splits drawn from pools of different sizes are the same split when they hold the same examples
    (:func:`split_digest`): a LengthDrop stage with ``hold_out`` leaves only the split unseen, its truncation twin
    draws the same sample from the larger pool the hold-out came from. ``allow_pool_mismatch``: accept different
    pools even when the examples differ (same size, split and word minimum). A LengthDrop stage capped at
    ``max_train_examples`` draws its split from the training examples it did not see; a twin without that stage
    draws from all of them: each pick is still made on held-out training data, never on dev, but not on the same
    sentences (the rows record both pools).

    Raises:
        ConfigError: naming the first field that differs (the pools: when the examples differ too).
    """
    for key in SAME_SEARCH:
        if a.front.get(key) != b.front.get(key):
            raise ConfigError(
                f"{a.run_dir} and {b.run_dir} searched differently: {key} {a.front.get(key)!r} vs {b.front.get(key)!r}"
            )
    for key in SAME_SPLIT:
        x, y = a.front["search_split"].get(key), b.front["search_split"].get(key)
        if x == y or (key == "pool" and allow_pool_mismatch):
            continue
        if key == "pool" and split_digest(a, data_root) == split_digest(b, data_root):
            continue  # other pools, the same examples
        raise ConfigError(
            f"{a.run_dir} and {b.run_dir} searched on other splits: search_split.{key} {x!r} vs {y!r}"
            + (" (and other examples)" if key == "pool" else "")
        )
    sa, sb = a.front["search"]["settings"], b.front["search"]["settings"]
    for key in sorted(set(sa) | set(sb)):  # seed (split draw), smallest gene, cost bounds, population sizes, int8
        if sa.get(key) != sb.get(key):
            raise ConfigError(
                f"{a.run_dir} and {b.run_dir} searched with other settings: {key} {sa.get(key)!r} vs {sb.get(key)!r}"
            )


def matched_budgets(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]], k: int) -> list[float]:
    """``k`` FLOPs budgets spread evenly over the range both fronts cover.

    The range runs from the larger of the two cheapest points (both models have a configuration within every
    budget) to the smaller of the two most expensive ones. A single common point gives ``k`` equal budgets.

    Raises:
        ConfigError: ``k < 1``, or the fronts do not overlap in FLOPs.
    """
    if k < 1:
        raise ConfigError(f"--budgets must be at least 1, got {k}")
    lo = max(min(p["flops"] for p in a), min(p["flops"] for p in b))
    hi = min(max(p["flops"] for p in a), max(p["flops"] for p in b))
    if lo > hi:
        raise ConfigError(f"the two fronts share no FLOPs range (cheapest {lo:.4g} > costliest {hi:.4g})")
    return [float(x) for x in np.linspace(lo, hi, k)]


def best_within(points: Sequence[Mapping[str, Any]], budget: float) -> Mapping[str, Any]:
    """The point with the best search-split metric among those within ``budget`` FLOPs (ties: the cheaper).

    Raises:
        ConfigError: no point within the budget.
    """
    fits = [p for p in points if p["flops"] <= budget * (1 + 1e-12)]
    if not fits:
        raise ConfigError(f"no configuration within {budget:.4g} FLOPs")
    return max(fits, key=lambda p: (p["metric"], -p["flops"]))


def paired_test(ld: ExampleScores, tr: ExampleScores, *, n_boot: int, seed: int) -> tuple[float, str]:
    """Two-sided p-value that the two configurations score alike on the same dev examples, and the test's name
    (:func:`slimformer.bench.stats.paired_test`: McNemar for accuracy, a paired bootstrap otherwise).

    Raises:
        ConfigError: the two scores cover different numbers of examples (not the same dev split).
    """
    try:
        return stats_paired_test(ld, tr, n_boot=n_boot, seed=seed)
    except ValueError as e:
        raise ConfigError(f"{e} (not the same dev split)") from None


class DevScorer:
    """Scores length configurations of one searched run on the dev split, per example (cached per configuration)."""

    def __init__(
        self,
        run: SearchedRun,
        *,
        runtime: str,
        data_root: str | None,
        max_eval_examples: int | None,
        batch_size: int,
        threads: int,
    ):
        self.run, self.runtime, self.batch_size = run, runtime, batch_size
        loaded = load_model(run.model_dir)
        self.model, meta = loaded.model, loaded.meta
        self.pad = loaded.tokenizer.pad_token_id or 0
        ft = meta.origin() or {}
        self.eval_set = load_eval_set(
            run.front["task"],
            resolve_data_path(run.data, data_root),
            loaded.tokenizer,
            max_seq_length=meta.max_seq_length,
            max_examples=max_eval_examples,
            squad_split=ft.get("squad_split", "dev-article-split"),
            doc_stride=ft.get("doc_stride", 128),
        )
        self.session = None
        if runtime == "int8":
            if not run.onnx_int8 or not Path(run.onnx_int8).is_file():
                # a search without latencies (measure_latency: false) exported no graph: export it here, with the
                # int8 mode the search would have timed (the default runtime scores what would be deployed)
                from slimformer.stages._length_artifacts import export_length_int8

                mode = run.front.get("search", {}).get("settings", {}).get("int8", "dynamic")
                _, graph = export_length_int8(run.model_dir, run.run_dir / "search" / "onnx", mode=mode)
                run.onnx_int8 = str(graph)
            from slimformer.export.length_ort import LengthOrtModel

            self.session = LengthOrtModel(run.onnx_int8, None, intra_op_num_threads=threads)
        elif runtime != "pytorch":
            raise ConfigError(f"--runtime must be int8 or pytorch, got {runtime!r}")

    def scores(self, gene: Sequence[int]) -> ExampleScores:
        key = tuple(int(x) for x in gene)
        if key not in self.run._cache:
            cfg = gene_config(key, self.run.front["gene_form"], self.run.front["seq_len"])
            if self.session is not None:
                self.session.set_config(cfg)
                _, s = evaluate_predictor_scores(
                    self.session, self.eval_set, batch_size=self.batch_size, pad_token_id=self.pad, progress=False
                )
            else:
                _, s = evaluate_config_scores(
                    self.model, self.eval_set, cfg, batch_size=self.batch_size, pad_token_id=self.pad
                )
            self.run._cache[key] = s
        return self.run._cache[key]


def compare_pair(
    lengthdrop: SearchedRun,
    truncation: SearchedRun,
    *,
    task: str,
    variant: str,
    seed: int,
    budgets: int = 5,
    runtime: str = "int8",
    data_root: str | None = None,
    max_eval_examples: int | None = None,
    batch_size: int = 64,
    n_boot: int = 1000,
    threads: int | None = None,
    scorer: Callable[..., DevScorer] = DevScorer,
    allow_pool_mismatch: bool = False,
) -> dict[str, Any]:
    """Paired comparison of a LengthDrop run and its truncation twin at ``budgets`` matched FLOPs budgets.

    Returns:
        ``{"rows": [...], "fronts": {...}}``: one row per budget (the results file's fields) and, for the plots,
        the dev metric of each model's picks.

    Raises:
        ConfigError: the two searched differently, share no FLOPs range, or a run lacks what ``runtime`` needs.
    """
    check_comparable(lengthdrop, truncation, allow_pool_mismatch=allow_pool_mismatch, data_root=data_root)
    pools = [r.front["search_split"].get("pool") for r in (lengthdrop, truncation)]
    threads = threads or physical_cores()
    kw = {"runtime": runtime, "data_root": data_root, "max_eval_examples": max_eval_examples}
    sa = scorer(lengthdrop, batch_size=batch_size, threads=threads, **kw)
    sb = scorer(truncation, batch_size=batch_size, threads=threads, **kw)
    pa, pb = lengthdrop.points(), truncation.points()
    metric = lengthdrop.front["metric"]
    rows = []
    for i, budget in enumerate(matched_budgets(pa, pb, budgets)):
        a, b = best_within(pa, budget), best_within(pb, budget)
        x, y = sa.scores(a["length_config"]), sb.scores(b["length_config"])
        p, test = paired_test(x, y, n_boot=n_boot, seed=seed)
        rows.append(
            {
                "task": task,
                "variant": variant,
                "seed": seed,
                "budget": i,
                "flops": budget,
                "metric": metric,
                "lengthdrop_metric": x.value(),
                "truncation_metric": y.value(),
                "search_split_pools": pools,
                "p_value": p,
                "test": test,
                "lengthdrop_config": list(a["length_config"]),
                "truncation_config": list(b["length_config"]),
                "lengthdrop_flops": a["flops"],
                "truncation_flops": b["flops"],
                "lengthdrop_search_metric": a["metric"],
                "truncation_search_metric": b["metric"],
                "dev_examples": x.num_examples,
            }
        )
    return {
        "rows": rows,
        "runs": {"lengthdrop": str(lengthdrop.run_dir), "truncation": str(truncation.run_dir)},
        "gene_form": lengthdrop.front["gene_form"],
        "seq_len": lengthdrop.front["seq_len"],
        "search_split": lengthdrop.front["search_split"],
    }


def summarize(rows: Sequence[Mapping[str, Any]], alpha: float = ALPHA) -> list[dict[str, Any]]:
    """Per task and variant, over seeds and budgets: where LengthDrop is better / worse with ``p < alpha``.

    ``better`` / ``worse`` count budgets. On a sparse front several budgets pick the same two configurations, one
    comparison counted several times; ``comparisons``, ``better_distinct`` and ``worse_distinct`` count each
    (seed, LengthDrop configuration, truncation configuration) once. Rows without configurations count per budget.
    """
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["variant"]), []).append(r)
    out = []
    for (task, variant), rs in groups.items():
        better = sum(r["p_value"] < alpha and r["lengthdrop_metric"] > r["truncation_metric"] for r in rs)
        worse = sum(r["p_value"] < alpha and r["lengthdrop_metric"] < r["truncation_metric"] for r in rs)
        distinct = list(
            {
                (r["seed"], tuple(r.get("lengthdrop_config") or (i,)), tuple(r.get("truncation_config") or (i,))): r
                for i, r in enumerate(rs)
            }.values()
        )
        better_d = sum(r["p_value"] < alpha and r["lengthdrop_metric"] > r["truncation_metric"] for r in distinct)
        worse_d = sum(r["p_value"] < alpha and r["lengthdrop_metric"] < r["truncation_metric"] for r in distinct)
        seeds = sorted({r["seed"] for r in rs})
        gains = [r["lengthdrop_metric"] - r["truncation_metric"] for r in rs]
        out.append(
            {
                "task": task,
                "variant": variant,
                "seeds": seeds,
                "budgets": len(rs),
                "better": better,
                "worse": worse,
                "comparisons": len(distinct),
                "better_distinct": better_d,
                "worse_distinct": worse_d,
                "mean_gain": sum(gains) / len(gains),
                "text": f"LengthDrop better with p<{alpha:g} at {better} of {len(rs)} budgets, worse at {worse} "
                f"({len(seeds)} seed{'s' if len(seeds) != 1 else ''}; {len(distinct)} distinct configuration "
                f"pairs: better at {better_d}, worse at {worse_d})",
            }
        )
    return out


def _front_xy(run: SearchedRun, picks: Sequence[Mapping[str, Any]], key: str, model: str) -> list[tuple[float, float]]:
    """Dev points of one run for the plot: its ``length_benchmark`` report's front (every front configuration
    re-scored on dev, int8) when it has one, else the driver's budget picks of ``model`` (``lengthdrop`` /
    ``truncation``; FLOPs only)."""
    x = "flops" if key == "flops" else "latency_ms_bs1"
    if run.report and run.report.get("front"):
        pts = [(r[x], r["metric_value"]) for r in run.report["front"] if r.get(x) is not None]
        if pts:
            return pts
    if key != "flops":
        return []
    return [(r[f"{model}_flops"], r[f"{model}_metric"]) for r in picks]


def _staircase(points: Sequence[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """The Pareto front (cheapest first, metric strictly rising) of ``points``."""
    xs, ys, best = [], [], -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            xs.append(x)
            ys.append(y)
            best = y
    return xs, ys


def _teachers(pairs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """``{"teacher fp32" | "teacher int8": {"metric_value", "flops", "latency_ms_bs1"}}`` from the first report."""
    for p in pairs:
        for run in (p["lengthdrop_run"], p["truncation_run"]):
            if run.report:
                out = {}
                for r in run.report.get("rows", []):
                    if r["name"] == "teacher fp32":
                        out["teacher fp32"] = r
                    elif r["name"].startswith("teacher int8"):
                        out["teacher int8 (ORT)"] = r
                if out:
                    return out
    return {}


def plot_task(task: str, pairs: Sequence[Mapping[str, Any]], out_dir: Path, metric_label: str) -> list[str]:
    """One figure per x-axis (FLOPs, int8 latency): every variant's LengthDrop front (solid) and truncation front
    (dashed, same colour), the teachers as horizontal lines. Returns the paths written (latency only with data)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    teachers = _teachers(pairs)
    for key, xlabel in (
        ("flops", "FLOPs (2·MACs, batch 1, seq_len tokens)"),
        ("latency", "int8 latency, ms (batch 1)"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        drawn = False
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, p in enumerate(pairs):
            colour = colours[i % len(colours)]
            name = f"{p['variant']} seed {p['seed']}"
            for trunc, style in ((False, "-"), (True, "--")):
                run = p["truncation_run"] if trunc else p["lengthdrop_run"]
                pts = _front_xy(run, p["rows"], key, "truncation" if trunc else "lengthdrop")
                if not pts:
                    continue
                xs, ys = _staircase(pts)
                ax.step(
                    xs, ys, style, where="post", color=colour, label=f"{name} {'truncation' if trunc else 'LengthDrop'}"
                )
                ax.scatter([x for x, _ in pts], [y for _, y in pts], s=8, color=colour, alpha=0.4)
                drawn = True
        for j, (tname, row) in enumerate(teachers.items()):
            if row.get("metric_value") is not None:
                ax.axhline(row["metric_value"], color="black", linestyle=(":" if j else "-."), lw=1, label=tname)
        if not drawn:
            plt.close(fig)
            continue
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric_label)
        ax.set_title(f"{task}: LengthDrop (solid) vs truncation (dashed), dev split")
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        path = out_dir / f"lengthdrop-vs-truncation-{task}-{key}.png"
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120)
        plt.close(fig)
        atomic_write_bytes(path, buf.getvalue())
        written.append(str(path))
    return written


_RUN = re.compile(r"^quala-(sst2|squad)(?:-(la-full|l4|l3b))?(?:-seed(\d+))?$")


def discover(runs: Path) -> list[tuple[str, str, int, Path, Path]]:
    """``(task, variant, seed, lengthdrop run, truncation run)`` for every pair of finished searches under ``runs``."""
    found = []
    for d in sorted(runs.glob("quala-*")):
        m = _RUN.match(d.name)
        if not m or not d.is_dir():
            continue
        task, variant, seed = m.group(1), m.group(2) or "l3", int(m.group(3) or 42)
        base = d.name[: -len(f"-seed{seed}")] if m.group(3) else d.name
        twin = runs / (f"{base}-truncation" + (f"-seed{seed}" if m.group(3) else ""))
        if all((r / "search" / "front.json").is_file() and (r / "state.json").is_file() for r in (d, twin)):
            found.append((task, variant, seed, d, twin))
    return found


def _compare_job(pair: tuple[str, str, int, Path, Path], **kw: Any) -> dict[str, Any]:
    """:func:`compare_pair` of one ``(task, variant, seed, lengthdrop run, truncation run)``: one worker job."""
    task, variant, seed, a, b = pair
    return compare_pair(SearchedRun.load(a), SearchedRun.load(b), task=task, variant=variant, seed=seed, **kw)


def run(
    pairs: Sequence[tuple[str, str, int, Path, Path]],
    *,
    budgets: int,
    runtime: str,
    data_root: str | None,
    max_eval_examples: int | None,
    batch_size: int,
    n_boot: int,
    threads: int,
    results: Path = RESULTS,
    plots: Path | None = PLOTS,
    command: str = "python benchmarks/lengthdrop_vs_truncation.py",
    allow_pool_mismatch: bool = False,
    trained_on: str | None = None,
    jobs: int = 1,
) -> dict[str, Any]:
    """Compare every pair, write the results file (and the plots unless ``plots`` is None); return the results.

    ``trained_on``: where the runs were trained and searched when not on this machine (stated in the results file;
    its ``machine`` is where dev was scored). ``jobs``: pairs compared at once, in separate processes with
    ``threads // jobs`` threads each (the rows do not depend on it: every pair is scored alone, at the same batch)."""
    kw = {
        "budgets": budgets,
        "runtime": runtime,
        "data_root": data_root,
        "max_eval_examples": max_eval_examples,
        "batch_size": batch_size,
        "n_boot": n_boot,
        "allow_pool_mismatch": allow_pool_mismatch,
    }
    jobs = max(1, min(jobs, len(pairs)))
    if jobs == 1:
        compared = [_compare_job(pair, threads=threads, **kw) for pair in pairs]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_compare_job, pair, threads=max(1, threads // jobs), **kw) for pair in pairs]
            compared = [f.result() for f in futures]
    done: list[dict[str, Any]] = []
    for (task, variant, seed, a, b), res in zip(pairs, compared):
        ld, tr = SearchedRun.load(a), SearchedRun.load(b)
        done.append({**res, "task": task, "variant": variant, "seed": seed, "lengthdrop_run": ld, "truncation_run": tr})
    rows = [r for d in done for r in d["rows"]]
    figures: dict[str, list[str]] = {}
    if plots is not None:
        for task in sorted({d["task"] for d in done}):
            mine = [d for d in done if d["task"] == task]
            # a run's length_benchmark report front is int8; the budget picks are scored with `runtime`
            label = f"{mine[0]['rows'][0]['metric']} (dev; report fronts int8, else {runtime})"
            figures[task] = [os.path.relpath(p, ROOT) for p in plot_task(task, mine, plots, label)]
    out = {
        "benchmark": "lengthdrop-vs-truncation",
        "command": command,
        "machine": machine_info(threads),
        **({"trained_on": trained_on} if trained_on else {}),
        "task": sorted({d["task"] for d in done}),
        "metric": {d["task"]: d["rows"][0]["metric"] for d in done if d["rows"]},
        "runtime": runtime,
        "alpha": ALPHA,
        "budgets_per_pair": budgets,
        "eval_batch_size": batch_size,
        "pick": "per budget, the front point with the best search-split metric within the FLOPs budget; "
        "dev is used only for the paired test",
        "pairs": [
            {k: d[k] for k in ("task", "variant", "seed", "runs", "gene_form", "seq_len", "search_split")} for d in done
        ],
        "rows": rows,
        "summary": summarize(rows),
        "plots": figures,
    }
    atomic_write_json(results, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--pair",
        nargs=5,
        action="append",
        metavar=("TASK", "VARIANT", "SEED", "LENGTHDROP_RUN", "TRUNCATION_RUN"),
        help="one comparison (repeat); default: every pair found under --runs",
    )
    p.add_argument("--runs", type=Path, default=ROOT / "runs", help="where to look for run folders (default: runs/)")
    p.add_argument("--budgets", type=int, default=5, help="matched FLOPs budgets per pair (default 5)")
    p.add_argument("--runtime", choices=("int8", "pytorch"), default="int8", help="how dev is scored (default int8)")
    p.add_argument("--data-root", default=os.environ.get("SLIMFORMER_DATA"))
    p.add_argument("--max-eval-examples", type=int, default=None, help="cap on dev examples (default: all)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="dev scoring batch (default: 1 for the int8 graphs, whose dynamic activation scales follow the batch, "
        "as a served request; 64 for pytorch)",
    )
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--jobs", type=int, default=1, help="pairs compared at once, each with threads/jobs threads (default 1)"
    )
    p.add_argument(
        "--allow-pool-mismatch",
        action="store_true",
        help="accept search splits drawn from different pools (a LengthDrop stage capped at max_train_examples "
        "excludes what it saw; its twin does not); both pools are recorded in every row",
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--plots", type=Path, default=PLOTS)
    p.add_argument("--trained-on", help="where the runs were trained and searched, when not on this machine")
    a = p.parse_args(argv)
    pairs = [(t, v, int(s), Path(x), Path(y)) for t, v, s, x, y in a.pair] if a.pair else discover(a.runs)
    if not a.pair:  # found by name: leave out pairs whose searches differ (e.g. quala-squad vs its 7,000-question twin)
        kept = []
        for pair in pairs:
            try:
                check_comparable(SearchedRun.load(pair[3]), SearchedRun.load(pair[4]))
                kept.append(pair)
            except ConfigError as e:
                print(f"skipped {pair[3].name}: {e}", file=sys.stderr)
        pairs = kept
    if not pairs:
        print(f"error: no finished LengthDrop/truncation run pairs under {a.runs} (see --pair)", file=sys.stderr)
        return 2
    try:
        out = run(
            pairs,
            budgets=a.budgets,
            runtime=a.runtime,
            data_root=a.data_root,
            max_eval_examples=a.max_eval_examples,
            batch_size=a.batch_size or (1 if a.runtime == "int8" else 64),
            n_boot=a.n_boot,
            threads=a.threads or physical_cores(),
            results=a.out,
            plots=a.plots,
            allow_pool_mismatch=a.allow_pool_mismatch,
            trained_on=a.trained_on,
            jobs=a.jobs,
            command="python benchmarks/lengthdrop_vs_truncation.py "
            + " ".join(argv if argv is not None else sys.argv[1:]),
        )
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for s in out["summary"]:
        print(f"{s['task']} {s['variant']}: {s['text']}")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
