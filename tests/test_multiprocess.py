"""A recipe launched on two processes (``accelerate launch --multi_gpu --num_processes 2``; gloo on CPU).

The training stages (finetune, distill, length, qat) train data-parallel with the recipe's batch as the global
batch; everything else runs once, on the main process. The run must finish, write each artefact once (one log of
each stage, complete model folders, one state.json), and reach the single-process run's metrics and weights
(dropout is off in the tiny encoder, so the only differences are the order of floating-point reductions).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import slimformer.stages  # noqa: F401  (registers the weight formats of quantized folders)
from conftest import make_tiny_model, write_sst2
from slimformer.checkpoint import load_model
from slimformer.io import read_json

pytest.importorskip("onnxruntime")

WORDS = ["good", "bad", "great", "awful", "fine", "boring", "fun", "terrible", "movie", "film", "the", "a"]
TRAIN = {"max_steps": 4, "batch_size": 8, "logging_steps": 1, "max_seq_length": 16, "save_steps": 2}
STAGES: list[dict[str, Any]] = [
    {"finetune": TRAIN},
    {"distill": {**TRAIN, "student_layers": [0]}},
    {"length": {**TRAIN, "num_sandwich": 1, "layer_drop_prob": 0.0}},
    {"evaluate": {}},
    {"export": {}},
    {"quantize": {"mode": "dynamic"}},
    {"qat": {**TRAIN, "weight_quantizer": "uniform", "weight_bits": 8}},
]


def _rows(n: int, seed: int) -> list[str]:
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = rng.choices(WORDS, k=rng.randint(2, 9))
        label = int(sum(w in ("good", "great", "fine", "fun") for w in words) >= 1)
        rows.append(f"{' '.join(words)}\t{label}")
    return rows


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> Path:
    tmp = tmp_path_factory.mktemp("multiprocess")
    model = tmp / "tiny-bert"
    make_tiny_model("none").hf.save_pretrained(model)
    tiny_tokenizer.save_pretrained(model)
    data = write_sst2(tmp, _rows(64, 0), _rows(24, 1))
    raw = {"name": "mp", "task": "sst2", "model": str(model), "data": str(data), "seed": 3, "stages": STAGES}
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _compress(recipe: Path, run_dir: Path, processes: int) -> subprocess.CompletedProcess[str]:
    cli = ["-m", "slimformer.cli", "compress", str(recipe), "--run-dir", str(run_dir)]
    if processes == 1:
        cmd = [sys.executable, *cli]
    else:  # the README's command; --multi_gpu selects Accelerate's multi-process launcher (gloo without GPUs)
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes)]
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port"]
        cmd += [str(29500 + os.getpid() % 1000), *cli]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def runs(recipe: Path) -> dict[int, tuple[Path, subprocess.CompletedProcess[str]]]:
    out = {}
    for processes in (1, 2):
        run_dir = recipe.parent / f"run-{processes}"
        proc = _compress(recipe, run_dir, processes)
        assert proc.returncode == 0, f"{processes} process(es): exit {proc.returncode}\n{proc.stderr[-3000:]}"
        out[processes] = (run_dir, proc)
    return out


def _stages(run_dir: Path) -> list[dict[str, Any]]:
    return read_json(run_dir / "state.json")["stages"]


def test_two_processes_really_ran(runs) -> None:
    """Every training stage records the processes it trained on: 2 under the launcher, 1 without."""
    for processes, (run_dir, _) in runs.items():
        state = _stages(run_dir)
        assert [s["name"] for s in state] == [next(iter(s)) for s in STAGES]
        assert all(s["status"] == "done" for s in state)
        trained = {s["name"]: s["outputs"].get("processes") for s in state if s["name"] in ("finetune", "qat")}
        assert trained == {"finetune": processes, "qat": processes}


def test_each_stage_runs_once_and_writes_complete_folders(runs) -> None:
    run_dir, proc = runs[2]
    for i, entry in enumerate(STAGES):
        name = next(iter(entry))
        line = f"[{i + 1}/{len(STAGES)}] {name}: running"
        assert proc.stdout.count(line) == 1, f"{line!r} printed {proc.stdout.count(line)} times"
    for name in ("finetune", "distill", "length", "qat"):
        folder = run_dir / name
        assert (folder / "model.safetensors").is_file() or any(folder.glob("*.safetensors")), f"{name}: no weights"
        load_model(folder)  # complete and loadable
        assert not (run_dir / f"{name}.checkpoints").exists() and not (run_dir / f"{name}.trainer").exists()
    leftovers = [p for p in run_dir.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert not leftovers, f"temporary files left behind: {leftovers}"


def test_two_processes_reach_the_single_process_metrics_and_weights(runs) -> None:
    one, two = _stages(runs[1][0]), _stages(runs[2][0])
    for a, b in zip(one, two, strict=True):
        if "metrics" in a["outputs"]:
            ma, mb = a["outputs"]["metrics"], b["outputs"]["metrics"]
            for key in ma:
                one_example = 1e-9 + 1 / 24  # a float-reduction difference may flip one of the 24 dev sentences
                assert mb[key] == pytest.approx(ma[key], abs=one_example), f"{a['name']}.{key}: {ma[key]} vs {mb[key]}"
    for name in ("finetune", "distill", "length"):
        w1 = load_model(runs[1][0] / name).model.state_dict()
        w2 = load_model(runs[2][0] / name).model.state_dict()
        worst = max(float((w1[k].float() - w2[k].float()).abs().max()) for k in w1)
        assert worst < 1e-4, f"{name}: weights differ by {worst} between 1 and 2 processes"
