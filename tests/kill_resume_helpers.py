"""The kill-and-resume harness shared by ``tests/test_kill_resume.py`` and ``benchmarks/reliability.py``.

A tiny recipe (random 3-layer encoder, 48 SST-2-like rows) with every kind of stage an interruption can hit:
``finetune`` and ``length`` (Trainer checkpoints every 2 of 4 steps), ``search`` (a replayed store), ``export``
(ONNX + int8 PTQ) and ``length_benchmark`` (report files and plots). It runs in a subprocess through the CLI
(``slimformer compress RECIPE --run-dir DIR``); :data:`KILL_POINTS` name the places where
``SLIMFORMER_KILL_AT`` (:mod:`slimformer._faults`) makes the process SIGKILL itself.

Not a test module (no ``test_`` prefix): plain functions, importable without pytest fixtures.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

#: ``(point name, what is interrupted)``: in the order a run reaches them (a kill at each, then the same command).
KILL_POINTS: list[tuple[str, str]] = [
    ("finetune:after-checkpoint", "fine-tuning, after its first Trainer checkpoint (step 2 of 4)"),
    ("finetune:before-state", "fine-tuning done and saved, state.json not yet updated"),
    ("length:after-checkpoint", "LengthDrop training, after its first checkpoint (step 2 of 4)"),
    ("search:after-store#3", "search, after the store recorded 3 evaluated candidates"),
    ("export:before-rename", "ONNX export: the graph complete under its temporary name, not renamed into place"),
    ("quantize:before-rename", "int8 PTQ: the int8 graph complete under its temporary name, not renamed"),
    ("export:before-state", "export and int8 done, state.json not yet updated"),
    ("plot:before-rename", "report: a Pareto plot drawn under its temporary name"),
    ("report:after-json", "report: report.json written, report.md not yet"),
]

_TRAIN = {
    "learning_rate": 1e-3,
    "max_steps": 4,
    "save_steps": 2,
    "batch_size": 4,
    "max_train_examples": 16,
    "logging_steps": 1,
}
_SEARCH = {
    "search_examples": 16,
    "search_min_words": 0,
    "gene_form": "ratios",
    "population": 4,
    "mutation_size": 2,
    "crossover_size": 2,
    "iterations": 2,
    "latency_warmup": 0,
    "latency_iters": 1,
    "progress": False,
}
STAGES: list[dict[str, Any]] = [
    {"finetune": {**_TRAIN, "max_seq_length": 16, "max_eval_examples": 8}},
    {"distill": {"max_steps": 2, "batch_size": 8, "max_train_examples": 16, "student_layers": [0, 2]}},
    {"length": {**_TRAIN, "num_sandwich": 1}},
    {"search": _SEARCH},
    {"export": {"int8": "dynamic"}},
    {
        "length_benchmark": {
            "max_eval_examples": 8,
            "warmup": 0,
            "iters": 1,
            "iters_bs32": 1,
            "rounds": 1,
            "min_time_s": 0.0,
            "threads": 1,
        }
    },
]


def build_recipe(root: Path) -> Path:
    """Write the tiny encoder, the data and the recipe under ``root``; returns the recipe file."""
    from transformers import BertTokenizerFast

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from conftest import tiny_vocab, write_sst2
    from quala_helpers import sst2_rows, tiny_encoder_dir

    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.txt").write_text("\n".join(tiny_vocab()) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab=str(root / "vocab.txt"), do_lower_case=True)
    data = write_sst2(root, sst2_rows(48), sst2_rows(12, seed=1))
    model = tiny_encoder_dir(root, tok)
    raw = {"name": "kill-tiny", "task": "sst2", "model": str(model), "data": str(data), "stages": STAGES}
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def run_compress(recipe: Path, run_dir: Path, kill_at: str | None = None, timeout: float = 600) -> int:
    """``slimformer compress recipe --run-dir run_dir`` in a subprocess (one thread); its return code (-9: killed).

    ``kill_at`` sets ``SLIMFORMER_KILL_AT``. Output goes to ``run_dir``'s sibling ``<name>.log`` (appended).
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("SLIMFORMER_KILL_AT", None)
    if kill_at is not None:
        env["SLIMFORMER_KILL_AT"] = kill_at
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    cli = "import sys; from slimformer.cli import main; sys.exit(main())"
    cmd = [sys.executable, "-c", cli, "compress", str(recipe), "--run-dir", str(run_dir)]
    log = run_dir.parent / f"{run_dir.name}.log"
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"\n$ SLIMFORMER_KILL_AT={kill_at or ''} {' '.join(cmd)}\n")
        f.flush()
        return subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode


KILLED = -signal.SIGKILL


def metrics_of(run_dir: Path) -> dict[str, Any]:
    """Everything of a finished run that must not depend on an interruption: each stage's metrics, the search pick
    and its metrics, the report's non-timing figures (accuracy of every row, int8 included), the sha256 of every
    trained model's weights (a resumed training must give the same bits). Timings, sizes and paths are left out;
    the run folder's own path is written ``<run>``."""
    state = json.loads((run_dir / "state.json").read_text(encoding="utf-8"))
    out: dict[str, Any] = {}
    for rec in state["stages"]:
        outputs = rec.get("outputs", {})
        out[rec["name"]] = {k: v for k, v in outputs.items() if _is_metric_key(k)}
    front = run_dir / "search" / "front.json"
    if front.is_file():
        out["front.json"] = _strip(json.loads(front.read_text(encoding="utf-8")))
    for stage in ("finetune", "distill", "length", "search/model"):  # the trained weights, bit for bit
        weights = run_dir / stage / "model.safetensors"
        if weights.is_file():
            out[f"{stage}/model.safetensors sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    report = run_dir / "report.json"
    if report.is_file():
        rep = json.loads(report.read_text(encoding="utf-8"))
        out["report.rows"] = [_strip(r) for r in rep.get("rows", [])]
    text = json.dumps(out, sort_keys=True).replace(str(run_dir), "<run>")  # paths in notes name the run folder
    return json.loads(text)


_TIMING_WORDS = ("latency", "ms", "seconds", "time", "speed", "size_mb", "_s", "throughput", "machine", "path")


def _is_metric_key(key: str) -> bool:
    return key in ("metrics", "pick", "chosen", "config", "max_abs_diff", "int8") or "metric" in key


#: Counts of what a resumed run did again or replayed (the search's evaluations new to this process): they differ by
#: design after an interruption, and are no result.
_BOOKKEEPING = {"new_evaluations"}


def _timing_key(key: str) -> bool:
    k = key.lower()
    if k in _BOOKKEEPING:
        return True
    return any(w in k for w in _TIMING_WORDS) or k.endswith("_dir") or k.endswith("onnx") or "file" in k


def _strip(obj: Any) -> Any:
    """``obj`` without timing, size, machine and path fields (recursively)."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not _timing_key(str(k))}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def leftovers(run_dir: Path) -> list[str]:
    """Temporaries and partial folders under ``run_dir``: dot-prefixed names (``.x.slimtmp-*``, ``.x.slimold-*``),
    ``*.tmp`` files, ``*.checkpoints`` training folders."""
    bad = []
    for p in run_dir.rglob("*"):
        name = p.name
        if name.startswith(".") or name.endswith(".tmp") or name.endswith(".checkpoints") or "slimtmp" in name:
            bad.append(str(p.relative_to(run_dir)))
    return sorted(bad)


def stages_done(run_dir: Path) -> bool:
    """Whether ``state.json`` records every stage of the recipe as done."""
    state = json.loads((run_dir / "state.json").read_text(encoding="utf-8"))
    names = [next(iter(s)) for s in STAGES]
    recs = state.get("stages", [])
    return [r.get("name") for r in recs] == names and all(r.get("status") == "done" for r in recs)
