"""The two-process harness shared by ``tests/test_multiprocess.py`` and ``benchmarks/reliability.py``.

A tiny recipe (random 2-layer encoder without dropout, 64 SST-2-like rows) with every training stage that runs
data-parallel (``finetune``, ``distill``, ``length``, ``qat``) and the stages that run once on the main process
(``evaluate``, ``export``, ``quantize``). :func:`run_compress` launches it through the CLI on one process, or on
``P`` with the README's command, ``accelerate launch --multi_gpu --num_processes P -m slimformer.cli compress ...``
(gloo on CPU).

Not a test module (no ``test_`` prefix): plain functions, importable without pytest fixtures.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

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
#: The stages that train (data-parallel on several processes) and write a model folder.
TRAINED = ("finetune", "distill", "length", "qat")
#: Dev sentences: a float-reduction difference may flip one of them.
DEV_ROWS = 24


def _rows(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = rng.choices(WORDS, k=rng.randint(2, 9))
        label = int(any(w in ("good", "great", "fine", "fun") for w in words))
        rows.append(f"{' '.join(words)}\t{label}")
    return rows


def build_recipe(root: Path) -> Path:
    """Write the tiny encoder, the data and the recipe under ``root``; returns the recipe file."""
    from transformers import BertTokenizerFast

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from conftest import make_tiny_model, tiny_vocab, write_sst2

    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.txt").write_text("\n".join(tiny_vocab()) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab=str(root / "vocab.txt"), do_lower_case=True)
    model = root / "tiny-bert"
    make_tiny_model("none").hf.save_pretrained(model)
    tok.save_pretrained(model)
    data = write_sst2(root, _rows(64, 0), _rows(DEV_ROWS, 1))
    raw = {"name": "mp", "task": "sst2", "model": str(model), "data": str(data), "seed": 3, "stages": STAGES}
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def launch_command(processes: int, port: int | None = None) -> list[str]:
    """The command prefix that starts ``slimformer`` on ``processes`` processes (the README's, for P > 1)."""
    if processes == 1:
        return [sys.executable, "-m", "slimformer.cli"]
    port = port or 29500 + os.getpid() % 1000
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",  # Accelerate's multi-process launcher; without GPUs the processes use gloo on CPU
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
        "-m",
        "slimformer.cli",
    ]


def run_compress(recipe: Path, run_dir: Path, processes: int, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``slimformer compress recipe --run-dir run_dir`` on ``processes`` processes (one thread each)."""
    cmd = [*launch_command(processes), "compress", str(recipe), "--run-dir", str(run_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def stage_records(run_dir: Path) -> list[dict[str, Any]]:
    """The stage records of ``run_dir/state.json``."""
    from slimformer.io import read_json

    return read_json(run_dir / "state.json")["stages"]


def metrics(run_dir: Path) -> dict[str, dict[str, float]]:
    """``{stage: metrics}`` of every stage that recorded metrics."""
    return {s["name"]: s["outputs"]["metrics"] for s in stage_records(run_dir) if "metrics" in s["outputs"]}


def max_weight_difference(a: Path, b: Path) -> float:
    """Largest absolute difference between the weights of two model folders of the same architecture."""
    import slimformer.stages  # noqa: F401  (registers the weight formats of quantized folders)
    from slimformer.checkpoint import load_model

    wa, wb = load_model(a).model.state_dict(), load_model(b).model.state_dict()
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)
