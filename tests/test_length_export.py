"""ONNX export with the length configuration as a graph input: parity per configuration, defaults, int8."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_tiny_model
from int8_tolerance import int8_atol
from slimformer.errors import ConfigError, ExportError
from slimformer.export import quantize_dynamic_int8
from slimformer.export.length import LENGTH_INPUTS, _session, export_length_onnx, length_feeds
from slimformer.export.spec import DummyInputGenerator, onnx_spec
from slimformer.length import LengthConfig, forward_with_config

pytest.importorskip("onnxruntime")

CONFIGS = [
    LengthConfig.from_ratios([0.8, 0.5, 0.3]),
    LengthConfig.from_lengths([20, 9, 2]),
    LengthConfig.from_ratios([0.05, 0.05, 0.05]),  # [CLS] only
    None,
]


@pytest.fixture(scope="module", params=[("classification", "bert"), ("qa", "bert"), ("qa", "roberta")])
def exported(request, tmp_path_factory):
    head, arch = request.param
    model = make_tiny_model(head, arch, num_labels=2, num_hidden_layers=3)
    path = tmp_path_factory.mktemp("lat") / "model.onnx"
    # export validates every configuration (ONNX Runtime vs forward_with_config) before the rename
    export_length_onnx(model, path, CONFIGS[0], validate_configs=CONFIGS[1:], atol=1e-4)
    return {"model": model, "path": path}


def _run(path, model, bsz, n, config, feed=True, seed=3):
    spec = onnx_spec(model)
    inputs = DummyInputGenerator(model.config, seed=seed).generate(spec.inputs, bsz, n)
    feeds = {k: v.numpy() for k, v in inputs.items()}
    if feed:
        feeds.update(length_feeds(config, model.num_layers))
    got = dict(zip(spec.outputs, _session(path).run(list(spec.outputs), feeds)))
    with torch.no_grad():
        ref = forward_with_config(model, **inputs, config=config or LengthConfig.full(model.num_layers))
    return got, {name: getattr(ref, name).numpy() for name in spec.outputs}


@pytest.mark.parametrize("config", CONFIGS, ids=["ratios", "lengths", "cls-only", "full"])
@pytest.mark.parametrize(("bsz", "n"), [(1, 5), (2, 40), (4, 17)])
def test_parity_per_configuration_and_input_length(exported, config, bsz, n):
    got, ref = _run(exported["path"], exported["model"], bsz, n, config)
    for name in ref:
        assert got[name].shape == ref[name].shape
        np.testing.assert_allclose(got[name], ref[name], atol=1e-4, rtol=0)


def test_one_graph_serves_several_configurations(exported):
    model, path = exported["model"], exported["path"]
    outs = [_run(path, model, 2, 30, c)[0] for c in CONFIGS]
    name = onnx_spec(model).outputs[0]
    for i in range(len(outs)):
        for j in range(i + 1, len(outs)):
            assert np.abs(outs[i][name] - outs[j][name]).max() > 1e-5  # the fed configuration is used


def test_default_configuration_is_the_exported_one(exported):
    model, path = exported["model"], exported["path"]
    default, _ = _run(path, model, 3, 25, None, feed=False)
    explicit, ref = _run(path, model, 3, 25, CONFIGS[0])
    for name in ref:
        np.testing.assert_array_equal(default[name], explicit[name])
    session = _session(path)
    assert [i.name for i in session.get_inputs()] == list(onnx_spec(model).inputs)
    assert [i.name for i in session.get_overridable_initializers()] == list(LENGTH_INPUTS)


def test_int8_dynamic_quantization_keeps_the_length_inputs(exported, tmp_path):
    model, path = exported["model"], exported["path"]
    int8 = quantize_dynamic_int8(path, tmp_path / "model.int8.onnx")
    session = _session(int8)
    assert [i.name for i in session.get_overridable_initializers()] == list(LENGTH_INPUTS)
    fp32_out, _ = _run(path, model, 2, 20, CONFIGS[1])
    int8_out, _ = _run(int8, model, 2, 20, CONFIGS[1])
    fp32_full, _ = _run(path, model, 2, 20, LengthConfig.full(model.num_layers))
    int8_full, _ = _run(int8, model, 2, 20, LengthConfig.full(model.num_layers))
    default, _ = _run(int8, model, 2, 20, None, feed=False)
    explicit, _ = _run(int8, model, 2, 20, CONFIGS[0])
    for name in fp32_out:
        # the int8 error of the length configuration is of the size of the same graph's int8 error at full length
        # (whatever the CPU's int8 kernels), plus a few quantization steps of the output: the selection ops survive
        # quantization; a broken one would be off by the output's whole range
        full_err = float(np.abs(int8_full[name] - fp32_full[name]).max())
        atol = 4 * full_err + int8_atol(fp32_out[name], steps=4)
        np.testing.assert_allclose(int8_out[name], fp32_out[name], atol=atol, rtol=0)
        assert atol < 0.5 * float(np.abs(fp32_out[name]).max())  # the tolerance still tells a broken graph
        np.testing.assert_array_equal(default[name], explicit[name])


def test_bad_configuration_and_head(tmp_path):
    model = make_tiny_model("classification", "bert", num_labels=2, num_hidden_layers=3)
    with pytest.raises(ConfigError, match="has 2 layers; the model has 3"):
        export_length_onnx(model, tmp_path / "m.onnx", LengthConfig.from_lengths([4, 2]))
    with pytest.raises(ExportError, match="head 'none'"):
        export_length_onnx(make_tiny_model("none"), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_parity_failure_is_reported_and_nothing_written(tmp_path, monkeypatch):
    import slimformer.export.length as lat_export

    model = make_tiny_model("classification", "bert", num_labels=2, num_hidden_layers=3)
    real = lat_export.forward_with_config

    def shifted(*args, **kwargs):  # a PyTorch reference that disagrees with the graph
        out = real(*args, **kwargs)
        out.logits = out.logits + 1.0
        return out

    monkeypatch.setattr(lat_export, "forward_with_config", shifted)
    with pytest.raises(ExportError, match=r"output 'logits' differs from PyTorch by 1 > atol"):
        export_length_onnx(model, tmp_path / "m.onnx", CONFIGS[0])
    assert not (tmp_path / "m.onnx").exists()


def test_recipe_finetune_length_export_quantize(tmp_path, tiny_model_dir):
    from conftest import SST2_ROWS, write_sst2
    from slimformer.length import load_length_config, save_length_config
    from slimformer.recipe import parse_recipe, run_recipe

    data = write_sst2(tmp_path, SST2_ROWS)
    stages = [
        {"finetune": {"max_steps": 1, "batch_size": 8, "max_seq_length": 16}},
        {"length": {"max_steps": 1, "batch_size": 8, "num_sandwich": 1}},
    ]
    raw = {"name": "lat", "task": "sst2", "model": str(tiny_model_dir), "data": str(data), "stages": stages}
    ctx = run_recipe(parse_recipe(raw), run_dir=tmp_path / "run", log=lambda s: None)
    model_dir = ctx.outputs["1-length"]["model_dir"]
    chosen = LengthConfig.from_lengths([6, 3])  # e.g. picked by the search for a budget
    save_length_config(chosen, model_dir)
    raw["stages"] = stages + [{"export": {"int8": "dynamic"}}]
    ctx = run_recipe(parse_recipe(raw), run_dir=tmp_path / "run", log=lambda s: None)
    out = ctx.outputs["2-export"]
    assert out["max_abs_diff"] <= 1e-4
    assert load_length_config(out["export_dir"]) == chosen
    for key in ("onnx_fp32", "onnx_int8"):
        session = _session(out[key])
        assert [i.name for i in session.get_overridable_initializers()] == list(LENGTH_INPUTS)
        import onnx
        from onnx import numpy_helper

        inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(out[key]).graph.initializer}
        assert inits["length_caps"].tolist() == [6, 3] and inits["length_ratios"].tolist() == [1.0, 1.0]


def test_selection_ops_move_whole_rows(exported):
    """Rows are gathered / restored as whole rows (Gather / ScatterND), never per element (LENGTH_GRAPH_VERSION 2).

    Per-element ``GatherElements`` / ``ScatterElements`` over ``(B, k, D)`` and the 2-axis ``ReduceSum`` over the
    ``(B, H, n, n)`` probabilities cost as much as a layer's int8 MatMuls in ONNX Runtime.
    """
    import onnx

    model, path = exported["model"], exported["path"]
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph
    ops = [n.op_type for n in graph.node]
    assert "ScatterElements" not in ops
    assert ops.count("ScatterND") == (model.num_layers if model.head.value == "qa" else 0)
    # GatherElements remain only on (B, n)-shaped int tensors (mask, positions), one row gather per layer
    shapes = {v.name: v for v in list(graph.value_info) + list(graph.output)}
    gathers = [n for n in graph.node if n.op_type == "GatherElements"]
    assert gathers and all(n.output[0] in shapes for n in gathers)
    for node in gathers:
        dims = shapes[node.output[0]].type.tensor_type.shape.dim
        assert len(dims) == 2, f"{node.name} gathers a {len(dims)}-D tensor element by element"
    assert {"length_graph": "2"}.items() <= {
        p.key.removeprefix("slimformer."): p.value for p in onnx.load(str(path)).metadata_props
    }.items()


def test_cached_int8_export_is_redone_for_another_graph_version(tmp_path, tiny_tokenizer):
    import json

    from slimformer.checkpoint import save_model
    from slimformer.models import ModelMeta
    from slimformer.stages._length_artifacts import export_length_int8

    model = make_tiny_model("classification", "bert", num_labels=2, num_hidden_layers=2)
    src = save_model(model, tiny_tokenizer, tmp_path / "m", ModelMeta(head="classification", max_seq_length=32))
    fp32, int8 = export_length_int8(src, tmp_path / "onnx")
    first = int8.stat().st_mtime_ns
    assert export_length_int8(src, tmp_path / "onnx") == (fp32, int8)
    assert int8.stat().st_mtime_ns == first  # same weights, settings and graph version: reused
    stamp_path = tmp_path / "onnx" / "length_export.json"
    stamp = json.loads(stamp_path.read_text())
    assert stamp["graph"] == 2
    stamp_path.write_text(json.dumps({**stamp, "graph": 1}))  # an export made by an older slimformer
    export_length_int8(src, tmp_path / "onnx")
    assert int8.stat().st_mtime_ns != first
    assert json.loads(stamp_path.read_text())["graph"] == 2
