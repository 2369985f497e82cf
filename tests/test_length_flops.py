"""The analytic MACs model of a length configuration, against hand values and against a counted forward."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import make_tiny_model
from slimformer.errors import ConfigError
from slimformer.length import EncoderDims, LengthConfig, config_flops, config_macs, cost_fn, forward_with_config


def test_layer_formula_by_hand():
    dims = EncoderDims(hidden=4, intermediate=8, num_layers=2, head="classification", num_labels=3)
    # layer 1: n_in 10 -> 6: 4*10*16 + 2*100*4 + 2*6*4*8 = 640 + 800 + 384 = 1824
    # layer 2: n_in 6 -> 3:  4*6*16 + 2*36*4 + 2*3*4*8 = 384 + 288 + 192 = 864
    assert config_macs((6, 3), 10, dims) == 1824 + 864
    assert config_macs((6, 3), 10, dims, include_head=True) == 1824 + 864 + 16 + 12
    assert config_flops((6, 3), 10, dims) == 2 * (1824 + 864)
    # the full model: two layers of 10 -> 10: 640 + 800 + 640 = 2080 each
    assert config_macs(None, 10, dims) == 2 * 2080 == config_macs(LengthConfig.full(2), 10, dims)
    qa = EncoderDims(hidden=4, intermediate=8, num_layers=2, head="qa")
    assert config_macs(None, 10, qa, include_head=True) == 2 * 2080 + 2 * 10 * 4


def _counted_flops(model, n, cfg):
    ids = torch.randint(5, 100, (1, n))
    mask = torch.ones_like(ids)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        forward_with_config(model, ids, mask, torch.zeros_like(ids), cfg)
    return counter.get_total_flops()


@pytest.mark.parametrize("head", ["classification", "qa"])
@pytest.mark.parametrize(
    "cfg", [None, LengthConfig.from_lengths([20, 11, 4]), LengthConfig.from_ratios([0.9, 0.5, 0.05])]
)
def test_formula_matches_counted_forward(head, cfg):
    model = make_tiny_model(head, "bert", num_labels=3 if head == "classification" else 2, num_hidden_layers=3)
    n = 24
    expected = config_flops(cfg, n, EncoderDims.from_model(model), include_head=True)
    if cfg is not None:  # the selector's significance MatMul, H·n_in² MACs per layer (outside the FLOPs model)
        heads, n_in = model.config.num_attention_heads, [n, *cfg.lengths_for(n)[:-1]]
        expected += sum(2 * heads * k * k for k in n_in)
    assert _counted_flops(model, n, cfg) == expected


def test_cost_fn_over_genes():
    model = make_tiny_model("classification", "bert", num_labels=2, num_hidden_layers=2)
    cost = cost_fn(model, 16)
    dims = EncoderDims.from_model(model)
    assert cost((16, 16)) == config_macs(None, 16, dims)
    assert cost((12, 5)) < cost((12, 8)) < cost((16, 16))
    assert cost_fn(model, 16, unit="flops")((12, 5)) == 2 * cost((12, 5))
    with pytest.raises(ConfigError, match="increases"):
        cost((5, 12))
    with pytest.raises(ConfigError, match="has 3 layers; the model has 2"):
        cost((5, 4, 3))


def test_formula_reproduces_the_quala_minilm_table():
    # METHODS §2(e): torchprofile MACs ("GFLOPS") of MiniLMv2-L6-H384 at N = 384: 4.76 full,
    # 2.49 for (269, 253, 252, 202, 104, 34), 2.55 for (315, 251, 242, 159, 142, 33)
    dims = EncoderDims(hidden=384, intermediate=1536, num_layers=6, head="qa")
    assert round(config_macs(None, 384, dims) / 1e9, 2) == 4.76
    assert round(config_macs((269, 253, 252, 202, 104, 34), 384, dims) / 1e9, 2) == 2.48  # table: 2.49
    assert round(config_macs((315, 251, 242, 159, 142, 33), 384, dims) / 1e9, 2) == 2.55
