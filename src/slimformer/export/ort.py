"""``OrtModel``: an ONNX Runtime CPU session over an exported model, the artefact that is deployed.

Evaluation and benchmarks run through this wrapper, so int8 accuracy and speed are measured on the very
file that ships. ``onnxruntime`` is imported when a session is built, never at ``import slimformer``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from slimformer.bench.machine import physical_cores
from slimformer.errors import ModelLoadError
from slimformer.export._proto import load_proto

__all__ = ["OrtModel", "require_onnxruntime", "GraphOptLevel", "dynamic_activation_scales"]

GraphOptLevel = Literal["disable", "basic", "extended", "all"]
_OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def require_onnxruntime() -> Any:
    """Import and return ``onnxruntime``.

    Raises:
        ImportError: it is not installed; the message says how to install it.
    """
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError("ONNX Runtime is needed for this: pip install 'slimformer[onnx]'") from e
    return onnxruntime


#: Operators that quantize an activation with a scale computed from that very tensor at run time.
_DYNAMIC_QUANT_OPS = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"})


def dynamic_activation_scales(path: str | os.PathLike[str]) -> bool:
    """Whether an ONNX graph quantizes activations with scales computed per call (so per *batch*) at run time.

    True for ONNX Runtime dynamic int8 PTQ (``DynamicQuantizeLinear`` / ``DynamicQuantizeMatMul``) and for the QDQ
    graph of a QAT model with activation quantizers (a ``QuantizeLinear`` whose scale is computed, ``ReduceMax``
    of the tensor); False for fp32 graphs, static int8 (every scale an initializer or a ``Constant``) and
    weight-only QAT graphs. Such a graph's output for one input depends on the other inputs of its batch (and their
    padding): the scale is the maximum over the whole batch tensor. Subgraphs (``If`` / ``Loop``) are searched too.

    Raises:
        ExportError: ``path`` is not a readable ONNX model.
    """

    def walk(graph: Any, constants: set[str]) -> bool:
        constants = constants | {i.name for i in graph.initializer}
        constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
        for node in graph.node:
            if node.op_type in _DYNAMIC_QUANT_OPS:
                return True
            if node.op_type == "QuantizeLinear" and len(node.input) > 1 and node.input[1] not in constants:
                return True
            for attr in node.attribute:
                subgraphs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
                if any(walk(g, constants) for g in subgraphs):
                    return True
        return False

    return walk(load_proto(path, load_external_data=False).graph, set())


class OrtModel:
    """An ONNX Runtime ``InferenceSession`` (CPU) with pinned thread counts.

    Args:
        path: the ``.onnx`` file.
        intra_op_num_threads: threads inside an operator; defaults to the number of physical cores.
        inter_op_num_threads: threads across operators (1: operators run one after another).
        graph_optimization_level: ONNX Runtime's graph optimizations at load time.

    Raises:
        ModelLoadError: ``path`` does not exist (also a ``FileNotFoundError``), is a folder, or ONNX Runtime cannot
            load it (garbage, truncated or empty file; an op it does not know); one line naming the file.
        ValueError: ``graph_optimization_level`` is not one of ``disable|basic|extended|all``.
        ImportError: onnxruntime is not installed.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        intra_op_num_threads: int | None = None,
        inter_op_num_threads: int = 1,
        graph_optimization_level: GraphOptLevel = "all",
    ) -> None:
        ort = require_onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            if self.path.is_dir():
                raise ModelLoadError(f"{self.path}: is a folder; expected an ONNX model file (.onnx)")
            raise _MissingOnnx(f"{self.path}: no such ONNX file")
        if graph_optimization_level not in _OPT_LEVELS:
            raise ValueError(
                f"graph_optimization_level {graph_optimization_level!r}; expected one of {list(_OPT_LEVELS)}"
            )
        self.intra_op_num_threads = intra_op_num_threads or physical_cores()
        self.inter_op_num_threads = inter_op_num_threads
        self.graph_optimization_level = graph_optimization_level
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.intra_op_num_threads
        so.inter_op_num_threads = inter_op_num_threads
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[graph_optimization_level])
        # errors only: ONNX Runtime's native warnings go straight to file descriptor 2 (e.g. "Initializer
        # length_ratios appears in graph inputs" for every length-adaptive graph, by design); failures still raise
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime's InvalidProtobuf, InvalidArgument, Fail ...: not loadable
            lines = str(e).strip().splitlines() or [type(e).__name__]
            raise ModelLoadError(
                f"{self.path}: ONNX Runtime cannot load this file ({lines[0][:300]}); is it a complete .onnx export?"
            ) from None
        self.input_names: tuple[str, ...] = tuple(i.name for i in self.session.get_inputs())
        self.output_names: tuple[str, ...] = tuple(o.name for o in self.session.get_outputs())
        self._dynamic: bool | None = None

    @property
    def file_size_mb(self) -> float:
        """Size of the ONNX file in MB (10^6 bytes)."""
        return self.path.stat().st_size / 1e6

    @property
    def dynamic_activations(self) -> bool:
        """Whether this graph computes activation scales per batch at run time (:func:`dynamic_activation_scales`):
        then its outputs depend on batching, and evaluation defaults to batch size 1. Read once, then cached."""
        if self._dynamic is None:
            self._dynamic = dynamic_activation_scales(self.path)
        return self._dynamic

    @property
    def metadata(self) -> dict[str, str]:
        """The model's ``metadata_props`` (slimformer writes head, opset, int8 config ... there)."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def settings(self) -> dict[str, Any]:
        """Thread counts and optimization level, for results files."""
        return {
            "intra_op_num_threads": self.intra_op_num_threads,
            "inter_op_num_threads": self.inter_op_num_threads,
            "graph_optimization_level": self.graph_optimization_level,
        }

    def feeds(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The session inputs for ``batch``: only the names the graph declares, as contiguous int64 arrays.

        Extra keys (``labels``, ``token_type_ids`` for a RoBERTa graph, ...) are dropped. A missing
        ``token_type_ids`` is filled with zeros (segment 0, what the model uses when it is not given).

        Raises:
            KeyError: another input the graph declares is missing from ``batch``.
        """
        out = {name: _as_int64(batch[name]) for name in self.input_names if name in batch}
        if "token_type_ids" in self.input_names and "token_type_ids" not in out and "input_ids" in batch:
            out["token_type_ids"] = np.zeros_like(_as_int64(batch["input_ids"]))
        missing = [name for name in self.input_names if name not in out]
        if missing:
            raise KeyError(f"batch has no {missing}; the graph {self.path.name} needs {list(self.input_names)}")
        return {name: out[name] for name in self.input_names}

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run the model.

        Args:
            batch: ``{name: (batch, seq_len) array or tensor}``; see :meth:`feeds`.

        Returns:
            ``{output name: array}``, e.g. ``logits`` ``(batch, num_labels)`` float32.
        """
        results = self.session.run(list(self.output_names), self.feeds(batch))
        return dict(zip(self.output_names, results))

    def __repr__(self) -> str:
        return f"OrtModel({str(self.path)!r}, threads={self.intra_op_num_threads}, inputs={self.input_names})"


class _MissingOnnx(ModelLoadError, FileNotFoundError):
    """A missing ``.onnx`` file: a :class:`ModelLoadError` that is also a ``FileNotFoundError``."""


def _as_int64(value: Any) -> np.ndarray:
    """A contiguous int64 array from an array, a list or a (CPU or GPU) torch tensor."""
    if hasattr(value, "detach"):  # torch.Tensor
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(value, dtype=np.int64)
