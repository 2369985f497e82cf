"""ONNX export of a length-adaptive model: one graph, every length configuration, any input length.

Choice: the length configuration is a **graph input**, not a constant. The graph takes, besides ``input_ids``,
``attention_mask`` (and ``token_type_ids`` for BERT), two optional inputs (:func:`~slimformer.length.selector.
length_inputs`): ``length_ratios`` ``(L,)`` float32 and ``length_caps`` ``(L,)`` int64. At layer ``i`` it keeps
the ``k_i = clip(min(ceil(r_i · N − 0.001), cap_i), 1, k_{i−1})`` most significant tokens (``N`` = each row's real
length; surplus rows of shorter rows in a padded batch are masked), computed inside the graph
(``ReduceSum``/``Ceil``/``TopK``/``Sort``), so one exported file
serves any input length and any configuration: a search result or a budget is picked per call with
:func:`length_feeds`, without re-exporting. Both inputs are also initializers holding the configuration given
at export (ONNX "overridable initializers"), so a caller that feeds only ids and mask (``OrtModel``, the
benchmark, the int8 quantizer's calibration) runs that default configuration.

Why not one export per configuration: a constant ``k`` per layer would fix the input length too (``k`` depends
on ``N``), and a deployment that serves several budgets would need one file per budget and per length.

One exception, for speed: ``select_layers`` leaves the selection ops out of the other layers. A layer at which the
deployed configuration keeps every row entering it (ratio 1, or the previous layer's ratio:
:meth:`~slimformer.length.LengthConfig.selecting_layers`) selects nothing, yet its ops (significance MatMul,
``TopK``, ``Sort``, row ``Gather``) still run: at full length on SQuAD they cost 7% of the int8 graph's time in all
(docs/results.md, the SQuAD pick graph). A graph exported with
``select_layers=config.selecting_layers()`` (export stage ``length_graph: pick``) still takes both inputs and any
input length, and serves every configuration that drops tokens only at those layers; its metadata
(``slimformer.length_select_layers``) names them, and :class:`~slimformer.export.length_ort.LengthOrtModel`
refuses any other configuration.

No patching is needed: the selector is passed explicitly to the model's forward and computes ``k`` with tensor
operations when traced (TorchScript exporter; the dynamo exporter cannot express a data-dependent ``k``).
Parity with :func:`~slimformer.length.selector.forward_with_config` is checked per configuration by
:func:`validate_length_outputs`. int8 dynamic quantization (``slimformer.export.quantize_dynamic_int8``) works
on the graph unchanged (only ``MatMul`` weights are quantized).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from slimformer._version import __version__
from slimformer.errors import ConfigError, ExportError
from slimformer.export._proto import add_metadata, atomic_output
from slimformer.export.onnx import export_mode
from slimformer.export.ort import require_onnxruntime
from slimformer.export.parity import check_outputs
from slimformer.export.spec import DummyInputGenerator, OnnxSpec, onnx_spec
from slimformer.length.config import LengthConfig
from slimformer.length.selector import LengthSelector, check_select_layers, forward_with_config, length_inputs
from slimformer.models import HeadKind, SlimModel

__all__ = [
    "LENGTH_GRAPH_VERSION",
    "LENGTH_INPUTS",
    "LengthExportWrapper",
    "export_length_onnx",
    "graph_select_layers",
    "length_feeds",
    "validate_length_outputs",
]

#: Names of the extra graph inputs, in order.
LENGTH_INPUTS = ("length_ratios", "length_caps")

#: Version of the traced selection ops, recorded in the file (``slimformer.length_graph``) and in cached exports'
#: stamps (:func:`~slimformer.stages._length_artifacts.export_length_int8`), so a change of the ops re-exports them.
#: 2: significance as one MatMul, row Gather / ScatterND instead of GatherElements / ScatterElements.
LENGTH_GRAPH_VERSION = 2


class LengthExportWrapper(nn.Module):
    """``(*spec.inputs, length_ratios, length_caps)`` -> the head's outputs, with token selection traced in.

    Args:
        model: a classification or span-QA :class:`SlimModel`.
        spec: its :class:`~slimformer.export.spec.OnnxSpec`.
        restore: Drop-and-Restore (default: ``True`` for QA, ``False`` for classification).
        select_layers: the layers (0-based) that get selection ops; ``None``: every layer.
    """

    def __init__(
        self,
        model: SlimModel,
        spec: OnnxSpec,
        restore: bool | None = None,
        select_layers: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.model, self.spec = model, spec
        self.restore = model.head is HeadKind.QA if restore is None else restore
        self.select_layers = select_layers

    def forward(self, *args: Tensor) -> tuple[Tensor, ...]:
        named = dict(zip(self.spec.inputs + LENGTH_INPUTS, args))
        selector = LengthSelector(
            named["length_ratios"], named["length_caps"], named["attention_mask"], self.select_layers
        )
        out = self.model(
            named["input_ids"],
            named["attention_mask"],
            named.get("token_type_ids"),
            keep=selector,
            restore=self.restore,
        )
        return tuple(getattr(out, name) for name in self.spec.outputs)


def length_feeds(config: LengthConfig | None, num_layers: int) -> dict[str, np.ndarray]:
    """The two extra ONNX inputs for ``config`` (``None``: the full model), as numpy arrays.

    Raises:
        ConfigError: ``config`` does not have ``num_layers`` layers.
    """
    ratios, caps = length_inputs(config, num_layers)
    return {"length_ratios": ratios.numpy(), "length_caps": caps.numpy()}


def graph_select_layers(metadata: dict[str, str], source: str = "graph") -> tuple[int, ...] | None:
    """The layers (0-based) a length-adaptive graph selects tokens at, from its metadata (``None``: every layer).

    Raises:
        ExportError: ``slimformer.length_select_layers`` is not a JSON list of layer indices (names ``source``).
    """
    raw = metadata.get("slimformer.length_select_layers")
    if raw is None:
        return None
    try:
        layers = json.loads(raw)
    except json.JSONDecodeError:
        layers = None
    if not isinstance(layers, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
        raise ExportError(f"{source}: metadata slimformer.length_select_layers is {raw!r}; expected a list of ints")
    return tuple(layers)


def _make_inputs_overridable(path: Path, defaults: dict[str, np.ndarray]) -> None:
    """Add an initializer per length input holding its default (the input becomes optional to feed)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    names = {i.name for i in proto.graph.input}
    for name, value in defaults.items():
        if name not in names:
            raise ExportError(f"{path}: the traced graph has no input {name!r}; cannot set its default")
        proto.graph.initializer.append(numpy_helper.from_array(value, name))
    onnx.save(proto, str(path))


def export_length_onnx(
    model: SlimModel,
    out_path: str | os.PathLike[str],
    config: LengthConfig | None = None,
    *,
    opset: int = 17,
    restore: bool | None = None,
    validate: bool = True,
    validate_configs: Sequence[LengthConfig | None] = (),
    atol: float = 1e-4,
    trace_batch_size: int = 2,
    trace_seq_len: int = 16,
    select_layers: Sequence[int] | None = None,
) -> Path:
    """Export ``model`` with per-layer token selection to one ``.onnx`` file (see module notes).

    Args:
        model: the fp32 classification / QA model (its training flag is restored afterwards).
        out_path: the file to write (atomically; a failed export leaves any previous file untouched).
        config: the default length configuration stored in the graph (``None``: the full model).
        opset: ONNX opset (TorchScript exporter).
        restore: Drop-and-Restore (default: ``True`` for QA, ``False`` for classification).
        validate: check with :func:`validate_length_outputs` before the rename, for ``config``, every entry of
            ``validate_configs``, and the default (nothing fed).
        validate_configs: further configurations to check.
        atol: tolerance of the parity check.
        trace_batch_size, trace_seq_len: dummy input shape for tracing (not fixed in the graph).
        select_layers: the layers (0-based) that get selection ops (``None``: every layer, so the graph serves
            every configuration); e.g. ``config.selecting_layers()`` for the fastest graph of one pick (see the
            module notes). ``config`` and every ``validate_configs`` entry must drop tokens only there.

    Returns:
        ``out_path`` as a :class:`Path`.

    Raises:
        ConfigError: ``config`` does not fit the model, or drops tokens outside ``select_layers``; a layer index
            is out of range. ExportError: the head is ``none``, or ONNX Runtime and :func:`forward_with_config`
            differ by more than ``atol``.
    """
    if model.head is HeadKind.NONE:
        raise ExportError("length-adaptive export needs a classification or QA head (got head 'none')")
    out_path = Path(out_path)
    num_layers = model.num_layers
    defaults = length_feeds(config, num_layers)
    if select_layers is not None:
        select_layers = tuple(sorted({int(i) for i in select_layers}))
        if any(i < 0 or i >= num_layers for i in select_layers):
            raise ConfigError(f"select_layers {list(select_layers)}: expected layer indices within 0..{num_layers - 1}")
        for c in (config, *validate_configs):
            check_select_layers(c, select_layers, f"export {out_path.name}")
    spec = onnx_spec(model)
    gen = DummyInputGenerator(model.config, seed=0)
    dummy = gen.generate(spec.inputs, trace_batch_size, min(trace_seq_len, gen.max_seq_len))
    args = tuple(dummy[n] for n in spec.inputs) + tuple(torch.from_numpy(defaults[n]) for n in LENGTH_INPUTS)
    axes = spec.dynamic_axes
    with atomic_output(out_path) as tmp:
        with export_mode(model), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            # row indices come from TopK / arange, never negative (the case the exporter warns about)
            warnings.filterwarnings("ignore", message=r"Exporting aten::index operator of advanced indexing")
            torch.onnx.export(
                LengthExportWrapper(model, spec, restore, select_layers).eval(),
                args,
                str(tmp),
                input_names=list(spec.inputs + LENGTH_INPUTS),
                output_names=list(spec.outputs),
                dynamic_axes=axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        _make_inputs_overridable(tmp, defaults)
        add_metadata(
            tmp,
            {
                "slimformer.version": __version__,
                "slimformer.head": model.head.value,
                "slimformer.model_type": model.config.model_type,
                "slimformer.exporter": "torchscript",
                "slimformer.inputs": json.dumps(list(spec.inputs)),
                "slimformer.outputs": json.dumps(list(spec.outputs)),
                "slimformer.length_inputs": json.dumps(list(LENGTH_INPUTS)),
                "slimformer.length_graph": str(LENGTH_GRAPH_VERSION),
                "slimformer.length_config": json.dumps((config or LengthConfig.full(num_layers)).to_dict()),
                **(
                    {}
                    if select_layers is None
                    else {"slimformer.length_select_layers": json.dumps(list(select_layers))}
                ),
                "slimformer.num_hidden_layers": str(num_layers),
                "slimformer.num_attention_heads": str(model.config.num_attention_heads),
                "slimformer.hidden_size": str(model.config.hidden_size),
                "slimformer.intermediate_size": str(model.config.intermediate_size),
            },
        )
        if validate:
            configs = [config, *validate_configs]
            validate_length_outputs(model, tmp, configs, atol=atol, restore=restore, default_config=config)
    return out_path


def _session(path: str | os.PathLike[str]):  # noqa: ANN202 - onnxruntime.InferenceSession
    """A CPU session that does not log ORT's note on overridable initializers (they are intended here)."""
    ort = require_onnxruntime()
    so = ort.SessionOptions()
    so.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def validate_length_outputs(
    model: SlimModel,
    onnx_path: str | os.PathLike[str],
    configs: Sequence[LengthConfig | None],
    *,
    atol: float = 1e-4,
    restore: bool | None = None,
    default_config: LengthConfig | None | bool = False,
    batch_sizes: Sequence[int] = (1, 3),
    seq_lens: Sequence[int] = (7, 33),
    seed: int = 0,
) -> float:
    """Compare ONNX Runtime with :func:`forward_with_config` for each configuration, batch size and length.

    Every output is compared at every position (padded ones included). With ``default_config`` (a config or
    ``None`` for the full model) the graph is also run without the length inputs and compared with it. A graph
    whose metadata names its selecting layers (``select_layers`` at export) is compared with the same selection.

    Returns:
        The largest absolute difference seen.

    Raises:
        ExportError: a shape differs, or a difference exceeds ``atol`` (names the output, config and shape).
        ConfigError: a configuration drops tokens at a layer the graph does not select at.
    """
    spec = onnx_spec(model)
    session = _session(onnx_path)
    select = graph_select_layers(session.get_modelmeta().custom_metadata_map, str(onnx_path))
    for c in (*configs, *([default_config] if default_config is not False else [])):
        check_select_layers(c, select, Path(onnx_path).name)
    gen = DummyInputGenerator(model.config, seed=seed)
    runs: list[tuple[LengthConfig | None, bool]] = [(c, True) for c in configs]
    if default_config is not False:
        runs.append((default_config, False))
    worst = 0.0
    with export_mode(model):
        for bsz in batch_sizes:
            for n in sorted({min(s, gen.max_seq_len) for s in seq_lens}):
                inputs = gen.generate(spec.inputs, bsz, n)
                feeds = {k: v.numpy() for k, v in inputs.items()}
                for config, feed_lengths in runs:
                    ref = forward_with_config(
                        model,
                        **inputs,
                        config=config or LengthConfig.full(model.num_layers),
                        restore=restore,
                        select_layers=select,
                    )
                    extra = length_feeds(config, model.num_layers) if feed_lengths else {}
                    got = dict(zip(spec.outputs, session.run(list(spec.outputs), {**feeds, **extra})))
                    where = f"config {config.values if config else 'full'}, batch {bsz}, seq_len {n}"
                    expected = {name: getattr(ref, name).float().numpy() for name in spec.outputs}
                    diff = check_outputs(onnx_path, spec.outputs, got, expected, atol=atol, where=where)
                    worst = max(worst, diff)
    return worst
