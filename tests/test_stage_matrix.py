"""The stage matrix: every registered stage runs on a tiny encoder inside a recipe; a stage that writes a model
folder saves it, the folder reloads with :func:`slimformer.checkpoint.load_model`, and it exports to ONNX with the
parity check against PyTorch (:func:`slimformer.stages.export.export_model`).

A stage registered in ``slimformer.stages`` but missing from :data:`MATRIX` fails ``test_every_stage_is_in_the_matrix``:
adding a stage means adding its row here (docs/contributing.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import SST2_ROWS, write_sst2
from slimformer.checkpoint import load_model
from slimformer.recipe import parse_recipe, run_recipe
from slimformer.stages import STAGES
from slimformer.stages.export import ExportConfig, export_model

pytest.importorskip("onnxruntime")

TRAIN = {"max_steps": 1, "batch_size": 8, "logging_steps": 1, "max_seq_length": 16}
TIMING = {
    "batch_sizes": [1, 4],
    "seq_len": 16,
    "warmup": 0,
    "iters": 2,
    "runtimes": ["pytorch-fp32", "onnxruntime-int8"],
}

#: The chains the matrix runs (each a tiny recipe), and for every stage the chain it runs in.
CHAINS: dict[str, list[dict[str, Any]]] = {
    "plain": [
        {"embeddings": {"method": "svd", "rank": 8, "sentences": None, "pairs": None}},
        {"finetune": {"model": "previous", **TRAIN}},
        {"evaluate": {"max_examples": 8}},
        {"export": {}},
        {"quantize": {"mode": "static", "calibration_examples": 8}},
        {"benchmark": TIMING},
    ],
    "quant": [
        {"finetune": TRAIN},
        {"qat": {**TRAIN, "weight_quantizer": "uniform", "weight_bits": 8}},
        {"sdq": {**TRAIN, "weight_bits": 4}},
    ],
    "quala": [],  # tests/quala_helpers.py: finetune, distill, length, search, export (int8), length_benchmark
    "teacher": [{"teacher": {"max_eval_examples": 8}}],  # a user's fine-tuned HF folder (task head, no slimformer.json)
}
MATRIX: dict[str, str] = {
    "embeddings": "plain",
    "finetune": "plain",
    "evaluate": "plain",
    "export": "plain",
    "quantize": "plain",
    "benchmark": "plain",
    "qat": "quant",
    "sdq": "quant",
    "distill": "quala",
    "length": "quala",
    "search": "quala",
    "length_benchmark": "quala",
    "teacher": "teacher",
}


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer, quala_run
) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Each chain run once: ``{chain: [(stage name, outputs), ...]}``."""
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for chain, stages in CHAINS.items():
        tmp = tmp_path_factory.mktemp(chain)
        if chain == "quala":  # the session's tiny QuaLA run (conftest.quala_run), shared with test_quala_recipe
            out[chain] = list(quala_run[1].history)
            continue
        else:
            model = tmp / "tiny-bert"
            from conftest import make_tiny_model

            make_tiny_model("classification" if chain == "teacher" else "none").hf.save_pretrained(model)
            tiny_tokenizer.save_pretrained(model)
            data = write_sst2(tmp, SST2_ROWS)
            raw = {"name": f"matrix-{chain}", "task": "sst2", "model": str(model), "data": str(data), "stages": stages}
        ctx = run_recipe(parse_recipe(raw), run_dir=tmp / "run", log=lambda _: None)
        out[chain] = ctx.history
    return out


def test_every_stage_is_in_the_matrix() -> None:
    assert set(MATRIX) == set(STAGES), f"stages without a matrix row: {sorted(set(STAGES) - set(MATRIX))}"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_runs_saves_reloads_and_exports(stage: str, runs, tmp_path: Path) -> None:
    assert stage in MATRIX, f"stage {stage!r} has no row in tests/test_stage_matrix.py MATRIX"
    history = runs[MATRIX[stage]]
    outputs = next(out for name, out in history if name == stage)  # the stage ran in its chain
    assert isinstance(outputs, dict) and outputs, f"{stage}: no outputs recorded"
    spec = STAGES[stage]
    if not spec.produces_model:
        assert "model_dir" not in outputs
        return
    loaded = load_model(outputs["model_dir"])
    assert loaded.meta.applied[-1]["stage"] == stage
    quantized = loaded.meta.applied[-1].get("quantization") is not None
    assert quantized is spec.quantized_output
    res = export_model(outputs["model_dir"], ExportConfig(), out=tmp_path / "onnx")
    atol = ExportConfig().qat_atol if spec.quantized_output else ExportConfig().atol
    assert res["max_abs_diff"] <= atol
    assert Path(res["onnx_int8" if spec.quantized_output else "onnx_fp32"]).is_file()
