"""Helpers of the QuaLA tests: a tiny 3-layer encoder folder and a tiny finetune -> distill -> length -> search
-> export -> length_benchmark recipe over 48 random SST-2-like rows (every training stage is capped at the same
seeded 16, so 32 stay unused for the search split)."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

from conftest import _WORDS, make_tiny_model, write_sst2

TRAIN = {"max_steps": 1, "batch_size": 8, "max_train_examples": 16, "logging_steps": 1}
SEARCH = {
    "search_examples": 24,
    "search_min_words": 0,  # every held-out row (the sst2 default keeps sentences of >= 10 words only)
    "gene_form": "ratios",  # as recipes/quala-sst2.yaml
    "population": 4,
    "mutation_size": 2,
    "crossover_size": 2,
    "iterations": 3,
    "latency_warmup": 0,
    "latency_iters": 2,
    "progress": False,
}
STAGES: list[dict[str, Any]] = [
    {"finetune": {**TRAIN, "max_seq_length": 16}},
    {"distill": {**TRAIN, "student_layers": [0, 2]}},
    {"length": {**TRAIN, "num_sandwich": 1}},
    {"search": SEARCH},
    {"export": {"int8": "dynamic"}},
    {"length_benchmark": {"warmup": 0, "iters": 2, "iters_bs32": 1, "rounds": 1, "min_time_s": 0.0}},
]


def sst2_rows(n: int, seed: int = 0) -> list[str]:
    """``n`` random ``sentence\tlabel`` rows of 3 to 12 words of the tiny vocabulary (labels random)."""
    rng = random.Random(seed)
    return [f"{' '.join(rng.choices(_WORDS, k=rng.randint(3, 12)))}\t{rng.randint(0, 1)}" for _ in range(n)]


def tiny_encoder_dir(tmp_path: Path, tokenizer: Any, layers: int = 3) -> Path:
    """A tiny random BERT encoder (HF folder) with ``layers`` layers, used as the recipe's ``model``."""
    d = tmp_path / f"tiny-bert-{layers}"
    make_tiny_model("none", num_hidden_layers=layers).hf.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def quala_recipe(tmp_path: Path, tokenizer: Any, upto: str | None = None) -> dict[str, Any]:
    """The raw tiny QuaLA recipe (stages up to and including ``upto``)."""
    data = write_sst2(tmp_path, sst2_rows(48), sst2_rows(12, seed=1))
    stages = copy.deepcopy(STAGES)
    if upto is not None:
        names = [next(iter(s)) for s in stages]
        stages = stages[: names.index(upto) + 1]
    return {
        "name": "quala-tiny",
        "task": "sst2",
        "model": str(tiny_encoder_dir(tmp_path, tokenizer)),
        "data": str(data),
        "stages": stages,
    }
