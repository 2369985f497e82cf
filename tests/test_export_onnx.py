"""ONNX export: parity with PyTorch for every head × architecture, dynamic axes, errors, atomic writes."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import make_tiny_model, requires_minilm
from slimformer.errors import ExportError, SlimformerError
from slimformer.export import (
    DummyInputGenerator,
    OrtModel,
    export_onnx,
    onnx_spec,
    optimize_onnx,
    require_onnxruntime,
    validate_outputs,
)

pytest.importorskip("onnxruntime")

HEADS = ("classification", "qa", "none")
ARCHS = ("bert", "roberta")
OUTPUTS = {
    "classification": ("logits",),
    "qa": ("start_logits", "end_logits"),
    "none": ("last_hidden_state",),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tiny model and its exported file per (head, arch), shared by the tests of this module."""
    out = {}
    d = tmp_path_factory.mktemp("onnx")
    for head in HEADS:
        for arch in ARCHS:
            model = make_tiny_model(head, arch)
            out[head, arch] = (model, export_onnx(model, d / f"{head}-{arch}.onnx"))
    return out


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("head", HEADS)
def test_export_parity_dynamic_shapes(exported: dict, head: str, arch: str) -> None:
    model, path = exported[head, arch]
    # Shapes other than the traced (2, 16) ones: the batch and sequence axes really are dynamic.
    diff = validate_outputs(model, path, atol=1e-4, batch_sizes=(1, 5), seq_lens=(1, 9, 64))
    assert diff <= 1e-4


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("head", HEADS)
def test_graph_signature(exported: dict, head: str, arch: str) -> None:
    model, path = exported[head, arch]
    session = OrtModel(path)
    expected_inputs = ("input_ids", "attention_mask") + (("token_type_ids",) if arch == "bert" else ())
    assert session.input_names == expected_inputs == onnx_spec(model).inputs
    assert session.output_names == OUTPUTS[head]
    for node in session.session.get_inputs():
        assert node.shape == ["batch_size", "sequence_length"] and node.type == "tensor(int64)"
    first = session.session.get_outputs()[0].shape
    assert first[0] == "batch_size"
    if head != "classification":
        assert first[1] == "sequence_length"
    assert session.metadata["slimformer.head"] == head
    assert session.metadata["slimformer.exporter"] == "torchscript"


def test_output_shapes_match_docstring(exported: dict) -> None:
    model, path = exported["none", "bert"]
    batch = DummyInputGenerator(model.config, seed=3).generate(("input_ids", "attention_mask"), 4, 11)
    out = OrtModel(path)(batch)
    assert out["last_hidden_state"].shape == (4, 11, model.config.hidden_size)
    model, path = exported["classification", "roberta"]
    assert OrtModel(path)(batch)["logits"].shape == (4, model.config.num_labels)


def test_validate_raises_when_torch_model_changed(exported: dict) -> None:
    model, path = exported["classification", "bert"]
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.hf.classifier.weight.add_(0.5)
    with pytest.raises(ExportError, match="'logits' differs from PyTorch"):
        validate_outputs(changed, path)
    assert issubclass(ExportError, SlimformerError)


def test_validate_raises_on_wrong_graph(exported: dict) -> None:
    model, _ = exported["classification", "bert"]
    _, qa_path = exported["qa", "bert"]
    with pytest.raises(ExportError, match="outputs"):
        validate_outputs(model, qa_path)


def test_export_restores_training_flag(tmp_path) -> None:
    model = make_tiny_model("classification", "roberta").train()
    export_onnx(model, tmp_path / "m.onnx")
    assert model.training


def test_failed_export_keeps_previous_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous")

    def fail(*args, **kwargs):
        raise ExportError("parity check failed")

    monkeypatch.setattr("slimformer.export.onnx.validate_outputs", fail)
    with pytest.raises(ExportError):
        export_onnx(make_tiny_model("classification", "bert"), target)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temporary debris


def test_optimized_graph_keeps_parity(exported: dict, tmp_path) -> None:
    model, path = exported["qa", "bert"]
    fused = optimize_onnx(path, tmp_path / "fused.onnx")
    meta = OrtModel(fused).metadata
    assert "Attention" in meta["slimformer.fused_ops"] and meta["slimformer.head"] == "qa"
    assert validate_outputs(model, fused, atol=1e-4) <= 1e-4


def test_dummy_inputs_are_padded_and_well_formed() -> None:
    model = make_tiny_model("classification", "roberta")
    gen = DummyInputGenerator(model.config, seed=0)
    batch = gen.generate(("input_ids", "attention_mask"), 3, 10)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == mask.shape == (3, 10) and ids.dtype == torch.long
    assert mask[0].all() and (mask.sum(1) >= 1).all() and mask[2].sum() < 10  # later rows padded
    pad = model.config.pad_token_id
    assert ((ids == pad) == (mask == 0)).all()
    bert = DummyInputGenerator(make_tiny_model("classification", "bert").config, seed=0)
    types = bert.generate(("token_type_ids",), 2, 8)["token_type_ids"]
    assert set(types.unique().tolist()) == {0, 1}
    with pytest.raises(ValueError, match="outside"):
        gen.generate(("input_ids",), 1, 1000)


def test_lean_import() -> None:
    code = (
        "import sys, slimformer, slimformer.export, slimformer.bench; "
        "assert 'onnxruntime' not in sys.modules and 'onnx' not in sys.modules, 'eager import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_onnxruntime_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"pip install 'slimformer\[onnx\]'"):
        require_onnxruntime()


@pytest.mark.slow
def test_dynamo_exporter_parity(tmp_path) -> None:
    model = make_tiny_model("qa", "bert")
    path = export_onnx(model, tmp_path / "dynamo.onnx", dynamo=True)
    assert OrtModel(path).metadata["slimformer.exporter"] == "dynamo"
    assert validate_outputs(model, path, batch_sizes=(1, 4), seq_lens=(3, 40)) <= 1e-4


@pytest.mark.integration
@requires_minilm
def test_minilm_export_parity(tmp_path) -> None:
    from slimformer.checkpoint import load_pretrained

    model, tok = load_pretrained("minilm-l6", "classification", num_labels=2)
    path = export_onnx(model, tmp_path / "minilm.onnx")
    assert validate_outputs(model, path, batch_sizes=(2,), seq_lens=(128,)) <= 1e-4
    batch = dict(tok(["a fine film", "a dull, tedious film"], padding=True, return_tensors="np"))
    with torch.inference_mode():
        ref = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()
    np.testing.assert_allclose(OrtModel(path)(batch)["logits"], ref, atol=1e-4)
