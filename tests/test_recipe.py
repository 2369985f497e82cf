"""Recipes: validation errors name the key; resolved recipe and state are written; resume skips done stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import SHARED_DATA
from slimformer.config import StageConfig
from slimformer.errors import ConfigError
from slimformer.recipe import STAGES, load_recipe, parse_recipe, register_stage, run_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

BASE = {"name": "t", "task": "sst2", "data": "glue_data/SST-2", "stages": [{"finetune": {"epochs": 1}}]}


def _with(**kw: Any) -> dict[str, Any]:
    d = {**BASE, **kw}
    return d


def test_shipped_recipes_validate() -> None:
    paths = sorted(RECIPES.glob("*.yaml"))
    assert paths, "no recipes shipped"
    for p in paths:
        user_task = isinstance(yaml.safe_load(p.read_text())["task"], dict)  # its files are read when parsed
        if user_task and not SHARED_DATA.is_dir():
            continue
        r = load_recipe(p, data_root=str(SHARED_DATA))
        names = [name for name, _ in r.stages]
        assert "finetune" in names, p.name
        ft = r.stages[names.index("finetune")][1]
        # recipe-level keys are inherited by the finetune stage, or it fine-tunes what an earlier stage wrote
        assert ft.task == r.task and ft.model in (r.model, "previous"), p.name
        assert (ft.model == "previous") == (names.index("finetune") > 0), p.name


def test_unknown_stage_is_named() -> None:
    with pytest.raises(ConfigError, match=r"stages\[1\]: unknown stage 'prune'"):
        parse_recipe(_with(stages=[{"finetune": {}}, {"prune": {}}]), "r.yaml")


def test_unknown_stage_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"r.yaml: stages\[0\].finetune.lerning_rate: unknown key"):
        parse_recipe(_with(stages=[{"finetune": {"lerning_rate": 1e-4}}]), "r.yaml")


def test_bad_value_is_named() -> None:
    with pytest.raises(ConfigError, match=r"stages\[0\].finetune.batch_size"):
        parse_recipe(_with(stages=[{"finetune": {"batch_size": 0}}]), "r.yaml")
    with pytest.raises(ConfigError, match=r"stages\[0\].quantize.mode"):
        parse_recipe(_with(stages=[{"quantize": {"mode": "int4"}}]), "r.yaml")


def test_unknown_top_level_key_and_missing_stages() -> None:
    with pytest.raises(ConfigError, match=r"r.yaml: colour: unknown key"):
        parse_recipe(_with(colour="red"), "r.yaml")
    with pytest.raises(ConfigError, match="stages"):
        parse_recipe({k: v for k, v in BASE.items() if k != "stages"}, "r.yaml")
    with pytest.raises(ConfigError, match="single-key mapping"):
        parse_recipe(_with(stages=[{"finetune": {}, "evaluate": {}}]), "r.yaml")


def test_load_recipe_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.yaml: (recipe )?file not found"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_recipe(bad)


def test_overrides(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(BASE), encoding="utf-8")
    r = load_recipe(p, ["seed=7", "stages.0.finetune.epochs=2.5"])
    assert r.seed == 7 and r.stages[0][1].seed == 7 and r.stages[0][1].epochs == 2.5
    with pytest.raises(ConfigError, match="does not address"):
        load_recipe(p, ["stages.5.finetune.epochs=1"])
    with pytest.raises(ConfigError, match="key=value"):
        load_recipe(p, ["seed"])


class _Cfg(StageConfig):
    value: int = 0
    fail: bool = False


@pytest.fixture
def counting_stage():
    calls: list[int] = []

    @register_stage("_count", _Cfg)
    def handler(ctx, cfg: _Cfg) -> dict[str, Any]:
        if cfg.fail:
            raise RuntimeError("boom")
        calls.append(cfg.value)
        (ctx.stage_dir("_count")).mkdir(parents=True, exist_ok=True)
        return {"value": cfg.value, "seen": ctx.latest("value")}

    yield calls
    STAGES.pop("_count")


def test_run_writes_state_and_resumes(tmp_path: Path, counting_stage: list[int]) -> None:
    raw = _with(stages=[{"_count": {"value": 1}}, {"_count": {"value": 2}}])
    ctx = run_recipe(parse_recipe(raw), run_dir=tmp_path, log=lambda s: None)
    assert counting_stage == [1, 2]
    assert ctx.latest("value") == 2
    assert ctx.outputs["0-_count"]["seen"] is None and ctx.outputs["1-_count"]["seen"] == 1  # earlier outputs visible
    assert (tmp_path / "state.json").is_file() and (tmp_path / "recipe.resolved.yaml").is_file()
    resolved = yaml.safe_load((tmp_path / "recipe.resolved.yaml").read_text())
    assert resolved["stages"][1] == {"_count": {"value": 2, "fail": False}}
    # second run: both stages skipped
    run_recipe(parse_recipe(raw), run_dir=tmp_path, log=lambda s: None)
    assert counting_stage == [1, 2]
    # change the second stage: only it reruns
    raw2 = _with(stages=[{"_count": {"value": 1}}, {"_count": {"value": 3}}])
    run_recipe(parse_recipe(raw2), run_dir=tmp_path, log=lambda s: None)
    assert counting_stage == [1, 2, 3]
    # restart reruns everything
    run_recipe(parse_recipe(raw2), run_dir=tmp_path, restart=True, log=lambda s: None)
    assert counting_stage == [1, 2, 3, 1, 3]


def test_rerun_from_reruns_that_stage_and_later_ones(tmp_path: Path, counting_stage: list[int]) -> None:
    raw = _with(stages=[{"_count": {"value": 1}}, {"_count": {"value": 2}}, {"_count": {"value": 3}}])
    run_recipe(parse_recipe(raw), run_dir=tmp_path, log=lambda s: None)
    assert counting_stage == [1, 2, 3]
    ctx = run_recipe(parse_recipe(raw), run_dir=tmp_path, rerun_from="1", log=lambda s: None)
    assert counting_stage == [1, 2, 3, 2, 3]  # stage 0 reused, 1 and 2 rerun
    assert ctx.outputs["1-_count"]["seen"] == 1  # the reused stage's outputs are visible to the rerun ones
    run_recipe(parse_recipe(raw), run_dir=tmp_path, rerun_from="_count", log=lambda s: None)  # first occurrence
    assert counting_stage == [1, 2, 3, 2, 3, 1, 2, 3]
    before = (tmp_path / "state.json").read_text()
    for bad in ("distill", "3"):
        with pytest.raises(ConfigError, match=rf"rerun from '{bad}': .*no such stage \(stages: 0-_count, 1-_count"):
            run_recipe(parse_recipe(raw), run_dir=tmp_path, rerun_from=bad, log=lambda s: None)
    assert (tmp_path / "state.json").read_text() == before and len(counting_stage) == 8  # nothing ran or lost


def test_failed_stage_keeps_earlier_state(tmp_path: Path, counting_stage: list[int]) -> None:
    raw = _with(stages=[{"_count": {"value": 1}}, {"_count": {"value": 2, "fail": True}}])
    with pytest.raises(RuntimeError):
        run_recipe(parse_recipe(raw), run_dir=tmp_path, log=lambda s: None)
    state = yaml.safe_load((tmp_path / "state.json").read_text())
    assert [s["outputs"]["value"] for s in state["stages"]] == [1]
    # fixing the failing stage resumes after the completed one
    raw["stages"][1]["_count"]["fail"] = False
    run_recipe(parse_recipe(raw), run_dir=tmp_path, log=lambda s: None)
    assert counting_stage == [1, 2]


def test_hostile_recipe_yaml_is_refused_in_one_line(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb.write_text("\n".join(lines) + "\nname: r\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="bomb.yaml") as err:
        load_recipe(bomb)
    assert "\n" not in str(err.value)
    dup = tmp_path / "dup.yaml"
    dup.write_text("name: a\nname: b\ntask: sst2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="dup.yaml.*name"):
        load_recipe(dup)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(_with()), encoding="utf-8")
    with pytest.raises(ConfigError, match="override"):
        load_recipe(good, ["seed=[unclosed"])
