"""The ``search`` stage's parts: the held-out search split, the budget pick, and their errors."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from conftest import write_sst2
from quala_helpers import sst2_rows
from slimformer.errors import ConfigError
from slimformer.length.search_split import load_search_split, search_split_indices, seen_by_training
from slimformer.length.selection import check_budget, pick
from slimformer.recipe import parse_recipe
from slimformer.stages import training_stages
from slimformer.stages.search import LengthBudget, SearchStageConfig, apply_budget


def _sample(n: int, k: int, seed: int) -> set[int]:  # what tasks/data.py draws for max_train_examples=k
    return set(random.Random(seed).sample(range(n), k))


def test_seen_by_training_replays_capped_draws_and_lists_uncapped_stages() -> None:
    records = [
        {"stage": "finetune", "seed": 42, "max_train_examples": None},
        {"stage": "distill", "seed": 1, "max_train_examples": 10},
        {"stage": "export", "seed": 3},  # not a training stage
        {"stage": "length", "seed": 2, "max_train_examples": 7},
        {"stage": "qat", "seed": 2, "max_train_examples": 500},  # cap above the file size = everything
    ]
    seen, overlaps = seen_by_training(40, records, training_stages=training_stages())
    assert seen == _sample(40, 10, 1) | _sample(40, 7, 2)
    assert overlaps == ["finetune", "qat"]


def test_search_split_is_disjoint_from_every_capped_training_sample(tmp_path, tiny_tokenizer) -> None:
    rows = sst2_rows(30)
    data = write_sst2(tmp_path, rows)
    records = [{"stage": "distill", "seed": 5, "max_train_examples": 12}, {"stage": "length", "max_train_examples": 9}]
    split = load_search_split(
        "sst2",
        data,
        tiny_tokenizer,
        records=records,
        training_stages=training_stages(),
        num_examples=8,
        seed=0,
        max_seq_length=16,
    )
    used = _sample(30, 12, 5) | _sample(30, 9, 42)  # a record without a seed used the default 42
    assert len(split.indices) == 8 and not set(split.indices) & used
    assert split.pool == 30 - len(used) and split.overlaps == []
    assert [e.text_a for e in split.data.examples] == [rows[i].split("\t")[0] for i in split.indices]
    assert [f["labels"] for f in split.data.features] == [int(rows[i].split("\t")[1]) for i in split.indices]
    assert split.data.split == "search"
    with pytest.raises(ConfigError, match=rf"search_examples=20 but only {30 - len(used)} of the 30 training"):
        load_search_split(
            "sst2",
            data,
            tiny_tokenizer,
            records=records,
            training_stages=training_stages(),
            num_examples=20,
            seed=0,
            max_seq_length=16,
        )


def test_a_stage_that_holds_the_search_split_out_leaves_the_search_exactly_those_examples(
    tmp_path, tiny_tokenizer
) -> None:
    """``length``'s ``hold_out``: drawn before training as the search draws it; the search then lands on it."""
    from slimformer.tasks.data import load_train_features

    rows = [f"{' '.join(['word'] * (1 + i % 6))} w{i}\t{i % 2}" for i in range(40)]  # 2..7 words, unique texts
    data = write_sst2(tmp_path, rows)
    distill = {"stage": "distill", "seed": 5, "max_train_examples": 12}
    args = dict(training_stages=training_stages(), num_examples=8, min_words=4)
    held = search_split_indices("sst2", data, records=[distill], seed=3, **args)
    used = _sample(40, 12, 5)
    assert len(held) == 8 and not set(held) & used and all(2 + i % 6 >= 4 for i in held)
    assert (
        held
        == load_search_split("sst2", data, tiny_tokenizer, records=[distill], seed=3, max_seq_length=16, **args).indices
    )

    train = load_train_features("sst2", data, tiny_tokenizer, max_seq_length=16, exclude=held)
    assert [e.text_a for e in train.examples] == [r.split("\t")[0] for i, r in enumerate(rows) if i not in held]
    with pytest.raises(ConfigError, match="max_examples or exclude, not both"):
        load_train_features("sst2", data, tiny_tokenizer, max_examples=10, exclude=held)

    length = {"stage": "length", "seed": 3, "max_train_examples": None, "held_out": held}
    seen, overlaps = seen_by_training(40, [distill, length], training_stages=training_stages())
    assert seen == set(range(40)) - set(held) and overlaps == []  # not an overlap: everything else was seen
    for seed in (0, 3, 11):  # the search's own seed does not matter: the pool is the held-out examples
        split = load_search_split(
            "sst2", data, tiny_tokenizer, records=[distill, length], seed=seed, max_seq_length=16, **args
        )
        assert split.indices == held and split.pool == 8 and split.overlaps == []
    fewer = dict(args, num_examples=5)
    assert set(search_split_indices("sst2", data, records=[distill, length], seed=0, **fewer)) < set(held)
    with pytest.raises(ConfigError, match=r"search_examples=9 but only 8 of the 40"):
        search_split_indices("sst2", data, records=[distill, length], seed=0, **dict(args, num_examples=9))


def test_length_hold_out_is_one_way_to_leave_examples_out_and_hashes_only_when_set() -> None:
    from slimformer.config import identity_dump
    from slimformer.stages.length import LengthStageConfig

    with pytest.raises(ConfigError, match=r"give hold_out \(2000\) or max_train_examples \(500\), not both"):
        parse_recipe(
            {
                "name": "x",
                "task": "sst2",
                "data": "d",
                "stages": [{"length": {"hold_out": 2000, "max_train_examples": 500}}],
            }
        )
    plain = LengthStageConfig(task="sst2", data="x")
    held = LengthStageConfig(task="sst2", data="x", hold_out=2000)
    assert "hold_out" not in identity_dump(plain) and identity_dump(held)["hold_out"] == 2000
    assert "hold_out_min_words" not in identity_dump(held)


def test_search_split_min_words_keeps_only_long_enough_examples(tmp_path, tiny_tokenizer) -> None:
    rows = [f"{' '.join(['word'] * (1 + i % 6))}\t{i % 2}" for i in range(30)]  # 1..6 words
    data = write_sst2(tmp_path, rows)
    records = [{"stage": "distill", "seed": 5, "max_train_examples": 6}]
    used = _sample(30, 6, 5)
    split = load_search_split(
        "sst2",
        data,
        tiny_tokenizer,
        records=records,
        training_stages=training_stages(),
        num_examples=5,
        seed=0,
        max_seq_length=16,
        min_words=4,
    )
    long_unused = [i for i in range(30) if i not in used and 1 + i % 6 >= 4]
    assert split.pool == len(long_unused) and set(split.indices) <= set(long_unused)
    assert all(len(e.text_a.split()) >= 4 for e in split.data.examples)
    assert (
        split.describe()["min_words"] == 4
        and "min_words"
        not in load_search_split(
            "sst2",
            data,
            tiny_tokenizer,
            records=records,
            training_stages=training_stages(),
            num_examples=5,
            seed=0,
            max_seq_length=16,
        ).describe()
    )
    with pytest.raises(ConfigError, match=r"only \d+ of the 30 training examples with at least 6 words"):
        load_search_split(
            "sst2",
            data,
            tiny_tokenizer,
            records=records,
            training_stages=training_stages(),
            num_examples=10,
            seed=0,
            max_seq_length=16,
            min_words=6,
        )


def test_example_words_counts_both_sentences_or_the_question() -> None:
    from slimformer.length.search_split import example_words
    from slimformer.tasks.glue import Example
    from slimformer.tasks.squad import QAExample

    assert example_words(Example("train-0", "two words", "and three more", "1")) == 5
    assert example_words(Example("train-1", "one", None, "0")) == 1
    assert example_words(QAExample("q", "t", "a long context here", "who is it ?", [])) == 4


POINTS = [  # a front, cheapest first (metric on the search split, accuracy fractions)
    {"length_config": [8, 4], "metric": 0.80, "flops": 100.0, "latency_ms": 1.0},
    {"length_config": [12, 8], "metric": 0.885, "flops": 200.0, "latency_ms": 1.5},
    {"length_config": [14, 12], "metric": 0.895, "flops": 300.0, "latency_ms": 2.5},
    {"length_config": [16, 16], "metric": 0.90, "flops": 400.0, "latency_ms": 3.0, "full": True},
]


@pytest.mark.parametrize(
    ("budget", "cost", "task", "expected"),
    [
        ({"max_loss": 1.0}, "flops", "sst2", [14, 12]),  # 0.90 - 0.01 = 0.89: 0.885 is out, 0.895 in
        ({"max_loss": 1.5}, "flops", "sst2", [12, 8]),  # threshold 0.885 reached exactly
        ({"max_loss": 20.0}, "latency", "sst2", [8, 4]),
        ({"max_loss": 0.0}, "flops", "sst2", [14, 12]),  # the full entry itself is not a candidate; 0.895 < 0.9
        ({"budget_ms": 2.0}, "flops", "sst2", [12, 8]),
        ({"budget_ms": 2.5}, "flops", "sst2", [14, 12]),
        ({"max_flops": 250.0}, "latency", "sst2", [12, 8]),
    ],
)
def test_pick(budget, cost, task, expected) -> None:
    if budget == {"max_loss": 0.0}:  # nothing reaches 0.9 among the front points
        with pytest.raises(ConfigError, match=r"^search: no point reaches metric 0.9 .* best available is 0.895"):
            pick(POINTS, LengthBudget(**budget), cost, 0.90, task)
        return
    chosen = pick(POINTS, LengthBudget(**budget), cost, 0.90, task)
    assert chosen["length_config"] == expected and "full" not in chosen
    assert set(budget) <= set(chosen["selected_by"])


def test_max_loss_is_in_f1_points_for_squad() -> None:
    squad = [dict(p, metric=p["metric"] * 100) for p in POINTS]
    assert pick(squad, LengthBudget(max_loss=1.0), "flops", 90.0, "squad")["length_config"] == [14, 12]
    assert pick(squad, LengthBudget(max_loss=1.5), "flops", 90.0, "squad")["length_config"] == [12, 8]


def test_impossible_budgets_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match=r"^search: cost budget 0.5 ms is below every point; the cheapest .* 1 ms$"):
        pick(POINTS, LengthBudget(budget_ms=0.5), "flops", 0.9, "sst2")
    with pytest.raises(ConfigError, match=r"budget 99 FLOPs is below the cheapest length configuration \(8, 4\)"):
        check_budget(99.0, 100.0, (8, 4), "FLOPs")
    check_budget(100.0, 100.0, (8, 4), "FLOPs")  # exactly the smallest is fine


def test_budget_options_are_validated() -> None:
    base = {"name": "x", "task": "sst2", "data": "d"}
    with pytest.raises(ConfigError, match=r"at most one of max_loss, budget_ms, max_flops"):
        parse_recipe({**base, "stages": [{"search": {"max_loss": 1.0, "max_flops": 5}}]})
    with pytest.raises(ConfigError, match=r"search.cost"):
        parse_recipe({**base, "stages": [{"search": {"cost": "macs"}}]})
    with pytest.raises(ConfigError, match=r"budget_ms needs measured latencies"):
        parse_recipe({**base, "stages": [{"search": {"budget_ms": 3, "measure_latency": False}}]})
    recipe = parse_recipe({**base, "stages": [{"search": {"max_loss": 2.0}}]})
    cfg = recipe.stages[0][1]
    assert isinstance(cfg, SearchStageConfig) and cfg.budget() == LengthBudget(max_loss=2.0)
    assert SearchStageConfig(task="sst2", data="d").budget() == LengthBudget(max_loss=1.0)  # the default pick
    new = apply_budget(recipe, LengthBudget(budget_ms=4.0)).stages[0][1]
    assert (new.max_loss, new.budget_ms, new.max_flops) == (None, 4.0, None) and cfg.max_loss == 2.0
    with pytest.raises(ConfigError, match=r"need a 'search' stage; recipe x has none"):
        apply_budget(parse_recipe({**base, "stages": [{"evaluate": {}}]}), LengthBudget(max_loss=1.0))
    off = parse_recipe({**base, "stages": [{"search": {"measure_latency": False}}]})
    with pytest.raises(ConfigError, match=r"budget_ms needs measured latencies"):
        apply_budget(off, LengthBudget(budget_ms=4.0))


def test_truncation_summary_by_hand() -> None:
    from slimformer.stages._length_report import truncation_summary

    rows = [
        {"flops": 1.0, "metric_value": 0.8, "truncation_metric_value": 0.7},
        {"flops": 2.0, "metric_value": 0.85, "truncation_metric_value": 0.85},
        {"flops": 3.0, "metric_value": 0.9, "truncation_metric_value": 0.92},
    ]
    s = truncation_summary(rows)
    assert (s["configs"], s["lengthdrop_better"], s["ties"], s["truncation_better"]) == (3, 1, 1, 1)
    assert s["mean_gain"] == pytest.approx((0.1 + 0.0 - 0.02) / 3) and s["dominates"] is False
    assert s["area_lengthdrop"] == pytest.approx((0.8 + 0.85) / 2)  # staircase over FLOPs 1..3
    assert s["area_truncation"] == pytest.approx((0.7 + 0.85) / 2)
    assert truncation_summary([{"flops": 1.0, "metric_value": 0.8, "truncation_metric_value": None}]) is None


def test_truncation_summary_counts_only_significant_differences_as_claims() -> None:
    from slimformer.stages._length_report import truncation_summary

    rows = [
        {"flops": 1.0, "metric_value": 0.8, "truncation_metric_value": 0.7, "p_value": 0.01},
        {"flops": 2.0, "metric_value": 0.86, "truncation_metric_value": 0.85, "p_value": 0.4},
        {"flops": 3.0, "metric_value": 0.9, "truncation_metric_value": 0.95, "p_value": 0.049},
        {"flops": 4.0, "metric_value": 0.91, "truncation_metric_value": 0.9, "p_value": 0.05},  # not < alpha
    ]
    s = truncation_summary(rows)
    assert (s["lengthdrop_better"], s["truncation_better"]) == (3, 1)  # the raw counts
    assert (s["alpha"], s["lengthdrop_better_significant"], s["truncation_better_significant"]) == (0.05, 1, 1)
    assert truncation_summary(rows, alpha=0.5)["lengthdrop_better_significant"] == 3
    assert "alpha" not in truncation_summary([{k: v for k, v in r.items() if k != "p_value"} for r in rows])


def test_reference_teacher_needs_a_teacher() -> None:
    from slimformer.length.selection import reference_metric

    cfg = SimpleNamespace(loss_reference="teacher", teacher=None, eval_batch_size=8)
    meta = SimpleNamespace(stage=lambda name: None)
    with pytest.raises(ConfigError, match=r"loss_reference: teacher needs teacher"):
        reference_metric(cfg, None, None, meta, None)


@pytest.mark.parametrize("name", ["quala-sst2", "quala-squad"])
def test_quala_recipes_parse_and_keep_the_search_split_held_out(name) -> None:
    from pathlib import Path

    from slimformer.recipe import load_recipe

    recipe = load_recipe(Path(__file__).parents[1] / "recipes" / f"{name}.yaml")
    stages = dict(recipe.stages)
    assert [s for s, _ in recipe.stages] == ["finetune", "distill", "length", "search", "export", "length_benchmark"]
    caps = {stages[s].max_train_examples for s in ("distill", "length")}
    seeds = {stages[s].seed for s in ("distill", "length", "search")}
    assert len(caps) == 1 and None not in caps and len(seeds) == 1  # one capped sample, the rest is searchable
    assert stages["export"].int8 == stages["search"].int8 == "dynamic"
    assert stages["search"].budget() == LengthBudget(max_loss=1.0)


def test_report_needs_the_exported_pick(tmp_path) -> None:
    from slimformer.length import LengthConfig
    from slimformer.stages._length_report import check_pick_graph

    with pytest.raises(ConfigError, match=r"needs an 'export' stage with int8 after 'search'.*has default length"):
        check_pick_graph(None, LengthConfig.from_ratios([0.5, 0.25]))


def test_search_min_words_hashes_only_when_set() -> None:
    from slimformer.config import identity_dump
    from slimformer.recipe import _config_hash

    def cfg(**opts):
        return parse_recipe({"name": "q", "task": "sst2", "data": "x", "stages": [{"search": opts}]}).stages[0][1]

    assert (
        "search_min_words" not in identity_dump(cfg())
        and identity_dump(cfg(search_min_words=8))["search_min_words"] == 8
    )
    assert _config_hash("search", cfg()) != _config_hash("search", cfg(search_min_words=8))


def test_search_defaults_resolve_by_task_and_model() -> None:
    cfg = SearchStageConfig(task="sst2", data="d")
    assert (cfg.search_examples, cfg.gene_form, cfg.search_min_words, cfg.length_drop_ratio) == (
        2000,
        "ratios",
        None,
        None,
    )
    length = {"stage": "length", "length_drop_ratio_bound": 0.3}
    got = cfg.resolved("sst2", [{"stage": "finetune"}, length])
    assert (got.search_min_words, got.length_drop_ratio) == (10, 0.3)  # SST-2: sentences of >= 10 words
    got = cfg.resolved("squad", [{"stage": "distill"}])
    assert (got.search_min_words, got.length_drop_ratio) == (None, 0.2)  # no length record: LAT's 0.2
    set_ = SearchStageConfig(task="sst2", data="d", search_min_words=0, length_drop_ratio=0.25)
    assert (set_.resolved("sst2", [length]).search_min_words, set_.resolved("sst2", [length]).length_drop_ratio) == (
        None,
        0.25,
    )  # 0 = every example; an explicit ratio wins over the model's record
    assert cfg.model_copy(update={"search_min_words": 6}).resolved("sst2", []).search_min_words == 6


def _scores(correct: list[int]):
    import numpy as np

    from slimformer.evaluate import ExampleScores

    return ExampleScores("accuracy", scores=np.asarray(correct, dtype=float))


def test_intervals_and_the_max_loss_pick_on_their_lower_bound() -> None:
    from slimformer.length.selection import add_intervals

    full = [1] * 360 + [0] * 40  # 0.90
    genes = {
        (8, 4): [1] * 330 + [0] * 70,  # 0.825: loses 7.5 points
        (12, 8): [1] * 354 + [0] * 46,  # 0.885: loses 1.5 points, on 6 examples only
        (14, 12): [1] * 358 + [0] * 42,  # 0.895: loses 0.5 point, on 2 examples only
        (16, 16): full,
    }
    points = [
        {"length_config": [8, 4], "metric": 0.825, "flops": 100.0},
        {"length_config": [12, 8], "metric": 0.885, "flops": 200.0},
        {"length_config": [14, 12], "metric": 0.895, "flops": 300.0},
        {"length_config": [16, 16], "metric": 0.90, "flops": 400.0, "full": True},
    ]
    info = add_intervals(points, lambda g: _scores(genes[g]), _scores(full), 0.90, seed=0)
    assert info["resamples"] == 1000 and info["confidence"] == 0.95 and info["seed"] == 0
    for p in points:
        lo, hi = p["metric_ci"]
        assert lo <= p["metric"] <= hi
        dlo, dhi = p["difference_ci"]
        assert dlo <= p["metric"] - 0.90 + 1e-12 and p["metric"] - 0.90 <= dhi + 1e-12
        assert p["metric_lower"] == pytest.approx(0.90 + dlo)
        # paired: the discordant examples alone decide, so the difference interval is narrower than the metric's
        assert dhi - dlo < hi - lo
    # (12, 8) loses the 6 examples it disagrees on: a resample's difference is -(how many of them it drew) / 400,
    # about Poisson(6), whose 2.5% tail starts near 11: lower end about -2.75 points
    assert -0.035 < points[1]["difference_ci"][0] < -0.02 and points[3]["difference_ci"] == [0.0, 0.0]
    # (14, 12) loses 2 examples: Poisson(2), lower end about -5 / 400 = -1.25 points
    assert -0.015 < points[2]["difference_ci"][0] < -0.01
    assert points[3]["p_value"] == 1.0 and points[3]["test"] == "mcnemar"
    assert points[1]["p_value"] == pytest.approx(2 * 0.5**6)  # McNemar exact: 6 discordant pairs, all one way
    # --max-loss 1.0: even 2 lost examples of 400 cannot be shown to cost less than 1 point: the full length
    chosen = pick(points, LengthBudget(max_loss=1.0), "flops", 0.90, "sst2")
    assert chosen["length_config"] == [16, 16] and "full" not in chosen
    assert "rule" in chosen["selected_by"] and chosen["selected_by"]["threshold"] == pytest.approx(0.89)
    # on point estimates (no intervals) 1.5 points would take (12, 8); on lower bounds it takes (14, 12)
    bare = [{k: v for k, v in p.items() if k in ("length_config", "metric", "flops", "full")} for p in points]
    assert pick(bare, LengthBudget(max_loss=1.5), "flops", 0.90, "sst2")["length_config"] == [12, 8]
    assert pick(points, LengthBudget(max_loss=1.5), "flops", 0.90, "sst2")["length_config"] == [14, 12]
    assert pick(points, LengthBudget(max_loss=4.0), "flops", 0.90, "sst2")["length_config"] == [12, 8]


def test_with_intervals_the_full_length_is_the_answer_when_nothing_cheaper_is_shown_to_qualify() -> None:
    from slimformer.length.selection import add_intervals

    full = [1, 0] * 100  # 0.5
    other = [0, 1] * 100  # also 0.5, on the other half: a front point with the full model's metric
    points = [
        {"length_config": [8, 4], "metric": 0.5, "flops": 100.0},
        {"length_config": [16, 16], "metric": 0.5, "flops": 400.0, "full": True},
    ]
    add_intervals(points, lambda g: _scores(other if g == (8, 4) else full), _scores(full), 0.5, seed=1)
    assert points[0]["metric_lower"] < 0.49  # disagrees on every example: a wide paired interval
    chosen = pick(points, LengthBudget(max_loss=1.0), "flops", 0.5, "sst2")
    assert chosen["length_config"] == [16, 16] and "full" not in chosen
    # a teacher reference the full model does not reach: a one-line error naming the lower bounds
    with pytest.raises(ConfigError, match=r"^search: no point reaches metric 0.59 .*lower ends of 95% paired"):
        pick(points, LengthBudget(max_loss=1.0), "flops", 0.6, "sst2")


def test_example_scores_reproduce_the_task_metric(tmp_path, tiny_tokenizer) -> None:
    import numpy as np

    from slimformer.bench.stats import bootstrap_ci
    from slimformer.evaluate import example_scores
    from slimformer.tasks import get_task
    from slimformer.tasks.data import TaskData, compute_task_metrics

    rng = np.random.default_rng(0)
    for task in ("sst2", "cola", "stsb"):
        spec = get_task(task)
        labels = rng.random(50) * 5 if spec.kind == "regression" else rng.integers(0, 2, 50)
        data = TaskData(spec, [{"labels": y} for y in labels], [], "dev")
        outputs = {"logits": rng.normal(size=(50, 1 if spec.kind == "regression" else 2)).astype(np.float32)}
        scores = example_scores(data, outputs)
        assert scores.value() == pytest.approx(compute_task_metrics(data, outputs)["main"], abs=1e-12)
        assert (scores.scores is not None) == (spec.main_metric == "accuracy")
        if scores.scores is not None:
            assert bootstrap_ci(scores.scores)[0] == pytest.approx(scores.value())


def test_example_scores_of_squad_are_per_question_f1(tiny_tokenizer) -> None:
    import numpy as np

    from slimformer.evaluate import example_scores
    from slimformer.tasks import get_task, prepare_eval_features
    from slimformer.tasks.data import TaskData, compute_task_metrics
    from slimformer.tasks.squad import QAExample

    context = "paris is the capital of france and the river is in the city"
    examples = [
        QAExample("q1", "t", context, "what is the capital of france ?", [("paris", 0)]),
        QAExample("q2", "t", context, "what is in the city ?", [("the river", 35)]),
        QAExample("q3", "t", context, "who is it ?", [("france", 24)]),
    ]
    feats = prepare_eval_features(examples, tiny_tokenizer, max_seq_length=96, doc_stride=16)
    rng = np.random.default_rng(1)
    width = max(len(f["input_ids"]) for f in feats)
    outputs = {k: rng.normal(size=(len(feats), width)).astype(np.float32) for k in ("start_logits", "end_logits")}
    data = TaskData(get_task("squad"), feats, examples, "dev")
    scores = example_scores(data, outputs)
    assert scores.scores.shape == (3,) and all(0 <= s <= 100 for s in scores.scores)
    assert scores.value() == pytest.approx(compute_task_metrics(data, outputs)["f1"])


def test_rank_correlation_search_dev_by_hand() -> None:
    from slimformer.stages._length_report import rank_correlation_search_dev

    rows = [
        {"metric_search": 0.80, "metric_value": 0.70},
        {"metric_search": 0.85, "metric_value": 0.74},
        {"metric_search": 0.90, "metric_value": 0.73},
        {"metric_search": 0.95, "metric_value": 0.80},
    ]
    # ranks (1, 2, 3, 4) vs (1, 3, 2, 4): rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert rank_correlation_search_dev(rows) == {"spearman": pytest.approx(0.8), "points": 4}
    assert rank_correlation_search_dev(rows[:1]) == {"spearman": None, "points": 1}
    flat = [dict(r, metric_value=0.7) for r in rows]
    assert rank_correlation_search_dev(flat)["spearman"] is None  # constant dev metric: undefined


def test_search_device_is_run_control() -> None:
    """Scoring on a GPU changes no resume record: a search made on the lent GPU resumes here, on the CPU."""
    from slimformer.config import identity_dump
    from slimformer.recipe import _config_hash

    def cfg(**opts):
        return parse_recipe({"name": "q", "task": "sst2", "data": "x", "stages": [{"search": opts}]}).stages[0][1]

    assert cfg().device == "auto" and "device" not in identity_dump(cfg(device="cpu"))
    assert _config_hash("search", cfg()) == _config_hash("search", cfg(device="cpu"))
    with pytest.raises(ConfigError, match="device"):
        cfg(device="tpu")


#: SST-2-like phrases: two sentences with their sub-phrases, and unrelated rows (index: text)
PHRASES = [
    "the movie was good fun\t1",  # 0
    "movie was good\t1",  # 1: inside 0
    "was good\t1",  # 2: inside 0 and 1
    "a terrible boring film\t0",  # 3
    "terrible boring\t0",  # 4: inside 3
    "good fun time\t1",  # 5: overlaps 0 ("good fun") but neither inside it nor containing it
    "great fun\t1",  # 6
    "the movie was good fun\t1",  # 7: a duplicate of 0
]


def test_context_indices_are_the_phrases_inside_or_around_a_held_out_one(tmp_path) -> None:
    """Hand-computed: held-out 0 takes its sub-phrases and its duplicate; held-out 1 takes the sentences around it
    and the phrase inside it; an overlapping but uncontained phrase stays."""
    from slimformer.length.search_split import context_indices

    data = write_sst2(tmp_path, PHRASES)
    assert context_indices("sst2", data, [0]) == [1, 2, 7]
    assert context_indices("sst2", data, [1]) == [0, 2, 7]
    assert context_indices("sst2", data, [3, 6]) == [4]
    assert context_indices("sst2", data, [5]) == []


def test_context_indices_of_squad_are_the_questions_on_the_same_paragraph(tmp_path) -> None:
    import json

    from slimformer.length.search_split import context_indices

    def qa(qid: str, q: str) -> dict:
        return {"id": qid, "question": q, "answers": [{"text": "Paris", "answer_start": 0}]}

    paras = [
        {"context": "Paris is in France.", "qas": [qa("a", "Where is Paris?"), qa("b", "Is Paris big?")]},
        {"context": "Paris is old.", "qas": [qa("c", "Is Paris old?")]},
    ]
    (tmp_path / "train-v1.1.json").write_text(json.dumps({"data": [{"title": "P", "paragraphs": paras}]}))
    assert context_indices("squad", tmp_path, [0], squad_split="official") == [1]
    assert context_indices("squad", tmp_path, [2], squad_split="official") == []


def test_hold_out_context_needs_hold_out() -> None:
    from slimformer.stages.length import LengthStageConfig

    for stage in ("length", "distill"):
        with pytest.raises(ConfigError, match="hold_out_context: true needs hold_out"):
            parse_recipe({"name": "x", "task": "sst2", "data": "d", "stages": [{stage: {"hold_out_context": True}}]})
    assert LengthStageConfig(task="sst2", data="d", hold_out=3, hold_out_context=True).hold_out_context
