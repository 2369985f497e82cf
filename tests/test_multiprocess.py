"""A recipe launched on two processes (``accelerate launch --multi_gpu --num_processes 2``; gloo on CPU).

The training stages (finetune, distill, length, qat) train data-parallel with the recipe's batch as the global
batch; everything else runs once, on the main process. The run must finish, write each artefact once (one log of
each stage, complete model folders, one state.json), and reach the single-process run's metrics and weights
(dropout is off in the tiny encoder, so the only differences are the order of floating-point reductions).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import slimformer.stages  # noqa: F401  (registers the weight formats of quantized folders)
from multiprocess_helpers import DEV_ROWS, STAGES, TRAINED, build_recipe, max_weight_difference, metrics, run_compress
from multiprocess_helpers import stage_records as _stages
from slimformer.checkpoint import load_model

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[Path, object]]:
    root = tmp_path_factory.mktemp("multiprocess")
    recipe = build_recipe(root / "assets")
    out = {}
    for processes in (1, 2):
        run_dir = root / f"run-{processes}"
        proc = run_compress(recipe, run_dir, processes)
        assert proc.returncode == 0, f"{processes} process(es): exit {proc.returncode}\n{proc.stderr[-3000:]}"
        out[processes] = (run_dir, proc)
    return out


def test_two_processes_really_ran(runs) -> None:
    """Every training stage records the processes it trained on: 2 under the launcher, 1 without."""
    for processes, (run_dir, _) in runs.items():
        state = _stages(run_dir)
        assert [s["name"] for s in state] == [next(iter(s)) for s in STAGES]
        assert all(s["status"] == "done" for s in state)
        trained = {s["name"]: s["outputs"].get("processes") for s in state if s["name"] in TRAINED}
        assert trained == dict.fromkeys(TRAINED, processes)


def test_each_stage_runs_once_and_writes_complete_folders(runs) -> None:
    run_dir, proc = runs[2]
    for i, entry in enumerate(STAGES):
        name = next(iter(entry))
        line = f"[{i + 1}/{len(STAGES)}] {name}: running"
        assert proc.stdout.count(line) == 1, f"{line!r} printed {proc.stdout.count(line)} times"
    for name in TRAINED:
        folder = run_dir / name
        assert any(folder.glob("*.safetensors")), f"{name}: no weights"
        load_model(folder)  # complete and loadable
        assert not (run_dir / f"{name}.checkpoints").exists() and not (run_dir / f"{name}.trainer").exists()
    leftovers = [p for p in run_dir.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert not leftovers, f"temporary files left behind: {leftovers}"


def test_two_processes_reach_the_single_process_metrics_and_weights(runs) -> None:
    one, two = metrics(runs[1][0]), metrics(runs[2][0])
    assert set(one) == set(two) and {"finetune", "distill", "length", "evaluate", "qat"} <= set(one)
    for stage, values in one.items():
        for key, value in values.items():
            assert two[stage][key] == pytest.approx(value, abs=1e-9 + 1 / DEV_ROWS), f"{stage}.{key}"
    for name in ("finetune", "distill", "length"):
        worst = max_weight_difference(runs[1][0] / name, runs[2][0] / name)
        assert worst < 1e-4, f"{name}: weights differ by {worst} between 1 and 2 processes"
