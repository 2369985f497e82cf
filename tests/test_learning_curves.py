"""Learning curves: the dev metric after each epoch of `finetune`, `length` and `distill`, kept across resumes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import TrainerCallback

from conftest import SST2_ROWS, write_sst2
from kd_helpers import save_teacher
from quala_helpers import sst2_rows
from slimformer.checkpoint import load_model
from slimformer.evaluate import evaluate_predictor, torch_predictor
from slimformer.length import LengthConfig
from slimformer.length.evaluate import evaluate_config
from slimformer.recipe import parse_recipe, run_recipe
from slimformer.tasks.data import load_eval_set
from slimformer.train.checkpoints import checkpoint_dir
from slimformer.train.curves import CURVE_FILE, LearningCurve, curve_point, load_curve

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import learning_curves  # noqa: E402

#: 16 training rows, batch 8: 2 optimizer steps per epoch; 24 varied dev rows (the metric is not all-or-nothing).
TRAIN = {"batch_size": 8, "max_seq_length": 16, "logging_steps": 1, "learning_rate": 1e-3}


class Snapshot(TrainerCallback):
    """Copies the weights at the end of every epoch: ``states[global_step]``."""

    def __init__(self) -> None:
        self.states: dict[int, dict[str, torch.Tensor]] = {}

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        self.states[state.global_step] = {k: v.detach().clone() for k, v in model.state_dict().items()}


class StopAfter(TrainerCallback):
    """Raises ``KeyboardInterrupt`` when optimizer step ``step + 1`` begins (a kill between checkpoints)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def _data(tmp_path: Path) -> Path:
    return write_sst2(tmp_path, SST2_ROWS, sst2_rows(24, seed=1))


def _epochs_and_steps(curve: list[dict]) -> list[tuple[float, int]]:
    return [(p["epoch"], p["step"]) for p in curve]


def _with_weights(model_dir: str | Path, state: dict[str, torch.Tensor]):
    loaded = load_model(model_dir)
    loaded.model.load_state_dict(state)
    return loaded


# --- the helper and the callback ----------------------------------------------------------------------------------


def test_load_curve_keeps_the_points_up_to_the_resumed_step(tmp_path: Path) -> None:
    points = [curve_point(e, 2 * e, {"accuracy": 0.5 + e / 10}) for e in (1, 2, 3)]
    (tmp_path / CURVE_FILE).write_text(json.dumps({"points": points}))
    assert load_curve(tmp_path, 6) == points
    assert load_curve(tmp_path, 5) == points[:2]  # the step-6 point is beyond checkpoint-5: redone after resuming
    assert load_curve(tmp_path, 4) == points[:2]  # a checkpoint at the epoch's own step keeps its point
    assert load_curve(tmp_path, 3) == points[:1]
    assert load_curve(tmp_path, 0) == []  # no checkpoint: training starts over, so does the curve
    assert load_curve(tmp_path / "missing", 10) == []
    (tmp_path / CURVE_FILE).write_text("{broken")
    assert load_curve(tmp_path, 10) == []


def test_callback_scores_every_epoch_but_the_last_and_resumes(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    scored: list[bool] = []

    def score(m):
        assert m is model
        m.eval()
        scored.append(m.training)
        return {"accuracy": 0.25 * len(scored)}

    args = SimpleNamespace(output_dir=str(tmp_path))
    curve = LearningCurve(score)
    curve.on_train_begin(args, SimpleNamespace(global_step=0), None)
    for epoch, step in ((1.0, 3), (2.0, 6), (3.0, 9)):
        curve.on_epoch_end(args, SimpleNamespace(epoch=epoch, global_step=step, max_steps=9), None, model=model)
        assert model.training  # put back in train mode after scoring
    curve.on_train_end(args, SimpleNamespace(epoch=3.0, global_step=9), None)
    assert scored == [False, False]  # the last epoch is not scored here
    assert curve.with_final({"accuracy": 0.9}) == [
        {"epoch": 1.0, "step": 3, "metrics": {"accuracy": 0.25}},
        {"epoch": 2.0, "step": 6, "metrics": {"accuracy": 0.5}},
        {"epoch": 3.0, "step": 9, "metrics": {"accuracy": 0.9}},
    ]
    assert json.loads((tmp_path / CURVE_FILE).read_text())["points"] == curve.points

    resumed = LearningCurve(score)  # a new process resuming from checkpoint-5: the step-6 point is dropped
    resumed.on_train_begin(args, SimpleNamespace(global_step=5), None)
    assert resumed.points == [{"epoch": 1.0, "step": 3, "metrics": {"accuracy": 0.25}}]

    off = LearningCurve(score, enabled=False)  # eval_each_epoch: false
    off.on_train_begin(args, SimpleNamespace(global_step=5), None)
    off.on_epoch_end(args, SimpleNamespace(epoch=1.0, global_step=3, max_steps=9), None, model=model)
    off.on_train_end(args, SimpleNamespace(epoch=3.0, global_step=9), None)
    assert len(scored) == 2 and off.with_final({"accuracy": 1.0}) == [curve_point(3.0, 9, {"accuracy": 1.0})]
    with pytest.raises(RuntimeError, match="training has not ended"):
        LearningCurve(score).with_final({})


def test_eval_each_epoch_is_run_control() -> None:
    from slimformer.recipe import _config_hash

    def stage_hash(stage: str, **opts) -> str:
        recipe = parse_recipe({"name": "c", "task": "sst2", "data": "x", "stages": [{stage: opts}]})
        return _config_hash(stage, recipe.stages[0][1])

    for stage in ("finetune", "length", "qat"):
        assert stage_hash(stage, eval_each_epoch=False) == stage_hash(stage), stage


# --- the stages ---------------------------------------------------------------------------------------------------


def test_finetune_records_a_point_per_epoch(tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> None:
    import slimformer.stages.finetune as ft

    data = _data(tmp_path)
    snap = Snapshot()
    monkeypatch.setattr(ft, "kill_callbacks", lambda: [snap])
    cfg = ft.FinetuneConfig(model=str(tiny_model_dir), task="sst2", data=str(data), epochs=2, **TRAIN)
    res = ft.finetune(cfg, tmp_path / "ft")
    curve = res.learning_curve
    assert _epochs_and_steps(curve) == [(1.0, 2), (2.0, 4)] and res.steps == 4
    assert curve[-1]["metrics"] == res.metrics
    assert json.loads((res.model_dir / "eval_results.json").read_text())["learning_curve"] == curve
    assert not checkpoint_dir(res.model_dir).exists()
    # the first point is the dev metric of the weights at the end of epoch 1
    loaded = _with_weights(res.model_dir, snap.states[2])
    dev = load_eval_set("sst2", data, loaded.tokenizer, max_seq_length=16)
    pad = loaded.tokenizer.pad_token_id
    assert curve[0]["metrics"] == evaluate_predictor(
        torch_predictor(loaded.model), dev, batch_size=64, pad_token_id=pad
    )

    off = ft.finetune(cfg.model_copy(update={"eval_each_epoch": False}), tmp_path / "ft-off")
    assert off.learning_curve == [{"epoch": 2.0, "step": 4, "metrics": off.metrics}]
    # scoring between epochs does not change the training: same weights, same final metrics
    assert off.metrics == res.metrics
    a, b = load_model(res.model_dir).model, load_model(off.model_dir).model
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


def test_recipe_records_the_curves_of_finetune_and_length(tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> None:
    import slimformer.stages.length as length_stage

    data = _data(tmp_path)
    snap = Snapshot()
    monkeypatch.setattr(length_stage, "kill_callbacks", lambda: [snap])
    raw = {
        "name": "curves",
        "task": "sst2",
        "model": str(tiny_model_dir),
        "data": str(data),
        "stages": [
            {"finetune": {"epochs": 2, **TRAIN}},
            {"length": {"epochs": 2, "num_sandwich": 1, **TRAIN}},
        ],
    }
    run = tmp_path / "run"
    ctx = run_recipe(parse_recipe(raw), run_dir=run, log=lambda s: None)
    state = {s["name"]: s["outputs"] for s in json.loads((run / "state.json").read_text())["stages"]}
    for name in ("finetune", "length"):
        out = state[name]
        assert _epochs_and_steps(out["learning_curve"]) == [(1.0, 2), (2.0, 4)], name
        assert out["learning_curve"][-1]["metrics"] == out["metrics"], name
        results = json.loads((Path(out["model_dir"]) / "eval_results.json").read_text())
        assert results["learning_curve"] == out["learning_curve"], name
    # length: the per-epoch point is the full-length dev metric of the weights at the end of epoch 1
    loaded = _with_weights(ctx.outputs["1-length"]["model_dir"], snap.states[2])
    dev = load_eval_set("sst2", data, loaded.tokenizer, max_seq_length=16)
    full = evaluate_config(loaded.model, dev, LengthConfig.full(2), pad_token_id=loaded.tokenizer.pad_token_id)
    assert state["length"]["learning_curve"][0]["metrics"] == full
    # benchmarks/learning_curves.py reads the same points back into a results file and a plot
    rows, without = learning_curves.collect(run)
    assert without == []
    assert [(r["stage"], r["epoch"], r["step"]) for r in rows] == [
        ("finetune", 1.0, 2),
        ("finetune", 2.0, 4),
        ("length", 1.0, 2),
        ("length", 2.0, 4),
    ]
    assert rows[-1]["metric"] == "accuracy" and rows[-1]["value"] == state["length"]["metrics"]["accuracy"]
    assert rows[2]["value"] == full["main"]
    assert learning_curves.main(["--run", str(run), "--results-dir", str(tmp_path), "--plots-dir", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "learning-curves.json").read_text())
    assert [r["value"] for r in written["rows"]] == [r["value"] for r in rows]
    assert (tmp_path / "learning-curves.png").stat().st_size > 0
    assert "trained_on" not in written  # read back where it was trained
    where = "the lent GPU machine (H200)"
    argv = ["--run", str(run), "--name", "gpu", "--trained-on", where]
    assert learning_curves.main([*argv, "--results-dir", str(tmp_path), "--plots-dir", str(tmp_path)]) == 0
    gpu = json.loads((tmp_path / "gpu.json").read_text())
    assert gpu["trained_on"] == where and f"--trained-on '{where}'" in gpu["command"]


def test_learning_curves_script_lists_stages_without_a_curve(tmp_path: Path) -> None:
    """A run whose training stages finished before curves were recorded: nothing to plot, and the error says which."""
    run = tmp_path / "old-run"
    run.mkdir()
    outputs = {"model_dir": "m", "metrics": {"accuracy": 0.5, "main": 0.5}}
    stages = [{"name": "finetune", "outputs": outputs}, {"name": "export", "outputs": {"onnx": "x"}}]
    (run / "state.json").write_text(json.dumps({"recipe": {}, "stages": stages}))
    assert learning_curves.collect(run) == ([], ["finetune"])
    with pytest.raises(SystemExit):
        learning_curves.main(["--run", str(run), "--results-dir", str(tmp_path), "--plots-dir", str(tmp_path)])
    assert not (tmp_path / "learning-curves.json").exists()


def test_length_curve_survives_an_interruption(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Stopped after epoch 1's point was written and before any checkpoint held it: the point is dropped on resume,
    scored again, and the finished curve is the uninterrupted one."""
    from slimformer.stages.finetune import FinetuneConfig, finetune
    from slimformer.stages.length import LengthStageConfig, train_length_adaptive

    data = _data(tmp_path)
    ft = finetune(
        FinetuneConfig(model=str(tiny_model_dir), task="sst2", data=str(data), max_steps=1, **TRAIN), tmp_path / "ft"
    )
    cfg = LengthStageConfig(task="sst2", data=str(data), epochs=3, num_sandwich=1, save_steps=3, **TRAIN)
    ref = train_length_adaptive(cfg, ft.model_dir, tmp_path / "ref")
    assert _epochs_and_steps(ref["learning_curve"]) == [(1.0, 2), (2.0, 4), (3.0, 6)]

    with pytest.raises(KeyboardInterrupt):  # during step 3: the epoch-1 point is on disk, no checkpoint yet
        train_length_adaptive(cfg, ft.model_dir, tmp_path / "run", callbacks=[StopAfter(2)])
    ckpt = checkpoint_dir(tmp_path / "run")
    assert load_curve(ckpt, 10) == ref["learning_curve"][:1] and not (ckpt / "checkpoint-3").exists()
    with pytest.raises(KeyboardInterrupt):  # during step 5: checkpoint-3 holds epoch 1, the epoch-2 point is beyond
        train_length_adaptive(cfg, ft.model_dir, tmp_path / "run", callbacks=[StopAfter(4)])
    assert (ckpt / "checkpoint-3").is_dir() and load_curve(ckpt, 10) == ref["learning_curve"][:2]
    resumed = train_length_adaptive(cfg, ft.model_dir, tmp_path / "run")
    assert resumed["learning_curve"] == ref["learning_curve"]

    off = train_length_adaptive(cfg.model_copy(update={"eval_each_epoch": False}), ft.model_dir, tmp_path / "off")
    assert off["learning_curve"] == [{"epoch": 3.0, "step": 6, "metrics": off["metrics"]}]
    assert off["metrics"] == ref["metrics"]


def test_distill_records_a_point_per_epoch(tmp_path: Path, tiny_tokenizer) -> None:
    from slimformer.stages._kd import evaluate_model
    from slimformer.stages.distill import DistillStageConfig, run_distill

    data = _data(tmp_path)
    teacher = save_teacher(tmp_path / "teacher", tiny_tokenizer, data, num_hidden_layers=3)
    cfg = DistillStageConfig(task="sst2", data=str(data), student_layers=[0, 2], epochs=2, **TRAIN)
    snap = Snapshot()
    res = run_distill(cfg, tmp_path / "student", teacher=teacher, callbacks=[snap])
    curve = res["learning_curve"]
    assert _epochs_and_steps(curve) == [(1.0, 2), (2.0, 4)] and curve[-1]["metrics"] == res["metrics"]
    assert json.loads((tmp_path / "student" / "eval_results.json").read_text())["learning_curve"] == curve
    loaded = _with_weights(res["model_dir"], snap.states[2])
    assert curve[0]["metrics"] == evaluate_model(loaded.model, loaded.tokenizer, cfg, teacher_meta=loaded.meta)


@pytest.mark.parametrize("stage", ["qat", "sdq"])
def test_quantized_stages_record_a_point_per_epoch_without_changing_the_training(
    tmp_path: Path, tiny_tokenizer, stage: str
) -> None:
    """The per-epoch point scores the fake-quantized model; Quant-Noise (SDQ) draws the same masks with or without
    it, so the trained weights are those of a run without per-epoch evaluation."""
    from slimformer.stages.qat import QATStageConfig, run_qat
    from slimformer.stages.sdq import SDQStageConfig

    data = _data(tmp_path)
    teacher = save_teacher(tmp_path / "teacher", tiny_tokenizer, data)
    config_cls = SDQStageConfig if stage == "sdq" else QATStageConfig
    cfg = config_cls(task="sst2", data=str(data), epochs=2, **TRAIN)
    res = run_qat(cfg, tmp_path / stage, teacher=teacher)
    assert _epochs_and_steps(res["learning_curve"]) == [(1.0, 2), (2.0, 4)]
    assert res["learning_curve"][-1]["metrics"] == res["metrics"]
    off = run_qat(cfg.model_copy(update={"eval_each_epoch": False}), tmp_path / f"{stage}-off", teacher=teacher)
    assert off["learning_curve"] == [{"epoch": 2.0, "step": 4, "metrics": off["metrics"]}]
    a, b = load_model(res["model_dir"]).model.state_dict(), load_model(off["model_dir"]).model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
