"""The QuaLA pipeline end to end on a tiny encoder: finetune -> distill -> length -> search -> export ->
length_benchmark, then budget changes, bad budgets, bad stores and bad layer maps through the recipe / CLI."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from slimformer.checkpoint import load_model
from slimformer.cli import main
from slimformer.errors import ConfigError
from slimformer.export.length_ort import LengthOrtModel
from slimformer.io import read_json
from slimformer.length import LengthConfig, forward_with_config, load_length_config
from slimformer.length.flops import EncoderDims, config_flops
from slimformer.length.selection import gene_config
from slimformer.recipe import parse_recipe, run_recipe


@pytest.fixture(scope="module")
def run(quala_run):
    return quala_run  # conftest.py: one tiny QuaLA run per session, shared with the stage matrix


def _errors(capsys) -> list[str]:
    """stderr lines of the CLI's error report (progress bars of model loading are left out)."""
    return [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]


def _copy_run(run, tmp_path: Path) -> tuple[dict, Path]:
    raw, ctx = run
    shutil.copytree(ctx.run_dir, tmp_path / "run")
    return json.loads(json.dumps(raw)), tmp_path / "run"


def test_search_front_and_pick(run) -> None:
    _, ctx = run
    out = ctx.outputs["3-search"]
    front = read_json(out["front_json"])
    model = load_model(out["searched_model_dir"]).model
    dims, n = EncoderDims.from_model(model), front["seq_len"]
    assert n == 16 and model.num_layers == 2
    points = front["front"]
    assert [p["flops"] for p in points] == sorted(p["flops"] for p in points)
    assert all(b["metric"] > a["metric"] for a, b in zip(points, points[1:]))
    for p in points + [front["full"]]:  # FLOPs = 2 * MACs of the layer formula, by hand
        n_in, macs = n, 0
        for n_out in p["length_config"]:
            macs += 4 * n_in * 32 * 32 + 2 * n_in * n_in * 32 + 2 * n_out * 32 * 64
            n_in = n_out
        assert p["flops"] == 2 * macs == config_flops(p["length_config"], n, dims)
        assert p["latency_ms"] > 0
    chosen = front["selected"]
    threshold = front["reference"]["metric"] - 0.01  # default pick: max_loss 1.0 point of accuracy
    assert front["reference"]["kind"] == "full" and front["reference"]["metric"] == front["full"]["metric"]
    # decided on the lower end of each point's paired 95% interval against the full model (not its point estimate)
    assert front["intervals"]["resamples"] == 1000 and front["intervals"]["confidence"] == 0.95
    for p in points + [front["full"]]:
        assert p["metric_ci"][0] <= p["metric"] <= p["metric_ci"][1]
        assert p["metric_lower"] == pytest.approx(front["reference"]["metric"] + p["difference_ci"][0])
        assert 0 <= p["p_value"] <= 1 and p["test"] == "mcnemar"
    assert front["full"]["difference_ci"] == [0.0, 0.0]
    assert chosen["metric_lower"] >= threshold and chosen["selected_by"]["rule"].startswith("metric_lower")
    assert all(p["metric_lower"] < threshold for p in points if p["flops"] < chosen["flops"])
    assert front["search_split"]["examples"] == 24 and front["search_split"]["pool"] == 32
    assert Path(out["store"]).is_file() and front["search"]["new_evaluations"] == front["search"]["evaluated"]
    picked = Path(out["model_dir"])
    saved = load_length_config(picked)
    assert (
        saved == gene_config(chosen["length_config"], "ratios", n) and out["length_config"] == chosen["length_config"]
    )
    assert saved.ratios == tuple(v / 16 for v in chosen["length_config"])
    assert saved.lengths_for(16) == tuple(chosen["length_config"])
    assert chosen["saved_config"] == {"ratios": list(saved.ratios)}
    assert load_model(picked).meta.applied[-1]["stage"] == "search"
    assert load_length_config(out["searched_model_dir"]) == LengthConfig.full(2)  # the searched model is untouched


def test_exported_pick_runs_in_ort_with_parity(run) -> None:
    from slimformer.export.ort import OrtModel

    _, ctx = run
    chosen = gene_config(ctx.outputs["3-search"]["length_config"], "ratios", 16)
    exp = ctx.outputs["4-export"]
    model = load_model(ctx.outputs["3-search"]["model_dir"]).model
    rng = np.random.default_rng(0)
    ids = rng.integers(5, model.config.vocab_size, size=(3, 16))
    mask = np.ones((3, 16), dtype=np.int64)
    mask[1, 9:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}

    def reference(config: LengthConfig | None) -> np.ndarray:
        with torch.no_grad():
            return forward_with_config(model, *(torch.from_numpy(v) for v in batch.values()), config=config).logits

    for path in (exp["onnx_fp32"], exp["onnx_int8"]):
        tol = 1e-4 if path == exp["onnx_fp32"] else 0.1  # int8: same configuration, quantized weights
        default = OrtModel(path)(batch)["logits"]  # ids and mask only: the graph's default = the pick
        np.testing.assert_allclose(default, reference(chosen), atol=tol)
        np.testing.assert_array_equal(LengthOrtModel(path, chosen)(batch)["logits"], default)
        np.testing.assert_allclose(LengthOrtModel(path, None)(batch)["logits"], reference(None), atol=tol)
    feeds = LengthOrtModel(exp["onnx_int8"], chosen).feeds(batch)
    np.testing.assert_array_equal(feeds["length_ratios"], np.asarray(chosen.ratios, dtype=np.float32))


def test_report_rows_and_plots(run) -> None:
    _, ctx = run
    out = ctx.outputs["5-length_benchmark"]
    report = read_json(out["report_json"])
    chosen = ctx.outputs["3-search"]["length_config"]
    names = [r["name"] for r in report["rows"]]
    assert names[0] == "teacher fp32" and report["rows"][0]["runtime"] == "pytorch-fp32"
    assert names[1].startswith("teacher int8") and report["rows"][1]["runtime"] == "onnxruntime-int8"
    assert "no LengthDrop" in names[2] and names[3].startswith("QuaLA student int8")
    teacher_dims = EncoderDims.from_model(load_model(ctx.outputs["0-finetune"]["model_dir"]).model)
    assert report["rows"][0]["flops"] == config_flops(None, 16, teacher_dims)
    pick_row = report["rows"][3]
    assert pick_row["length_config"] == chosen and pick_row["seq_len"] == 16
    for row in report["rows"]:
        assert row["latency_ms_bs1"] > 0 and row["throughput_bs32"] > 0 and 0 <= row["metric_value"] <= 1
    same = [r for r in report["front"] if r["length_config"] == chosen]
    assert same and same[0]["metric_value"] == pick_row["metric_value"]  # one graph, one config, one split
    assert same[0]["latency_ms_bs1"] == pick_row["latency_ms_bs1"] and same[0]["throughput_bs32"] > 0
    assert len(report["front"]) == len(read_json(ctx.outputs["3-search"]["front_json"])["front"])
    assert all(r["truncation_metric_value"] is not None for r in report["front"])
    assert all(0 < r["p_value"] <= 1 and r["test"] == "mcnemar" for r in report["front"])  # same dev examples
    summary = report["lengthdrop_vs_truncation"]
    assert summary["configs"] == len(report["front"])
    assert summary["lengthdrop_better_significant"] == sum(
        r["p_value"] < 0.05 and r["metric_value"] > r["truncation_metric_value"] for r in report["front"]
    )
    ranking = report["rank_correlation_search_dev"]
    assert ranking["points"] == len(report["front"])
    assert ranking["spearman"] is None or -1 <= ranking["spearman"] <= 1
    assert out["rank_correlation_search_dev"] == ranking
    for key in ("flops", "latency"):
        png = Path(report["plots"][key])
        assert png.parent == ctx.run_dir and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (ctx.run_dir / "report.md").read_text().count("| QuaLA student int8") == 1


def test_another_budget_replays_the_search(run, tmp_path) -> None:
    raw, run_dir = _copy_run(run, tmp_path)
    front = read_json(run_dir / "search" / "front.json")
    budget = front["full"]["flops"] * 10  # everything fits: the most accurate point
    raw["stages"] = raw["stages"][:4]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["compress", str(path), "--run-dir", str(run_dir), "--max-flops", str(budget)]) == 0
    new = read_json(run_dir / "search" / "front.json")
    assert new["search"]["new_evaluations"] == 0 and new["budget"]["max_flops"] == budget
    assert new["selected"]["length_config"] == new["front"][-1]["length_config"]
    assert load_length_config(run_dir / "search" / "model").lengths_for(16) == tuple(new["selected"]["length_config"])


def test_impossible_budget_is_a_one_line_error_and_nothing_is_lost(run, tmp_path, capsys) -> None:
    raw, run_dir = _copy_run(run, tmp_path)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    store = (run_dir / "search" / "search.json").read_bytes()
    state = read_json(run_dir / "state.json")
    assert main(["compress", str(path), "--run-dir", str(run_dir), "--max-flops", "1000"]) == 2
    err = _errors(capsys)
    assert len(err) == 1 and err[0].startswith("error: budget 1000 FLOPs is below the cheapest length configuration")
    assert (run_dir / "search" / "search.json").read_bytes() == store
    assert read_json(run_dir / "state.json") == state  # nothing recorded, nothing dropped
    assert main(["compress", str(path), "--run-dir", str(run_dir), "--budget-ms", "1e-6"]) == 2
    assert "is below the cheapest length configuration" in capsys.readouterr().err


def test_store_of_another_model_is_refused(run, tmp_path) -> None:
    from slimformer.stages.search import SearchStageConfig, run_search

    raw, ctx = run
    out = tmp_path / "search"
    out.mkdir()
    shutil.copy(ctx.run_dir / "search" / "search.json", out / "search.json")
    cfg = SearchStageConfig(task="sst2", data=raw["data"], measure_latency=False, **raw["stages"][3]["search"])
    with pytest.raises(ConfigError, match=r"^search store .* was written for another search setup: model="):
        run_search(cfg, ctx.outputs["1-distill"]["model_dir"], out)


@pytest.mark.parametrize(
    ("distill", "match"),
    [
        ({"student_layers": [0, 5]}, r"layer 5 is outside the teacher's layers 0..2"),
        ({"student_layers": [0, 1, 2, 3]}, r"has 4 layers but the teacher has only 3"),
        ({"student_layers": [0, 2], "layer_map": {0: 0, 1: 7}}, r"teacher layer 7 is outside the teacher's layers"),
    ],
)
def test_bad_student_through_the_recipe(run, tmp_path, capsys, distill, match) -> None:
    raw, run_dir = _copy_run(run, tmp_path)
    raw["stages"] = raw["stages"][:2]
    raw["stages"][1]["distill"] = {**raw["stages"][1]["distill"], **distill}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["compress", str(path), "--run-dir", str(run_dir)]) == 2
    err = _errors(capsys)
    assert len(err) == 1 and re.search(match, err[0])
    assert read_json(run_dir / "state.json")["stages"][0]["name"] == "finetune"  # the teacher is kept
    assert (run_dir / "finetune" / "model.safetensors").is_file()


def test_results_file_from_the_run(run, tmp_path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("quala_bench", Path(__file__).parents[1] / "benchmarks" / "quala.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    _, ctx = run
    res = bench.build_results(ctx.run_dir, "quala-tiny", "cmd", tmp_path)
    assert (res["benchmark"], res["task"], res["metric"], res["eval_split"]) == (
        "quala-tiny",
        "sst2",
        "accuracy",
        "dev",
    )
    keys = ("length_config", "flops", "runtime", "metric_value", "latency_ms_bs1", "throughput_bs32", "size_mb")
    assert all(k in row for row in res["rows"] for k in (*keys, "seq_len"))
    assert res["training"]["distill"]["student_layers"] == [0, 2] and res["training"]["length"]["max_steps"] == 1
    assert res["training"]["distill"]["train_examples"] == 16 == res["training"]["length"]["train_examples"]
    assert res["search_split"]["examples"] == 24 and res["selected"]["length_config"]
    assert (
        list(res["stage_metrics"]) == ["finetune", "distill", "length"] and res["recipe"] == "recipes/quala-tiny.yaml"
    )
    length_eval = read_json(Path(ctx.outputs["2-length"]["model_dir"]) / "eval_results.json")["metrics"]
    assert res["stage_metrics"]["length"] == length_eval
    assert sorted(res["plots"]) == ["flops", "latency"] and all(Path(p).is_file() for p in res["plots"].values())


def _bench_module(name: str):  # noqa: ANN202 - a benchmarks/ script as a module
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_timing_rounds_of_a_results_files_pick(run, tmp_path) -> None:
    _, ctx = run
    res = _bench_module("quala").build_results(ctx.run_dir, "quala-tiny", "cmd", tmp_path)
    front_json = read_json(ctx.outputs["3-search"]["front_json"])
    other = front_json["full"]  # not the pick
    assert other["length_config"] != res["selected"]["length_config"]
    form = res["search"]["gene_form"]
    # a results file whose pick is not the run folder's last one (two budgets can share a run folder)
    res["selected"] = {
        "length_config": other["length_config"],
        "saved_config": gene_config(other["length_config"], form, front_json["seq_len"]).to_dict(),
    }
    timing = _bench_module("quala_timing").time_run(ctx.run_dir, res, rounds=3, threads=1)
    assert timing["length_config"] == other["length_config"] and timing["rounds"] == 3
    assert set(timing["throughput_bs32"]) == {"teacher fp32", "teacher int8", "pick int8"}
    for spread in [*timing["ratios"].values(), *timing["throughput_bs32"].values(), *timing["latency_ms_bs1"].values()]:
        assert 0 < spread["min"] <= spread["median"] <= spread["max"]


def test_timing_of_run_folders_states_the_speed_targets(run, tmp_path) -> None:
    """``quala_timing.py --run``: the pick and the accuracies from the run's own report.json, the targets judged."""
    _, ctx = run
    out = tmp_path / "targets.json"
    mod = _bench_module("quala_timing")
    assert mod.main(["--run", str(ctx.run_dir), "--out", str(out), "--rounds", "2", "--threads", "1"]) == 0
    res = read_json(out)
    (row,) = res["runs"]
    report = read_json(ctx.outputs["5-length_benchmark"]["report_json"])
    assert row["length_config"] == report["selected"]["length_config"] and row["rounds"] == 2
    teacher = next(r for r in report["rows"] if r["name"] == "teacher fp32")["metric_value"]
    pick = next(r for r in report["rows"] if r["name"].startswith("QuaLA student"))["metric_value"]
    assert row["loss_points"] == round((teacher - pick) * 100, 2)
    assert row["met"]["bs32_vs_teacher_int8"] == (row["ratios"]["bs32 vs teacher int8"]["median"] >= 4.5)
    assert f"--run {ctx.run_dir}" in res["command"] and "loss (points)" in res["rows"][0]


def test_speed_targets_against_hand_computed_cases() -> None:
    targets = _bench_module("quala_timing").targets
    report = {
        "task": "squad",
        "rows": [
            {"name": "teacher fp32", "metric_value": 80.0},
            {"name": "teacher int8 dynamic PTQ (ORT)", "metric_value": 79.5},
            {"name": "QuaLA student int8 dynamic PTQ, length config (1, 2)", "metric_value": 79.2},
        ],
    }
    ratios = {"bs32 vs teacher int8": {"median": 1.6}, "bs32 vs teacher fp32": {"median": 7.9}}
    got = targets({"ratios": ratios}, report)
    assert got["loss_points"] == 0.8  # F1 is in points
    assert got["met"] == {"bs32_vs_teacher_int8": True, "bs32_vs_teacher_fp32": False, "loss": True}
    report["task"], report["rows"][0]["metric_value"], report["rows"][2]["metric_value"] = "sst2", 0.889, 0.876
    got = targets({"ratios": ratios}, report)
    assert got["loss_points"] == 1.3  # accuracy is a fraction: 1.3 points
    assert got["met"]["loss"] is False and got["targets"]["bs32_vs_teacher_int8"] == 4.5
    assert "pick_graph_met" not in got  # no pick graph timed
    ratios |= {"pick graph bs32 vs teacher int8": {"median": 4.6}, "pick graph bs32 vs teacher fp32": {"median": 13.9}}
    graph = {"dev": {"metric": {"any graph": 0.876, "pick graph": 0.880}}}
    got = targets({"ratios": ratios, "pick_graph": graph}, report)
    assert got["pick_graph_loss_points"] == 0.9 and got["loss_points"] == 1.3  # its own dev metric
    assert got["pick_graph_met"] == {"bs32_vs_teacher_int8": True, "bs32_vs_teacher_fp32": False, "loss": True}


def test_pipeline_without_a_length_stage_searches_the_distilled_student(run, tmp_path) -> None:
    """recipes/quala-sst2-truncation.yaml's shape: every configuration is plain truncation of the student."""
    raw, run_dir = _copy_run(run, tmp_path)
    raw["stages"] = [s for s in raw["stages"] if next(iter(s)) != "length"]
    with pytest.raises(ConfigError, match="search store .* was written for another search setup"):
        run_recipe(parse_recipe(raw), run_dir=run_dir, log=lambda s: None)  # the LengthDrop model's store
    shutil.rmtree(run_dir / "search")
    ctx = run_recipe(parse_recipe(raw), run_dir=run_dir, log=lambda s: None)
    front = read_json(ctx.outputs["2-search"]["front_json"])
    assert front["searched_model"] == ctx.outputs["1-distill"]["model_dir"] and front["front"]
    report = read_json(run_dir / "report.json")
    names = [r["name"] for r in report["rows"]]
    assert names[:2] == ["teacher fp32", "teacher int8 dynamic PTQ (ORT)"] and len(names) == 3
    assert report["lengthdrop_vs_truncation"] is None  # nothing to compare: the searched model is the plain one
    assert [a["stage"] for a in load_model(ctx.outputs["2-search"]["model_dir"]).meta.applied] == [
        "finetune",
        "distill",
        "search",
    ]


def test_results_overrides_need_a_variant_name(capsys) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("quala_bench", Path(__file__).parents[1] / "benchmarks" / "quala.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with pytest.raises(SystemExit) as exc:  # would overwrite the recipe's own results file with an ablation
        bench.main(["sst2", "--set", "stages.2.length.teacher_weight=0"])
    assert exc.value.code == 2 and "name the result with --variant" in capsys.readouterr().err


def test_latency_cost_search_and_budget_ms_pick(run, tmp_path) -> None:
    from slimformer.stages.search import SearchStageConfig, run_search

    raw, ctx = run
    options = {**raw["stages"][3]["search"], "cost": "latency", "budget_ms": 1e3}
    cfg = SearchStageConfig(task="sst2", data=raw["data"], **options)
    out = run_search(cfg, ctx.outputs["2-length"]["model_dir"], tmp_path / "search")
    front = read_json(out["front_json"])
    store = {tuple(r["config"]): r for r in read_json(out["store"])["records"]}
    assert front["cost_name"].startswith("ort-int8-dynamic-ms-bs1-N16-")
    dims = EncoderDims.from_model(load_model(out["searched_model_dir"]).model)
    for p in front["front"]:
        assert p["latency_ms"] == store[tuple(p["length_config"])]["cost"]  # the search's cost, not re-measured
        assert p["flops"] == config_flops(p["length_config"], 16, dims)
    assert front["selected"]["length_config"] == front["front"][-1]["length_config"]  # every point fits 1 s
    assert front["search"]["cost_bounds"][0] < front["search"]["cost_bounds"][1]


def test_pick_graph_export_and_its_report(run, tmp_path) -> None:
    """``export: {length_graph: pick}``: the deployed graph selects only where the pick drops tokens; the report
    times that graph for the pick and re-scores the front on a graph that serves every configuration."""
    import onnx

    raw, run_dir = _copy_run(run, tmp_path)
    stage = raw["stages"][4]["export"]
    raw["stages"][4]["export"] = {**stage, "length_graph": "pick"}
    ctx = run_recipe(parse_recipe(raw), run_dir=run_dir, log=lambda s: None)
    chosen = gene_config(
        ctx.outputs["3-search"]["length_config"], read_json(ctx.outputs["3-search"]["front_json"])["gene_form"], 16
    )
    pick_graph = ctx.outputs["4-export"]["onnx_int8"]
    meta = {p.key: p.value for p in onnx.load(pick_graph).metadata_props}
    assert json.loads(meta["slimformer.length_select_layers"]) == list(chosen.selecting_layers())
    report = read_json(ctx.outputs["5-length_benchmark"]["report_json"])
    assert (run_dir / "length_benchmark" / "front-onnx" / "model.int8.onnx").is_file()
    pick_row = next(r for r in report["rows"] if r["name"].startswith("QuaLA student int8"))
    same = [r for r in report["front"] if r["length_config"] == pick_row["length_config"]]
    assert same and same[0]["metric_value"] == pick_row["metric_value"]  # same selections, other graph
    assert len(report["front"]) == len(read_json(ctx.outputs["3-search"]["front_json"])["front"])


def test_timing_of_the_pick_graph(run, tmp_path) -> None:
    """``quala_timing.py --pick-graph``: the pick exported with ``length_graph: pick`` is timed beside the any-graph."""
    _, run_dir = _copy_run(run, tmp_path)
    out = tmp_path / "targets.json"
    argv = ["--run", str(run_dir), "--out", str(out), "--rounds", "2", "--threads", "1", "--pick-graph"]
    assert _bench_module("quala_timing").main(argv) == 0
    (row,) = read_json(out)["runs"]
    assert "pick int8 (pick graph)" in row["throughput_bs32"]
    assert {"pick graph bs32 vs teacher int8", "pick graph bs32 vs any graph"} <= set(row["ratios"])
    graph = row["pick_graph"]
    assert (run_dir / "length_benchmark" / "pick-graph-onnx" / "model.int8.onnx").is_file()
    form = read_json(run_dir / "search" / "front.json")["gene_form"]
    assert graph["select_layers"] == list(gene_config(row["length_config"], form, 16).selecting_layers())
    assert graph["max_abs_diff_vs_any_graph"] < 1e-3  # the same selections, fewer ops
    dev = graph["dev"]
    assert set(dev["metric"]) == {"any graph", "pick graph"} and dev["examples"] > 0
    assert 0 < dev["p_value"] <= 1 and dev["test"] == "mcnemar"
    assert set(row["pick_graph_met"]) == set(row["met"]) and "pick graph targets met" in read_json(out)["rows"][0]
