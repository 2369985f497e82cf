"""Export a :class:`SlimModel`'s plain forward to ONNX, and check the file against PyTorch.

Exporter choice (measured on MiniLM-L6, torch 2.13, onnxruntime 1.31): the TorchScript exporter
(``dynamo=False``, the default here) gives a graph that ONNX Runtime's transformer optimizer fuses fully
(6 ``Attention``, ``EmbedLayerNormalization``, 12 ``SkipLayerNormalization``, 6 ``BiasGelu``) and that
``quantize_dynamic`` turns into ``DynamicQuantizeMatMul`` kernels; it exports in ~2 s. The dynamo exporter
(``dynamo=True``) works too, but needs opset ≥ 18, takes ~7 s, and its graph gets no ``Attention`` fusion.
torch 2.13 still ships the TorchScript exporter; its ``DeprecationWarning`` is silenced around the call only.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from slimformer._version import __version__
from slimformer.errors import ExportError
from slimformer.export._proto import add_metadata, atomic_output
from slimformer.export.ort import OrtModel
from slimformer.export.parity import check_outputs
from slimformer.export.qdq import qdq_export_modules, summary_json
from slimformer.export.spec import DummyInputGenerator, OnnxSpec, onnx_spec
from slimformer.models import Capture, HeadKind, SlimModel

__all__ = ["export_onnx", "validate_outputs", "ExportWrapper", "export_mode"]


class ExportWrapper(nn.Module):
    """``(input_ids, attention_mask[, token_type_ids])`` -> a tuple of outputs (what the exporters trace).

    Calls :meth:`SlimModel.forward` with no token dropping; for ``HeadKind.NONE`` it asks for an empty
    :class:`Capture` so the encoder output (``last_hidden_state`` ``(B, N, D)``) is returned.
    """

    def __init__(self, model: SlimModel, spec: OnnxSpec) -> None:
        super().__init__()
        self.model = model
        self.spec = spec

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
    ) -> tuple[Tensor, ...]:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        if self.model.head is HeadKind.NONE:
            return (self.model(**kwargs, capture=Capture()).encoder.last_hidden_state,)
        out = self.model(**kwargs)
        return tuple(getattr(out, name) for name in self.spec.outputs)


@contextmanager
def export_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with autograd off for tracing; restores its training flag on exit."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def _export_torchscript(wrapper: ExportWrapper, args: tuple[Tensor, ...], path: Path, opset: int) -> None:
    spec = wrapper.spec
    with warnings.catch_warnings():
        # Deprecation notices of the TorchScript exporter itself, and the tracer's note that the head size
        # becomes a constant (it is one); dynamic batch/sequence are checked by validate_outputs instead.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            wrapper,
            args,
            str(path),
            input_names=list(spec.inputs),
            output_names=list(spec.outputs),
            dynamic_axes=spec.dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def _export_dynamo(wrapper: ExportWrapper, args: tuple[Tensor, ...], path: Path, opset: int, max_len: int) -> None:
    spec = wrapper.spec
    batch = torch.export.Dim("batch_size")
    seq = torch.export.Dim("sequence_length", max=max_len)
    with warnings.catch_warnings():
        # Notes that inputs share the batch/sequence axes (intended), and torch-internal deprecations.
        warnings.filterwarnings("ignore", message=r".*axis name.*will not be used.*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        program = torch.onnx.export(
            wrapper,
            args,
            input_names=list(spec.inputs),
            output_names=list(spec.outputs),
            dynamic_shapes=[{0: batch, 1: seq} for _ in spec.inputs],
            opset_version=max(opset, 18),
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    program.save(str(path), external_data=False)


def export_onnx(
    model: SlimModel,
    out_path: str | os.PathLike[str],
    *,
    opset: int = 17,
    dynamo: bool = False,
    validate: bool = True,
    atol: float = 1e-4,
    trace_batch_size: int = 2,
    trace_seq_len: int = 16,
) -> Path:
    """Export the plain forward of ``model`` (no token dropping, no capture) to one ``.onnx`` file.

    Inputs (int64, dynamic axes ``batch_size``, ``sequence_length``): ``input_ids``, ``attention_mask`` and,
    only when ``config.type_vocab_size > 1`` (BERT), ``token_type_ids``. Outputs: ``logits``
    ``(batch_size, num_labels)`` (classification), ``start_logits`` / ``end_logits``
    ``(batch_size, sequence_length)`` (QA), ``last_hidden_state`` ``(batch_size, sequence_length, hidden)``
    (bare encoder). Weights are stored inside the file (protobuf limit: 2 GB).

    A QAT-converted model (:class:`~slimformer.quant.QuantizedLinear` modules) is exported as a QDQ graph with
    int8 weight codes and its dynamic int8 activation quantizers (:mod:`slimformer.export.qdq`); its metadata
    ``slimformer.int8`` records ``{"mode": "qat", ...}``.

    The file is written under a temporary name, checked with :func:`validate_outputs` when ``validate``, and
    only then renamed to ``out_path``: a failed export leaves any previous file untouched.

    Args:
        model: the fp32 model; its training flag is restored afterwards.
        out_path: the ``.onnx`` file to write (parent folders are created).
        opset: ONNX opset (the dynamo exporter uses at least 18).
        dynamo: use the ``torch.export``-based exporter instead of the TorchScript one (see module notes).
        validate: run :func:`validate_outputs` with ``atol`` before the rename.
        atol: tolerance of the parity check (max abs difference of every output).
        trace_batch_size, trace_seq_len: shape of the dummy inputs used for tracing (not fixed in the graph).

    Returns:
        ``out_path`` as a :class:`Path`.

    Raises:
        ExportError: the exported graph differs from PyTorch by more than ``atol``; a quantized Linear has
            per-group weight scales (not exportable as one int8 matmul); ``dynamo=True`` for a quantized model.
        ImportError: onnx / onnxruntime are not installed (``pip install 'slimformer[onnx]'``).
    """
    out_path = Path(out_path)
    spec = onnx_spec(model)
    gen = DummyInputGenerator(model.config, seed=0)
    dummy = gen.generate(spec.inputs, trace_batch_size, min(trace_seq_len, gen.max_seq_len))
    args = tuple(dummy[name] for name in spec.inputs)
    quantization = summary_json(model)
    if quantization and dynamo:
        raise ExportError("a quantized model exports with the TorchScript exporter only (dynamo=False)")
    with atomic_output(out_path) as tmp:
        with export_mode(model), qdq_export_modules(model):
            wrapper = ExportWrapper(model, spec).eval()
            if dynamo:
                _export_dynamo(wrapper, args, tmp, opset, gen.max_seq_len)
            else:
                _export_torchscript(wrapper, args, tmp, opset)
        add_metadata(
            tmp,
            {
                "slimformer.version": __version__,
                "slimformer.head": model.head.value,
                "slimformer.model_type": model.config.model_type,
                "slimformer.exporter": "dynamo" if dynamo else "torchscript",
                "slimformer.inputs": json.dumps(list(spec.inputs)),
                "slimformer.outputs": json.dumps(list(spec.outputs)),
                "slimformer.num_attention_heads": str(model.config.num_attention_heads),
                "slimformer.hidden_size": str(model.config.hidden_size),
                "slimformer.intermediate_size": str(model.config.intermediate_size),
                **({"slimformer.int8": quantization} if quantization else {}),
            },
        )
        if validate:
            validate_outputs(model, tmp, atol=atol)
    return out_path


def validate_outputs(
    model: SlimModel,
    onnx_path: str | os.PathLike[str],
    *,
    atol: float = 1e-4,
    batch_sizes: Sequence[int] = (1, 3),
    seq_lens: Sequence[int] = (7, 33),
    seed: int = 0,
) -> float:
    """Compare ONNX Runtime with PyTorch on generated inputs (rows right-padded by different amounts).

    Every output is compared at every position, padded ones included, for each batch size × sequence length
    (which also checks that the dynamic axes really are dynamic).

    Args:
        model: the PyTorch model the file was exported from.
        onnx_path: the exported file.
        atol: largest allowed absolute difference.
        batch_sizes, seq_lens: input shapes to try (seq_lens above the model's positions are clipped).
        seed: seed of the :class:`DummyInputGenerator`.

    Returns:
        The largest absolute difference seen over all outputs and shapes.

    Raises:
        ExportError: the graph's input/output names are not the model's, a shape differs, or the difference
            exceeds ``atol`` (the message names the output and the shape).
    """
    spec = onnx_spec(model)
    session = OrtModel(onnx_path)
    if set(session.input_names) != set(spec.inputs) or session.output_names != spec.outputs:
        raise ExportError(
            f"{onnx_path}: graph inputs {list(session.input_names)}, outputs {list(session.output_names)}; "
            f"the model needs inputs {list(spec.inputs)} and outputs {list(spec.outputs)}"
        )
    gen = DummyInputGenerator(model.config, seed=seed)
    worst = 0.0
    with export_mode(model):
        wrapper = ExportWrapper(model, spec).eval()
        for bsz in batch_sizes:
            for n in sorted({min(s, gen.max_seq_len) for s in seq_lens}):
                inputs = gen.generate(spec.inputs, bsz, n)
                expected = wrapper(*(inputs[name] for name in spec.inputs))
                ref = {name: out.float().numpy() for name, out in zip(spec.outputs, expected)}
                diff = check_outputs(
                    onnx_path, spec.outputs, session(inputs), ref, atol=atol, where=f"batch {bsz}, seq_len {n}"
                )
                worst = max(worst, diff)
    return worst
