"""int8 quantization with ONNX Runtime: configs; dynamic and static files run, are smaller, stay close."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_tiny_model, requires_minilm
from slimformer.errors import ConfigError
from slimformer.export import (
    DummyInputGenerator,
    Int8Config,
    OrtModel,
    export_onnx,
    onnx_spec,
    quantize_dynamic_int8,
    quantize_int8,
    quantize_static_int8,
)

pytest.importorskip("onnxruntime")

#: Minimum signal-to-quantization-noise ratio of int8 outputs vs fp32 ONNX outputs on tiny random encoders
#: (measured 29-50 dB over 3 seeds × heads × archs; 20 dB = error norm 10% of the signal norm).
MIN_SQNR_DB = 20.0


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    return float(20 * np.log10(np.linalg.norm(ref) / max(np.linalg.norm(ref - test), 1e-12)))


@pytest.fixture(
    scope="module",
    params=[("none", "bert"), ("classification", "roberta"), ("qa", "bert")],
    ids=["none-bert", "classification-roberta", "qa-bert"],
)
def fp32(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An exported tiny fp32 model (hidden 64, FFN 128), calibration batches and a held-out batch."""
    head, arch = request.param
    model = make_tiny_model(head, arch, hidden_size=64, intermediate_size=128)
    path = export_onnx(model, tmp_path_factory.mktemp("q") / f"{head}-{arch}.onnx")
    gen = DummyInputGenerator(model.config, seed=1)
    spec = onnx_spec(model)
    calib = [{k: v.numpy() for k, v in gen.generate(spec.inputs, 8, 24).items()} for _ in range(4)]
    test = {k: v.numpy() for k, v in gen.generate(spec.inputs, 6, 24).items()}
    return {"model": model, "path": path, "calib": calib, "test": test, "ref": OrtModel(path)(test)}


def _check_int8(fp32: dict, q_path, max_size_ratio: float = 0.6) -> None:
    session = OrtModel(q_path)
    out = session(fp32["test"])
    assert set(out) == set(fp32["ref"])
    for name, ref in fp32["ref"].items():
        assert out[name].shape == ref.shape
        assert sqnr_db(ref, out[name]) >= MIN_SQNR_DB, name
    assert session.file_size_mb < max_size_ratio * OrtModel(fp32["path"]).file_size_mb


@pytest.mark.parametrize("per_channel", [True, False])
def test_dynamic_int8(fp32: dict, tmp_path, per_channel: bool) -> None:
    q = quantize_dynamic_int8(fp32["path"], tmp_path / "int8.onnx", per_channel=per_channel)
    _check_int8(fp32, q)
    recorded = json.loads(OrtModel(q).metadata["slimformer.int8"])
    assert Int8Config.from_dict(recorded) == Int8Config.dynamic(per_channel=per_channel)
    assert OrtModel(q).metadata["slimformer.head"] == fp32["model"].head.value  # export metadata kept


@pytest.mark.parametrize("quant_format", ["qdq", "qoperator"])
def test_static_int8(fp32: dict, tmp_path, quant_format: str) -> None:
    q = quantize_static_int8(fp32["path"], tmp_path / "int8.onnx", fp32["calib"], quant_format=quant_format)
    _check_int8(fp32, q)


def test_dynamic_int8_on_fused_graph(fp32: dict, tmp_path) -> None:
    q = quantize_int8(fp32["path"], tmp_path / "int8.onnx", Int8Config.dynamic(optimize=True))
    _check_int8(fp32, q)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx"]


def test_static_accurate_keeps_ffn_output_fp32(fp32: dict, tmp_path) -> None:
    import onnx

    q = quantize_int8(fp32["path"], tmp_path / "int8.onnx", Int8Config.static_accurate(), fp32["calib"])
    _check_int8(fp32, q, max_size_ratio=0.8)
    cfg = fp32["model"].config
    fp32_down = [
        i
        for i in onnx.load(str(q)).graph.initializer
        if tuple(i.dims) == (cfg.intermediate_size, cfg.hidden_size) and i.data_type == onnx.TensorProto.FLOAT
    ]
    assert len(fp32_down) == cfg.num_hidden_layers


def test_calibration_uses_at_most_calibration_examples(fp32: dict, tmp_path, monkeypatch) -> None:
    from slimformer.export import quantize as qmod

    seen = []
    real = qmod._calibration_feeds

    def spy(batches, names, limit):
        feeds = real(batches, names, limit)
        seen.append(sum(len(f["input_ids"]) for f in feeds))
        assert all(set(f) == set(names) and f["input_ids"].dtype == np.int64 for f in feeds)
        return feeds

    monkeypatch.setattr(qmod, "_calibration_feeds", spy)
    quantize_int8(fp32["path"], tmp_path / "int8.onnx", Int8Config.static(calibration_examples=11), fp32["calib"])
    assert seen == [11]


def test_static_without_calibration_fails_cleanly(fp32: dict, tmp_path) -> None:
    with pytest.raises(ConfigError, match="calibration"):
        quantize_int8(fp32["path"], tmp_path / "int8.onnx", Int8Config.static())
    with pytest.raises(ConfigError, match="calibration"):
        quantize_int8(fp32["path"], tmp_path / "int8.onnx", Int8Config.static(), [])
    assert list(tmp_path.iterdir()) == []


def test_config_validation_and_round_trip() -> None:
    cfg = Int8Config.static(calibration_method="percentile", exclude_nodes=["a", "b"])
    assert cfg.exclude_nodes == ("a", "b")
    assert Int8Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert Int8Config.dynamic() == Int8Config(mode="dynamic")  # presets expand to ordinary configs
    assert Int8Config.static_accurate() == Int8Config(mode="static", quant_format="qoperator", fp32_ffn_output=True)
    for bad in ({"mode": "fp8"}, {"calibration_examples": 0}, {"percentile": 10.0}, {"quant_format": "x"}):
        with pytest.raises(ConfigError):
            Int8Config(**bad)
    with pytest.raises(ConfigError, match="optimize"):
        Int8Config.static(optimize=True)
    with pytest.raises(ConfigError, match="unknown"):
        Int8Config.from_dict({"mode": "dynamic", "bits": 4})


@pytest.mark.integration
@requires_minilm
def test_minilm_dynamic_int8_close_to_fp32(tmp_path) -> None:
    """Mean-pooled sentence embeddings of int8 MiniLM vs fp32 (cosine ≥ 0.97; measured ≈ 0.99 on SST-2)."""
    from slimformer.checkpoint import load_pretrained

    model, tok = load_pretrained("minilm-l6", "none")
    fp32_path = export_onnx(model, tmp_path / "fp32.onnx")
    q = quantize_int8(fp32_path, tmp_path / "int8.onnx", Int8Config.dynamic())
    sentences = ["a gripping, beautifully acted film", "the plot is thin and the jokes fall flat", "it rains"]
    batch = dict(tok(sentences, padding="max_length", max_length=32, return_tensors="np"))
    mask = batch["attention_mask"][..., None]
    pooled = [(OrtModel(p)(batch)["last_hidden_state"] * mask).sum(1) / mask.sum(1) for p in (fp32_path, q)]
    cos = (pooled[0] * pooled[1]).sum(1) / np.linalg.norm(pooled[0], axis=1) / np.linalg.norm(pooled[1], axis=1)
    assert cos.min() >= 0.97
    assert OrtModel(q).file_size_mb < 0.3 * OrtModel(fp32_path).file_size_mb
