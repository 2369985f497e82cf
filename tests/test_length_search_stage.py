"""The ``search`` stage's parts: the held-out search split, the budget pick, and their errors."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from conftest import write_sst2
from quala_helpers import sst2_rows
from slimformer.errors import ConfigError
from slimformer.length.search_split import load_search_split, seen_by_training
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
