"""Run folders made before the stages/ layout resume without retraining: their recorded stage hashes still match.

The hashes below were computed by the release before the layout change (commit 7c6d4d0) for this recipe. The
layout moved every stage config; only ``finetune``'s identity changed (``save_steps`` / ``save_total_limit``
became run-control, as in the other training stages), and its old hash is accepted as a legacy record. Stages
whose defaults changed deliberately later are listed in ``CHANGED`` with the reason.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from slimformer.recipe import _config_hash, _legacy_hash, parse_recipe, run_recipe
from slimformer.stages import STAGES

RAW = {
    "name": "h",
    "task": "sst2",
    "model": "minilm-l6",
    "data": "glue_data/SST-2",
    "seed": 42,
    "stages": [
        {"embeddings": {"method": "svd", "ratio": 10}},
        {"finetune": {"epochs": 1, "max_train_examples": 100}},
        {"evaluate": {}},
        {"distill": {"student_layers": [1, 3, 5]}},
        {"length": {"epochs": 1}},
        {"qat": {}},
        {"sdq": {}},
        {"search": {}},
        {"export": {"int8": "dynamic"}},
        {"quantize": {}},
        {"benchmark": {}},
        {"length_benchmark": {}},
        {"teacher": {}},
    ],
}
BEFORE = {
    "embeddings": "4fc12bb38682c3ce",
    "finetune": "18b474da9b9fe92c",
    "evaluate": "dbaeb9e1b33c3f6d",
    "distill": "9c384b9110ddfb59",
    "length": "ee60b035b7b73ffc",
    "qat": "583d60b0a6b7c6aa",
    "sdq": "ef14bd1079d4e002",
    "search": "61df02ee672b9d34",
    "export": "d84064f45c880285",
    "quantize": "25457b98c90a311f",
    "benchmark": "149ff87a82b9ffa9",
    "length_benchmark": "a17a1d47eade7a52",
}
#: Stages added since the layout change, with the hash they have had since (pinned when they were added).
ADDED = {"teacher": "5297389169401c62"}
#: Stages whose defaults were changed on purpose since that release, so the identity of a config that leaves them
#: unset changed too (a finished stage of such a config reruns, by design). Their hashes today:
#: - length: ``layer_drop_prob`` defaults to null = by depth (0 up to 4 layers, else 0.2; was 0.2 for every depth).
#:   The sub-models also changed meaning (per-row ratios on the search's grid, not absolute lengths of the batch's
#:   longest row), so a model trained before is not what this release trains: rerunning it is intended.
#: - search: ``search_examples`` 1000 -> 2000 (a search split with power), ``gene_form`` lengths -> ratios (the form
#:   the length stage trains and the ONNX graph runs), ``length_drop_ratio`` 0.2 -> null (the model's recorded
#:   ``length_drop_ratio_bound``, else 0.2: the smallest gene is the trained smallest sub-model). Not in the identity
#:   because it is identity-when-set: ``search_min_words`` unset now means 10 for sst2; nor the max-loss rule (the
#:   lower end of a bootstrap interval).
CHANGED = {
    "length": "3410497368af50e6",
    "search": "e94623e1a275baca",
}


def test_every_built_in_stage_keeps_its_resume_hash() -> None:
    recipe = parse_recipe(RAW)
    assert {name for name, _ in recipe.stages} == set(STAGES)  # a new stage must be added here with its hash
    for name, cfg in recipe.stages:
        if name in ADDED:
            assert _config_hash(name, cfg) == ADDED[name], name
        elif name == "finetune":
            assert _config_hash(name, cfg) != BEFORE[name]  # save_steps is run-control now
            assert _legacy_hash(name, cfg) == BEFORE[name]
        elif name in CHANGED:
            assert _config_hash(name, cfg) == CHANGED[name] != BEFORE[name], name
        else:
            assert _config_hash(name, cfg) == BEFORE[name], name


def test_a_finetune_recorded_with_the_old_hash_is_not_rerun(tmp_path: Path, monkeypatch) -> None:
    recipe = parse_recipe({**RAW, "stages": [{"finetune": {"epochs": 1, "max_train_examples": 100}}]})
    calls: list[str] = []
    fake = dataclasses.replace(STAGES["finetune"], handler=lambda ctx, cfg: calls.append("ran") or {}, check=None)
    monkeypatch.setitem(STAGES, "finetune", fake)
    state = {
        "recipe": "h",
        "stages": [{"name": "finetune", "hash": BEFORE["finetune"], "status": "done", "outputs": {}}],
    }
    (tmp_path / "state.json").write_text(json.dumps(state))
    run_recipe(recipe, run_dir=tmp_path, log=lambda s: None)
    assert calls == []
    # changing only the checkpoint cadence does not rerun it either (run-control), a real change does
    changed = parse_recipe({**RAW, "stages": [{"finetune": {"epochs": 1, "max_train_examples": 100, "save_steps": 7}}]})
    run_recipe(changed, run_dir=tmp_path, log=lambda s: None)
    assert calls == []
    other = parse_recipe({**RAW, "stages": [{"finetune": {"epochs": 2, "max_train_examples": 100}}]})
    run_recipe(other, run_dir=tmp_path, log=lambda s: None)
    assert calls == ["ran"]
