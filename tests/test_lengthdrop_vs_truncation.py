"""benchmarks/lengthdrop_vs_truncation.py on tiny random encoders: a LengthDrop run and its truncation twin (the tiny
QuaLA recipe of ``quala_helpers`` with and without its ``length`` stage), matched FLOPs budgets picked on the search
split, paired tests on dev, the results file and the plots."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest

from slimformer.errors import ConfigError
from slimformer.evaluate import ExampleScores
from slimformer.io import read_json

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import lengthdrop_vs_truncation as lvt  # noqa: E402

FIELDS = {"task", "variant", "seed", "flops", "lengthdrop_metric", "truncation_metric", "p_value", "test", "budget"}
FIELDS |= {"lengthdrop_config", "truncation_config"}


@pytest.fixture(scope="module")
def twin_runs(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> tuple[Path, Path]:
    """``(LengthDrop run, truncation run)``: the tiny recipe up to its search, and the same without ``length``."""
    pytest.importorskip("onnxruntime")
    from quala_helpers import quala_recipe
    from slimformer.recipe import parse_recipe, run_recipe

    tmp = tmp_path_factory.mktemp("lvt")
    raw = quala_recipe(tmp, tiny_tokenizer, upto="search")
    run_recipe(parse_recipe(copy.deepcopy(raw)), run_dir=tmp / "ld", log=lambda s: None)
    twin = copy.deepcopy(raw)
    twin["stages"] = [s for s in twin["stages"] if "length" not in s]
    twin["stages"][-1]["search"]["length_drop_ratio"] = 0.2  # the length stage's default bound, as in the LD run
    run_recipe(parse_recipe(twin), run_dir=tmp / "tr", log=lambda s: None)
    return tmp / "ld", tmp / "tr"


def test_pairs_give_rows_at_matched_budgets_with_paired_p_values(twin_runs, tmp_path: Path) -> None:
    ld, tr = twin_runs
    out = lvt.run(
        [("sst2", "l3", 42, ld, tr)],
        budgets=5,
        runtime="int8",
        data_root=None,
        max_eval_examples=None,
        batch_size=4,
        n_boot=200,
        threads=1,
        results=tmp_path / "r.json",
        plots=tmp_path / "plots",
        trained_on="a GPU machine",
    )
    saved = read_json(tmp_path / "r.json")
    assert saved["rows"] == out["rows"] and "machine" in saved and saved["runtime"] == "int8"
    assert saved["trained_on"] == "a GPU machine"
    rows = saved["rows"]
    assert len(rows) == 5 and all(FIELDS <= set(r) for r in rows)
    assert [r["budget"] for r in rows] == list(range(5))
    flops = [r["flops"] for r in rows]
    assert flops == sorted(flops) and flops[0] < flops[-1]
    for r in rows:
        assert 0.0 <= r["p_value"] <= 1.0 and r["test"] == "mcnemar"
        assert r["lengthdrop_flops"] <= r["flops"] * (1 + 1e-9) and r["truncation_flops"] <= r["flops"] * (1 + 1e-9)
        assert 0.0 <= r["lengthdrop_metric"] <= 1.0 and r["dev_examples"] == 12
    (summary,) = saved["summary"]
    assert summary["budgets"] == 5 and summary["text"].startswith("LengthDrop better with p<0.05 at ")
    assert [Path(p).name for p in saved["plots"]["sst2"]] == ["lengthdrop-vs-truncation-sst2-flops.png"]
    assert (tmp_path / "plots" / "lengthdrop-vs-truncation-sst2-flops.png").stat().st_size > 0


def test_pairs_compared_in_parallel_give_the_same_rows(twin_runs, tmp_path: Path) -> None:
    """``--jobs``: pairs in worker processes; the rows, in the order of the pairs, are those of one process."""
    ld, tr = twin_runs
    pairs = [("sst2", "l3", 42, ld, tr), ("sst2", "l3", 43, tr, ld)]  # two pairs (the second one reversed)
    kw = {"budgets": 3, "runtime": "int8", "data_root": None, "max_eval_examples": 8, "batch_size": 4, "n_boot": 100}
    one = lvt.run(pairs, threads=2, results=tmp_path / "one.json", plots=None, **kw)
    two = lvt.run(pairs, threads=2, results=tmp_path / "two.json", plots=None, jobs=2, **kw)
    assert [r["seed"] for r in two["rows"]] == [42] * 3 + [43] * 3
    assert two["rows"] == one["rows"] and two["summary"] == one["summary"]


def test_a_model_compared_with_itself_has_equal_metrics_and_p_one(twin_runs) -> None:
    ld, _ = twin_runs
    res = lvt.compare_pair(
        lvt.SearchedRun.load(ld),
        lvt.SearchedRun.load(ld),
        task="sst2",
        variant="self",
        seed=42,
        budgets=6,
        runtime="pytorch",
        batch_size=4,
        threads=1,
    )
    assert len(res["rows"]) == 6
    for r in res["rows"]:
        assert r["lengthdrop_config"] == r["truncation_config"]
        assert r["lengthdrop_metric"] == r["truncation_metric"] and r["p_value"] == 1.0


def test_a_search_without_an_int8_graph_gets_one_exported(twin_runs, tmp_path: Path) -> None:
    """A search run with ``measure_latency: false`` exported no graph: the int8 scorer exports the searched model's
    graph into the run folder and scores exactly as with the search's own graph."""
    import shutil

    from slimformer.io import atomic_write_json

    _, tr = twin_runs
    copy_dir = tmp_path / "tr"
    shutil.copytree(tr, copy_dir, symlinks=True)
    state = read_json(copy_dir / "state.json")
    search = next(s["outputs"] for s in state["stages"] if s["name"] == "search")
    assert search["search_onnx_int8"]  # the fixture's search timed its front, so it has a graph
    search["search_onnx_int8"] = None
    atomic_write_json(copy_dir / "state.json", state)
    shutil.rmtree(copy_dir / "search" / "onnx")

    kw = {"runtime": "int8", "data_root": None, "max_eval_examples": None, "batch_size": 4, "threads": 1}
    own = lvt.DevScorer(lvt.SearchedRun.load(tr), **kw)
    run = lvt.SearchedRun.load(copy_dir)
    exported = lvt.DevScorer(run, **kw)
    assert Path(run.onnx_int8).is_file() and Path(run.onnx_int8).is_relative_to(copy_dir / "search" / "onnx")
    gene = tuple(run.front["front"][0]["length_config"])
    assert np.array_equal(own.scores(gene).scores, exported.scores(gene).scores)


def test_searches_that_differ_are_refused(twin_runs) -> None:
    ld, tr = twin_runs
    a, b = lvt.SearchedRun.load(ld), lvt.SearchedRun.load(tr)
    b.front = {**b.front, "seq_len": b.front["seq_len"] * 2}
    with pytest.raises(ConfigError, match="searched differently: seq_len"):
        lvt.compare_pair(a, b, task="sst2", variant="l3", seed=42, runtime="pytorch", threads=1)
    b = lvt.SearchedRun.load(tr)
    b.front["search_split"] = {**b.front["search_split"], "examples": 7}
    with pytest.raises(ConfigError, match="other splits: search_split.examples"):
        lvt.check_comparable(a, b)


def test_splits_from_other_pools_compare_when_they_hold_the_same_examples(twin_runs) -> None:
    """A LengthDrop stage with ``hold_out`` leaves only the search split unseen (pool = the split) while its twin
    draws the same sample from the larger pool: accepted when the indices' digests agree, refused when they differ;
    a front without the digest gets its draw replayed, and the replay gives the digest the search recorded."""
    from slimformer.length.search_split import indices_digest

    ld, tr = twin_runs
    a, b = lvt.SearchedRun.load(ld), lvt.SearchedRun.load(tr)
    recorded = a.front["search_split"]["indices_sha256"]
    assert len(recorded) == 64 and recorded == b.front["search_split"]["indices_sha256"]
    b.front["search_split"] = {**b.front["search_split"], "pool": b.front["search_split"]["pool"] + 100}
    lvt.check_comparable(a, b)  # other pools, same examples
    a.front["search_split"] = {k: v for k, v in a.front["search_split"].items() if k != "indices_sha256"}
    assert lvt.split_digest(a) == recorded  # replayed from the model's records
    b.front["search_split"]["indices_sha256"] = indices_digest([0, 1, 2])
    with pytest.raises(ConfigError, match=r"other splits: search_split.pool \d+ vs \d+ \(and other examples\)"):
        lvt.check_comparable(a, b)
    lvt.check_comparable(a, b, allow_pool_mismatch=True)  # the documented escape hatch still accepts it


def test_budgets_span_the_common_range_and_picks_use_the_search_metric() -> None:
    a = [{"flops": 10.0, "metric": 0.5}, {"flops": 20.0, "metric": 0.7}, {"flops": 40.0, "metric": 0.9}]
    b = [{"flops": 15.0, "metric": 0.6}, {"flops": 30.0, "metric": 0.8}, {"flops": 50.0, "metric": 0.95}]
    assert lvt.matched_budgets(a, b, 5) == [15.0, 21.25, 27.5, 33.75, 40.0]
    assert lvt.best_within(a, 27.5)["flops"] == 20.0 and lvt.best_within(b, 27.5)["flops"] == 15.0
    # equal search metric: the cheaper point
    assert lvt.best_within([{"flops": 5.0, "metric": 0.5}, {"flops": 4.0, "metric": 0.5}], 9)["flops"] == 4.0
    with pytest.raises(ConfigError, match="no configuration within"):
        lvt.best_within(a, 9.0)
    with pytest.raises(ConfigError, match="share no FLOPs range"):
        lvt.matched_budgets(a, [{"flops": 100.0, "metric": 1.0}], 5)


def test_the_paired_test_follows_the_metric() -> None:
    rng = np.random.default_rng(0)
    right = (rng.random(400) < 0.9).astype(float)
    worse = right.copy()
    worse[:60] = 0.0
    p, test = lvt.paired_test(ExampleScores("accuracy", right), ExampleScores("accuracy", worse), n_boot=200, seed=0)
    assert test == "mcnemar" and p < 0.05
    f1 = rng.random(300) * 100
    p, test = lvt.paired_test(ExampleScores("f1", f1), ExampleScores("f1", f1 * 0.8), n_boot=200, seed=0)
    assert test.startswith("paired_bootstrap") and p < 0.05
    p, _ = lvt.paired_test(ExampleScores("f1", f1), ExampleScores("f1", f1.copy()), n_boot=200, seed=0)
    assert p == 1.0
    summary = lvt.summarize(
        [
            {"task": "t", "variant": "v", "seed": s, "p_value": p, "lengthdrop_metric": x, "truncation_metric": y}
            for s, p, x, y in [(42, 0.01, 0.9, 0.8), (42, 0.01, 0.7, 0.8), (43, 0.5, 0.9, 0.8)]
        ]
    )
    assert summary[0]["text"] == (
        "LengthDrop better with p<0.05 at 1 of 3 budgets, worse at 1 (2 seeds; "
        "3 distinct configuration pairs: better at 1, worse at 1)"
    )
    # three budgets that picked the same two configurations are one comparison
    same = {"task": "t", "variant": "v", "seed": 43, "p_value": 0.01, "lengthdrop_metric": 0.8}
    rows = [{**same, "truncation_metric": 0.9, "lengthdrop_config": [5, 4], "truncation_config": [6, 2]}] * 3
    rows.append({**same, "truncation_metric": 0.7, "lengthdrop_config": [3, 3], "truncation_config": [3, 3]})
    (s,) = lvt.summarize(rows)
    assert (s["better"], s["worse"], s["comparisons"], s["better_distinct"], s["worse_distinct"]) == (1, 3, 2, 1, 1)


def test_discover_pairs_runs_by_name(tmp_path: Path) -> None:
    for name in ("quala-sst2-l4", "quala-sst2-l4-truncation", "quala-sst2-l4-seed43", "quala-squad-la-full"):
        (tmp_path / name / "search").mkdir(parents=True)
        (tmp_path / name / "search" / "front.json").write_text("{}")
        (tmp_path / name / "state.json").write_text("{}")
    (tmp_path / "quala-sst2-l4-truncation-seed43" / "search").mkdir(parents=True)  # no front yet
    got = lvt.discover(tmp_path)
    assert got == [("sst2", "l4", 42, tmp_path / "quala-sst2-l4", tmp_path / "quala-sst2-l4-truncation")]


def test_other_search_settings_are_refused(twin_runs) -> None:
    ld, tr = twin_runs
    a, b = lvt.SearchedRun.load(ld), lvt.SearchedRun.load(tr)
    b.front["search"] = {**b.front["search"], "settings": {**b.front["search"]["settings"], "seed": 7}}
    with pytest.raises(ConfigError, match="other settings: seed 42 vs 7"):
        lvt.check_comparable(a, b)


def test_same_config_scores_every_run_at_the_references_configurations(twin_runs, tmp_path: Path) -> None:
    """benchmarks/same_config.py: the truncation model against the LengthDrop model (reference) at full length and at
    every configuration of the truncation model's front (--front-of), per seed; the metrics are those the dev scorer
    gives."""
    import same_config

    ld, tr = twin_runs
    ref = lvt.SearchedRun.load(ld)
    rc = same_config.main(
        ["--run", "42", "ld", str(ld), "--run", "42", "tr", str(tr), "--reference", "ld", "--name", "sc"]
        + ["--results-dir", str(tmp_path), "--n-boot", "100", "--front-of", "tr", "--trained-on", "a GPU"]
    )
    assert rc == 0
    saved = read_json(tmp_path / "sc.json")
    assert saved["trained_on"] == "a GPU"
    rows = saved["rows"]
    configs = same_config.configs_of(lvt.SearchedRun.load(tr), None)  # --front-of tr: the twin's front
    assert [r["length_config"] for r in rows] == [c["length_config"] for c in configs]
    assert rows[0]["full"] and not any(r["full"] for r in rows[1:])
    assert [r["flops"] for r in rows[1:]] == sorted(r["flops"] for r in rows[1:])
    own = lvt.DevScorer(ref, runtime="pytorch", data_root=None, max_eval_examples=None, batch_size=64, threads=1)
    other = lvt.DevScorer(
        lvt.SearchedRun.load(tr), runtime="pytorch", data_root=None, max_eval_examples=None, batch_size=64, threads=1
    )
    for r in rows:
        assert r["label"] == "tr" and r["reference"] == "ld" and 0.0 <= r["p_value"] <= 1.0
        assert r["reference_metric"] == own.scores(r["length_config"]).value()
        assert r["metric_value"] == other.scores(r["length_config"]).value()
    (s,) = saved["summary"]
    assert s["comparisons"] == len(rows) and s["better"] + s["worse"] <= len(rows)
    assert list(s["full_length"]) == ["42"]
    capped = same_config.configs_of(ref, 2)
    assert len(capped) == 1 + min(2, len(ref.front["front"]))
    assert capped[1]["flops"] == min(p["flops"] for p in ref.front["front"])
    # an extra configuration outside the front, with its FLOPs computed as the search computes them
    smallest = min(ref.front["front"], key=lambda p: p["flops"])
    (full, extra) = same_config.configs_of(ref, 0, [smallest["length_config"]])
    assert full["full"] and extra["flops"] == smallest["flops"] and not extra["full"]


def test_same_config_needs_one_reference_per_seed(twin_runs, tmp_path: Path) -> None:
    import same_config

    ld, tr = twin_runs
    argv = ["--run", "42", "a", str(ld), "--run", "43", "b", str(tr), "--reference", "a", "--name", "x"]
    assert same_config.main([*argv, "--results-dir", str(tmp_path)]) == 2  # seed 43 has no run labelled "a"
    assert not (tmp_path / "x.json").exists()
    argv = ["--run", "42", "a", str(ld), "--run", "42", "b", str(tr), "--reference", "a", "--front-of", "c"]
    assert same_config.main([*argv, "--name", "x", "--results-dir", str(tmp_path)]) == 2  # no run labelled "c"
    assert not (tmp_path / "x.json").exists()


def test_front_on_dev_scores_every_front_point_and_ranks_them_against_the_search(twin_runs, tmp_path: Path) -> None:
    """benchmarks/front_on_dev.py: one row per front point plus the full point, in front.json's order, each with its
    search-split metric and the dev metric the scorer gives; the pick is marked once; rho is the rank correlation."""
    import front_on_dev

    from slimformer.bench.stats import spearman_rank_correlation

    ld, _ = twin_runs
    run = lvt.SearchedRun.load(ld)
    rc = front_on_dev.main(
        ["--run", str(ld), "--runtime", "pytorch", "--threads", "1", "--name", "fd", "--results-dir", str(tmp_path)]
    )
    assert rc == 0
    saved = read_json(tmp_path / "fd.json")
    rows, points = saved["rows"], run.points()
    assert [r["length_config"] for r in rows] == [list(p["length_config"]) for p in points]
    assert [r["search_metric"] for r in rows] == [p["metric"] for p in points]
    scorer = lvt.DevScorer(run, runtime="pytorch", data_root=None, max_eval_examples=None, batch_size=64, threads=1)
    for r in rows:
        assert r["metric_value"] == scorer.scores(r["length_config"]).value()
        assert r["search_lower"] <= r["search_metric"]
    picked = [r["length_config"] for r in rows if r["picked"]]
    assert picked == [list(run.front["selected"]["length_config"])]
    rho = spearman_rank_correlation([r["search_metric"] for r in rows], [r["metric_value"] for r in rows])
    assert saved["spearman_rho"] == (None if np.isnan(rho) else rho)  # NaN when a column is constant
    assert saved["task"] == run.front["task"] and saved["metric"]
    assert "--runtime pytorch" in saved["command"]


def test_front_on_dev_scores_a_static_int8_graph_exported_beside_the_search(twin_runs, tmp_path: Path) -> None:
    """``--int8-mode static``: the searched model's static-PTQ graph is exported into ``search/onnx-static`` and
    every row is that graph's dev metric at the asked batch; the command and rows name the mode and the batch."""
    import shutil

    import front_on_dev

    ld, _ = twin_runs
    run_dir = tmp_path / "ld"
    shutil.copytree(ld, run_dir, symlinks=True)
    args = ["--run", str(run_dir), "--threads", "1", "--batch-size", "4", "--results-dir", str(tmp_path)]
    assert front_on_dev.main([*args, "--int8-mode", "static", "--name", "st"]) == 0
    graph = run_dir / "search" / "onnx-static" / "model.int8.onnx"
    assert graph.is_file()
    saved = read_json(tmp_path / "st.json")
    assert {r["runtime"] for r in saved["rows"]} == {"int8-static"}
    assert "--int8-mode static --batch-size 4" in saved["command"]
    run = lvt.SearchedRun.load(run_dir)
    run.onnx_int8 = str(graph)
    scorer = lvt.DevScorer(run, runtime="int8", data_root=None, max_eval_examples=None, batch_size=4, threads=1)
    assert [r["metric_value"] for r in saved["rows"]] == [
        scorer.scores(r["length_config"]).value() for r in saved["rows"]
    ]
    assert front_on_dev.main([*args, "--name", "own"]) == 0  # the search's own (dynamic) graph
    assert {r["runtime"] for r in read_json(tmp_path / "own.json")["rows"]} == {"int8-dynamic"}


def test_search_split_overlap_finds_phrases_inside_seen_examples() -> None:
    """Hand-computed cases: a contiguous run of a seen text's words is inside it, words out of order or a text
    longer than every seen one are not; spans shorter than the shortest split text are not indexed."""
    import search_split_overlap as sso

    assert sso.word_spans(["a b c"], 2) == {"a b", "b c", "a b c"}
    assert sso.word_spans(["a b"], 3) == set()
    got = sso.inside_seen(["b c", "c b", "a b c d", "a  b"], ["a b c", "x y"])
    assert got.tolist() == [True, False, False, True]


def test_search_split_overlap_scores_the_parts_of_the_split_and_dev(twin_runs, tmp_path: Path) -> None:
    """benchmarks/search_split_overlap.py on the tiny LengthDrop run: the two parts partition the split (their
    examples add up, and the split's metric is their weighted mean), dev is scored, every loss is full minus pick."""
    import search_split_overlap as sso

    ld, _ = twin_runs
    assert (
        sso.main(["--run", str(ld), "--threads", "1", "--n-boot", "50", "--name", "o", "--results-dir", str(tmp_path)])
        == 0
    )
    saved = read_json(tmp_path / "o.json")
    rows = {r["name"]: r for r in saved["rows"]}
    whole, dev = rows["search split: all"], rows["dev"]
    parts = [r for n, r in rows.items() if n.startswith("search split: ") and n != "search split: all"]
    assert sum(r["examples"] for r in parts) == whole["examples"] == len(lvt.split_indices(lvt.SearchedRun.load(ld)))
    mean = sum(r["full_metric"] * r["examples"] for r in parts) / whole["examples"]
    assert abs(mean - whole["full_metric"]) < 1e-3 and dev["examples"] == 12
    for r in saved["rows"]:
        assert abs(r["loss_points"] - 100 * (r["full_metric"] - r["metric_value"])) < 0.02
    assert saved["pick"] == list(lvt.SearchedRun.load(ld).front["selected"]["length_config"])


def test_search_split_overlap_counts_what_each_student_stage_read(tmp_path: Path) -> None:
    """A capped stage read its sample, a holding-out stage everything but the split, minus its context when it
    left that out too; an uncapped stage (the teacher's fine-tuning) is not the student's reading."""
    import search_split_overlap as sso

    from conftest import write_sst2

    rows = ["the movie was good fun\t1", "movie was good\t1", "was good\t1", "great fun\t1", "very dull\t0"]
    data = write_sst2(tmp_path, rows)
    length = {"stage": "length", "seed": 1, "held_out": [0]}
    finetune = {"stage": "finetune", "seed": 42, "max_train_examples": None}
    assert sso.student_seen([finetune, length], 5, "sst2", data) == {1, 2, 3, 4}
    ctx = {**length, "held_out_context": {"examples": 2, "sha256": "x"}}
    assert sso.student_seen([finetune, ctx], 5, "sst2", data) == {3, 4}
    distill = {"stage": "distill", "seed": 3, "max_train_examples": 2}
    sample = sso.student_seen([distill], 5, "sst2", data)
    assert len(sample) == 2 and sso.student_seen([distill, ctx], 5, "sst2", data) == sample | {3, 4}
