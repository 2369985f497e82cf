"""ONNX export of QAT-converted models (QDQ, int8 codes) and the pipeline on a quantized model folder."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SST2_ROWS, make_tiny_model, write_sst2
from int8_tolerance import int8_atol
from slimformer.errors import ConfigError, ExportError
from slimformer.quant import (
    ActivationQuantizer,
    BinaryWeight,
    PerGroup,
    PerRow,
    PerTensor,
    QATConfig,
    QuantizedLinear,
    TernaryWeight,
    UniformWeight,
    convert_qat_,
    prepare_qat_,
    quantize_embeddings_,
)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from slimformer.export import OrtModel, export_onnx, validate_outputs  # noqa: E402
from slimformer.export.spec import DummyInputGenerator, onnx_spec  # noqa: E402

SCHEMES = {
    "int8_per_row": (UniformWeight(8, PerRow()), ActivationQuantizer()),
    "int4_per_tensor_clip": (UniformWeight(4, PerTensor()), ActivationQuantizer(8, clip=2.5)),
    "ternary": (TernaryWeight(), ActivationQuantizer()),
    "ternary_per_row_a4": (TernaryWeight(PerRow()), ActivationQuantizer(4)),
    "binary": (BinaryWeight(), ActivationQuantizer()),
}
WEIGHT_SHAPES = {(32, 32), (32, 64), (64, 32)}  # every quantized Linear of the tiny BERT (hidden 32, FFN 64)


def _converted(weight_q, act_q, *, embeddings: bool = False):
    model = make_tiny_model("classification", num_labels=2)
    prepare_qat_(model, QATConfig(weight=weight_q, activation=act_q))
    convert_qat_(model)
    return quantize_embeddings_(model) if embeddings else model


def _optimized_op_types(path: Path, tmp_path: Path) -> Counter:
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)


@pytest.mark.parametrize("name", list(SCHEMES))
def test_qdq_export_matches_pytorch_and_runs_int8_kernels(tmp_path: Path, name: str) -> None:
    weight_q, act_q = SCHEMES[name]
    model = _converted(weight_q, act_q, embeddings=name == "ternary")
    spec = onnx_spec(model)
    with torch.no_grad():
        logits = model(**DummyInputGenerator(model.config, seed=0).generate(spec.inputs, 2, 16)).logits.numpy()
    # PyTorch fake quantization and ORT's int8 kernels agree up to float rounding that can flip a dynamically
    # quantized activation by one step (kernels differ by CPU): allow two activation steps of the output's range
    atol = int8_atol(logits, steps=2, bits=act_q.bits)
    path = export_onnx(model, tmp_path / "m.onnx", atol=atol)  # validated inside (2 batch sizes x 2 lengths)
    graph = onnx.load(str(path)).graph
    ops = Counter(n.op_type for n in graph.node)
    assert ops["QuantizeLinear"] == 13 and ops["DequantizeLinear"] == 26  # one per activation, one per weight
    int8 = {tuple(i.dims) for i in graph.initializer if i.data_type == onnx.TensorProto.INT8}
    floats = {tuple(i.dims) for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    assert WEIGHT_SHAPES <= int8 and not WEIGHT_SHAPES & floats  # weights only as int8 codes
    assert ((161, 32) in int8) is (name == "ternary")  # int8 word-embedding table
    # ONNX Runtime turns every encoder DQ -> MatMul into an int8 x int8 kernel
    assert _optimized_op_types(path, tmp_path)["MatMulIntegerToFloat"] == 12
    meta = json.loads(OrtModel(path).metadata["slimformer.int8"])
    assert meta["mode"] == "qat" and meta["activation_bits"] == [act_q.bits]
    assert all(type(m).__name__ != "_OnnxQuantizedLinear" for m in model.modules())  # modules restored


def test_codes_in_graph_are_the_models_codes(tmp_path: Path) -> None:
    model = _converted(TernaryWeight(), ActivationQuantizer())
    path = export_onnx(model, tmp_path / "m.onnx")
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    query = model.base.encoder.layer[0].attention.self.query
    codes = inits[next(n for n in inits if n.endswith("layer.0.attention.self.query.codes_t"))]
    assert codes.dtype == np.int8 and np.array_equal(codes, query.weight_codes.numpy().T)
    assert set(np.unique(codes)) <= {-1, 0, 1}


def test_weight_only_export_runs_within_tolerance(tmp_path: Path) -> None:
    model = _converted(UniformWeight(8), None)
    path = export_onnx(model, tmp_path / "m.onnx", atol=1e-3)
    assert Counter(n.op_type for n in onnx.load(str(path)).graph.node)["QuantizeLinear"] == 0
    # ORT runs DQ(W) -> MatMul as MatMulNBits; its default accuracy level computes with int8-quantized inputs
    assert validate_outputs(model, path, atol=1e-3) > 0


def test_per_group_weights_are_refused_and_model_is_untouched(tmp_path: Path) -> None:
    model = _converted(UniformWeight(4, PerGroup(8)), ActivationQuantizer())
    before = [type(m) for m in model.modules()]
    with pytest.raises(ExportError, match=r"per-tensor and per-row weight scales, not PerGroup\(group_size=8\)"):
        export_onnx(model, tmp_path / "m.onnx")
    assert [type(m) for m in model.modules()] == before
    assert sum(isinstance(m, QuantizedLinear) for m in model.modules()) == 13
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(ExportError, match="TorchScript exporter only"):
        export_onnx(_converted(TernaryWeight(), None), tmp_path / "m.onnx", dynamo=True)


# --------------------------------------------------------------------------------------------- pipeline


@pytest.fixture
def qat_folder(tmp_path: Path, tiny_tokenizer) -> Path:
    from slimformer.checkpoint import save_model
    from slimformer.models import ModelMeta

    data = write_sst2(tmp_path, SST2_ROWS, SST2_ROWS[:8])
    model = _converted(TernaryWeight(), ActivationQuantizer())
    meta = ModelMeta(
        head="classification",
        task="sst2",
        applied=[{"stage": "finetune", "data": str(data)}, {"stage": "qat"}],
        max_seq_length=32,
    )
    return save_model(model, tiny_tokenizer, tmp_path / "qat", meta)


def test_export_evaluate_benchmark_on_a_quantized_folder(qat_folder: Path, monkeypatch) -> None:
    import functools

    import slimformer.bench.latency as latency
    from slimformer.api import evaluate
    from slimformer.stages.benchmark import BenchmarkConfig, benchmark_target
    from slimformer.stages.export import ExportConfig, export_model

    result = export_model(qat_folder, ExportConfig())
    onnx_path = Path(result["onnx_int8"])
    assert onnx_path.name == "model.int8.onnx" and "onnx_fp32" not in result
    assert result["max_abs_diff"] < 1e-5 and result["quantization"]["label"] == "W2A8 ternary"
    applied = json.loads((onnx_path.parent / "slimformer.json").read_text())["applied"]
    assert [a["stage"] for a in applied] == ["finetune", "qat", "export"]
    torch_metrics = evaluate(qat_folder)
    ort_metrics = evaluate(onnx_path)
    assert abs(torch_metrics["accuracy"] - ort_metrics["accuracy"]) <= 0.005
    cfg = BenchmarkConfig(batch_sizes=[1, 4], seq_len=16, warmup=1, iters=2, threads=1)
    fast = functools.partial(latency.compare_runtimes, min_time_s=0.01)
    monkeypatch.setattr(latency, "compare_runtimes", fast)
    monkeypatch.setattr("slimformer.stages.benchmark.compare_runtimes", fast)  # the stage's own reference
    rows = benchmark_target(qat_folder, cfg)["rows"]
    assert [r["runtime"] for r in rows] == ["pytorch-fp32", "onnxruntime-int8"]
    assert rows[0]["name"] == "W2A8 ternary QAT (PyTorch)" and rows[1]["name"] == "W2A8 ternary QAT (ORT int8)"
    assert rows[0]["metric_value"] == pytest.approx(rows[1]["metric_value"], abs=0.005)
    assert all(r["size_mb"] > 0 for r in rows)


def test_int8_ptq_of_a_quantized_folder_is_refused(qat_folder: Path) -> None:
    from slimformer.stages.export import ExportConfig, export_model

    with pytest.raises(ConfigError, match=r"already quantized \(W2A8 ternary\); int8: dynamic .* expected int8: none"):
        export_model(qat_folder, ExportConfig(int8="dynamic"))


def test_quantized_folder_is_smaller_than_fp32(tmp_path: Path, tiny_tokenizer) -> None:
    from slimformer.bench.machine import file_size_mb
    from slimformer.checkpoint import save_model
    from slimformer.models import ModelMeta

    meta = ModelMeta(head="classification")
    fp32 = save_model(make_tiny_model("classification", num_labels=2), tiny_tokenizer, tmp_path / "fp32", meta)
    model = quantize_embeddings_(_converted(TernaryWeight(), ActivationQuantizer()))
    tern = save_model(model, tiny_tokenizer, tmp_path / "tern", meta)
    n_linear = 2 * (4 * 32 * 32 + 2 * 32 * 64) + 32 * 32  # encoder + pooler weights
    saved = (file_size_mb(fp32) - file_size_mb(tern)) * 1e6
    # ternary Linears save 4 - 1/4 bytes per weight, the int8 table 3 bytes per entry (less per-row scales)
    expected = n_linear * (4 - 0.25) + 161 * 32 * 3 - 161 * 4
    assert saved == pytest.approx(expected, rel=0.05)
    with torch.no_grad():
        assert model(**{"input_ids": torch.tensor([[5, 6, 7]])}).logits.shape == (1, 2)


def test_recipe_stages_run_on_a_converted_model(tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> None:
    """finetune -> (a stand-in for the `qat` stage: prepare + convert + save_model) -> evaluate/export/benchmark."""
    import functools

    import yaml

    import slimformer.bench.latency as latency
    from slimformer.api import compress
    from slimformer.checkpoint import load_model, save_model
    from slimformer.config import StageConfig
    from slimformer.recipe import STAGES, StageSpec

    def convert_stage(ctx, cfg) -> dict:
        loaded = load_model(ctx.latest("model_dir"))
        convert_qat_(prepare_qat_(loaded.model, QATConfig()))
        loaded.meta.applied.append({"stage": "qat"})
        out = save_model(loaded.model, loaded.tokenizer, ctx.stage_dir("qat-stand-in"), loaded.meta)
        return {"model_dir": str(out)}

    monkeypatch.setitem(STAGES, "qat-stand-in", StageSpec("qat-stand-in", StageConfig, convert_stage))
    fast = functools.partial(latency.compare_runtimes, min_time_s=0.01)
    monkeypatch.setattr(latency, "compare_runtimes", fast)
    monkeypatch.setattr("slimformer.stages.benchmark.compare_runtimes", fast)  # the stage's own reference
    data = write_sst2(tmp_path, SST2_ROWS)
    stages = [
        {"finetune": {"max_steps": 2, "batch_size": 8, "save_steps": 1, "logging_steps": 1}},
        {"qat-stand-in": {}},
        {"evaluate": {}},
        {"export": {}},
        {"benchmark": {"batch_sizes": [1, 4], "seq_len": 16, "warmup": 1, "iters": 2, "threads": 1}},
    ]
    recipe = {"name": "tiny-qat", "task": "sst2", "model": str(tiny_model_dir), "data": str(data), "stages": stages}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    ctx = compress(path, run_dir=tmp_path / "run")
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    outputs = {s["name"]: s["outputs"] for s in state["stages"]}
    assert Path(outputs["export"]["onnx_int8"]).name == "model.int8.onnx"
    assert outputs["export"]["quantization"]["label"] == "W2A8 ternary"
    rows = json.loads((ctx.run_dir / "report.json").read_text())["rows"]
    assert [r["runtime"] for r in rows] == ["pytorch-fp32", "onnxruntime-int8"]
    assert all("W2A8 ternary QAT" in r["name"] for r in rows)
    assert rows[0]["metric_value"] == pytest.approx(outputs["evaluate"]["metrics"]["main"])
