"""Length-Adaptive Transformer (Kim & Cho, ACL 2021, https://arxiv.org/abs/2010.07003): length configurations,
their FLOPs, attention-significance token selection with Drop-and-Restore, LengthDrop / LayerDrop / sandwich
sampling. The Trainer (``slimformer.length.trainer``), the recipe stage (``slimformer.stages.length``) and the
ONNX export (``slimformer.export.length``) are imported from their modules (they pull in heavier libraries).
See docs/length.md.
"""

from slimformer.length.config import LENGTH_CONFIG_FILE, LengthConfig, load_length_config, save_length_config
from slimformer.length.flops import EncoderDims, config_flops, config_macs, cost_fn, layer_macs
from slimformer.length.lengthdrop import (
    SubModel,
    default_layer_drop_prob,
    sample_gene,
    sample_layers,
    sandwich,
    smallest_gene,
)
from slimformer.length.selector import (
    LengthSelector,
    forward_with_config,
    length_inputs,
    token_significance,
    top_k_rows,
)

__all__ = [
    "LENGTH_CONFIG_FILE",
    "LengthConfig",
    "load_length_config",
    "save_length_config",
    "EncoderDims",
    "config_flops",
    "config_macs",
    "cost_fn",
    "layer_macs",
    "SubModel",
    "default_layer_drop_prob",
    "sample_gene",
    "sample_layers",
    "sandwich",
    "smallest_gene",
    "LengthSelector",
    "forward_with_config",
    "length_inputs",
    "token_significance",
    "top_k_rows",
]
