"""Selection only at the layers where a configuration can drop tokens (``select_layers``; ``length_graph: pick``).

A layer whose ratio is 1, or equal to the previous layer's, keeps every row entering it; leaving its selection
ops out must not change any real row's output, and a graph without them must refuse configurations that drop there.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_tiny_model
from slimformer.config import identity_dump
from slimformer.errors import ConfigError
from slimformer.length import LengthConfig, forward_with_config

R = LengthConfig.from_ratios


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (R([1.0, 1.0, 1.0, 1.0]), ()),
        (R([1.0, 1.0, 0.5, 0.5]), (2,)),
        (R([0.8, 0.8, 0.5, 0.3]), (0, 2, 3)),
        (R([1.0, 0.6, 0.6, 0.6]), (1,)),
        (LengthConfig.from_lengths([128, 128, 64, 64]), (0, 2)),
        (LengthConfig.from_lengths([9, 7, 5, 1]), (0, 1, 2, 3)),
    ],
)
def test_selecting_layers_by_hand(config, expected):
    assert config.selecting_layers() == expected


def _padded_batch(model, lengths, n, seed=0):
    """Rows of the given real lengths, padded to ``n`` (> every length: whole padding columns exist)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, model.config.vocab_size, (len(lengths), n), generator=g)
    mask = torch.zeros(len(lengths), n, dtype=torch.long)
    for b, m in enumerate(lengths):
        mask[b, :m] = 1
    ids = ids * mask
    return ids, mask


@pytest.mark.parametrize("head", ["classification", "qa"])
@pytest.mark.parametrize(
    "config",
    [R([1.0, 1.0, 0.4, 0.4]), R([0.7, 0.7, 0.7, 0.2]), R([1.0, 1.0, 1.0, 1.0]), R([1.0, 0.5, 0.5, 0.5])],
    ids=["late", "first-last", "full", "second"],
)
def test_skipped_layers_leave_real_rows_unchanged(head, config):
    model = make_tiny_model(head, "bert", num_labels=2, num_hidden_layers=4)
    ids, mask = _padded_batch(model, [13, 6, 9], 16)
    with torch.no_grad():
        every = forward_with_config(model, ids, mask, config=config)
        fewer = forward_with_config(model, ids, mask, config=config, select_layers=config.selecting_layers())
    if head == "classification":
        torch.testing.assert_close(fewer.logits, every.logits, atol=1e-5, rtol=0)
        cls = [out.encoder.last_hidden_state[:, 0] for out in (fewer, every)]  # (B, D), LayerNorm scale
        torch.testing.assert_close(cls[0], cls[1], atol=1e-5, rtol=0)
    else:  # Drop-and-Restore: real positions match; padding positions are never read
        real = mask.bool()
        for name in ("start_logits", "end_logits"):
            torch.testing.assert_close(getattr(fewer, name)[real], getattr(every, name)[real], atol=1e-5, rtol=0)


def test_selector_refuses_a_configuration_that_drops_at_a_skipped_layer():
    model = make_tiny_model("classification", "bert", num_labels=2, num_hidden_layers=3)
    ids, mask = _padded_batch(model, [8, 5], 8)
    with pytest.raises(ConfigError, match=r"only at layers \[3\].*layer\(s\) \[1, 2\]"):
        forward_with_config(model, ids, mask, config=R([0.8, 0.5, 0.3]), select_layers=[2])


def test_skipping_is_not_a_no_op_for_a_dropping_layer():
    """The comparison above can fail: skipping a layer that does drop changes the logits."""
    from slimformer.length import LengthSelector

    model = make_tiny_model("classification", "bert", num_labels=3, num_hidden_layers=3)
    ids, mask = _padded_batch(model, [12, 12], 12)
    cfg = R([0.5, 0.5, 0.5])
    with torch.no_grad():
        every = forward_with_config(model, ids, mask, config=cfg)
        from slimformer.length.selector import length_inputs

        ratios, caps = length_inputs(cfg, 3)
        wrong = model(ids, mask, None, keep=LengthSelector(ratios, caps, mask, select_layers=[1]), restore=False)
    cls = lambda out: out.encoder.last_hidden_state[:, 0]  # noqa: E731 - (B, D), LayerNorm scale
    assert (cls(wrong) - cls(every)).abs().max() > 1e-2


onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module", params=["classification", "qa"])
def graphs(request, tmp_path_factory):
    from slimformer.export.length import export_length_onnx

    model = make_tiny_model(request.param, "bert", num_labels=2, num_hidden_layers=4)
    pick = R([1.0, 1.0, 1.0, 0.4])
    root = tmp_path_factory.mktemp("pick")
    # both exports validate ONNX Runtime against PyTorch (the pick graph against the same selection) before renaming
    every = export_length_onnx(model, root / "any.onnx", pick)
    select, other = pick.selecting_layers(), R([1.0, 1.0, 1.0, 0.2])
    fewer = export_length_onnx(model, root / "pick.onnx", pick, select_layers=select, validate_configs=[other])
    return {"model": model, "pick": pick, "any": every, "fewer": fewer}


def test_pick_graph_has_selection_ops_only_where_the_pick_drops(graphs):
    ops = lambda p: [n.op_type for n in onnx.load(str(p)).graph.node]  # noqa: E731
    every, fewer = ops(graphs["any"]), ops(graphs["fewer"])
    assert fewer.count("TopK") > 0 and every.count("TopK") == 4 * fewer.count("TopK")  # top-k and sort, per layer
    assert len(fewer) < len(every)
    meta = {p.key: p.value for p in onnx.load(str(graphs["fewer"])).metadata_props}
    assert meta["slimformer.length_select_layers"] == "[3]"
    assert "slimformer.length_select_layers" not in {p.key for p in onnx.load(str(graphs["any"])).metadata_props}


def test_pick_graph_matches_the_any_graph_on_real_rows(graphs):
    from slimformer.export.length_ort import LengthOrtModel

    model = graphs["model"]
    ids, mask = _padded_batch(model, [11, 4, 16], 16, seed=1)
    batch = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": np.zeros_like(ids.numpy())}
    outs = [LengthOrtModel(graphs[k], graphs["pick"])(batch) for k in ("any", "fewer")]
    real = mask.numpy().astype(bool)
    assert outs[0].keys() == outs[1].keys()
    for name in outs[0]:
        a, b = outs[0][name], outs[1][name]
        if a.shape == real.shape:
            a, b = a[real], b[real]
        np.testing.assert_allclose(b, a, atol=1e-4, rtol=0)


def test_pick_graph_refuses_other_configurations(graphs):
    from slimformer.export.length_ort import LengthOrtModel

    session = LengthOrtModel(graphs["fewer"], graphs["pick"])
    assert session.select_layers == (3,)
    session.set_config(R([1.0, 1.0, 1.0, 0.1]))  # drops at the last layer only: served
    session.set_config(None)  # the full model drops nowhere
    with pytest.raises(ConfigError, match=r"pick\.onnx.*layer\(s\) \[3\]"):
        session.set_config(R([1.0, 1.0, 0.5, 0.5]))
    assert LengthOrtModel(graphs["any"], graphs["pick"]).select_layers is None


def test_export_refuses_configurations_outside_select_layers(graphs, tmp_path):
    from slimformer.export.length import export_length_onnx

    with pytest.raises(ConfigError, match="drops tokens at layer"):
        export_length_onnx(graphs["model"], tmp_path / "m.onnx", R([0.5, 0.5, 0.5, 0.5]), select_layers=[3])
    with pytest.raises(ConfigError, match="within 0..3"):
        export_length_onnx(graphs["model"], tmp_path / "m.onnx", None, select_layers=[4])
    assert not (tmp_path / "m.onnx").exists()


def test_export_stage_length_graph_keeps_old_run_identities():
    from slimformer.stages.export import ExportConfig

    assert "length_graph" not in identity_dump(ExportConfig())
    assert identity_dump(ExportConfig(length_graph="pick"))["length_graph"] == "pick"
    with pytest.raises(ValueError, match="length_graph"):
        ExportConfig(length_graph="some")
