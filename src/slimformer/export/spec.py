"""ONNX export specs: which inputs/outputs a model's graph has, and dummy inputs to trace and check it.

As in optimum's ``OnnxConfig``: the spec is derived from the architecture (does it use segment ids?) and
the task head (which outputs), and names the dynamic axes ``batch_size`` and ``sequence_length``.
Dummy inputs come from :class:`DummyInputGenerator`, never from ad-hoc tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from slimformer.models import HeadKind, SlimModel

__all__ = ["OnnxSpec", "onnx_spec", "uses_token_type_ids", "DummyInputGenerator", "OUTPUT_NAMES"]

#: Graph outputs per head, in the order the export wrapper returns them.
OUTPUT_NAMES: dict[HeadKind, tuple[str, ...]] = {
    HeadKind.CLASSIFICATION: ("logits",),
    HeadKind.QA: ("start_logits", "end_logits"),
    HeadKind.NONE: ("last_hidden_state",),
}

#: Which axes of each output are dynamic (the others are fixed: num_labels, hidden size).
_OUTPUT_AXES: dict[str, dict[int, str]] = {
    "logits": {0: "batch_size"},
    "start_logits": {0: "batch_size", 1: "sequence_length"},
    "end_logits": {0: "batch_size", 1: "sequence_length"},
    "last_hidden_state": {0: "batch_size", 1: "sequence_length"},
}


def uses_token_type_ids(config: object) -> bool:
    """Whether the graph takes ``token_type_ids``: only when the model has more than one segment embedding.

    RoBERTa / XLM-R checkpoints have ``type_vocab_size == 1``: every token uses segment row 0, which is
    exactly what the embedding layer does when ``token_type_ids`` is absent, so the input is dropped.
    """
    return int(getattr(config, "type_vocab_size", 0) or 0) > 1


@dataclass(frozen=True)
class OnnxSpec:
    """The I/O signature of an exported model.

    Attributes:
        inputs: graph input names, in positional order; all int64 ``(batch_size, sequence_length)``.
        outputs: graph output names (see :data:`OUTPUT_NAMES`).
    """

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``{name: {axis: axis_name}}`` for every input and output (TorchScript exporter format)."""
        axes = {name: {0: "batch_size", 1: "sequence_length"} for name in self.inputs}
        axes.update({name: dict(_OUTPUT_AXES[name]) for name in self.outputs})
        return axes


def onnx_spec(model: SlimModel) -> OnnxSpec:
    """The :class:`OnnxSpec` of ``model``: ids, attention mask (+ segment ids) -> the head's outputs."""
    inputs = ("input_ids", "attention_mask") + (("token_type_ids",) if uses_token_type_ids(model.config) else ())
    return OnnxSpec(inputs=inputs, outputs=OUTPUT_NAMES[model.head])


class DummyInputGenerator:
    """Random but well-formed encoder inputs for tracing and parity checks.

    Token ids avoid the pad id except in padded positions; every row after the first is right-padded by a
    different amount (at least one real token per row); with segment ids, the second half of each row's real
    tokens is segment 1.

    Args:
        config: the Hugging Face config (``vocab_size``, ``pad_token_id``, ``type_vocab_size``,
            ``max_position_embeddings``).
        seed: seed of the private generator (the global RNG is untouched).
    """

    def __init__(self, config: object, *, seed: int = 0) -> None:
        self.vocab_size = int(config.vocab_size)
        self.pad_token_id = int(getattr(config, "pad_token_id", 0) or 0)
        self.type_vocab_size = int(getattr(config, "type_vocab_size", 1) or 1)
        # RoBERTa positions start at pad_token_id + 1, so fewer positions are usable.
        offset = self.pad_token_id + 1 if config.model_type in ("roberta", "xlm-roberta") else 0
        self.max_seq_len = int(config.max_position_embeddings) - offset
        self._gen = torch.Generator().manual_seed(seed)

    def generate(self, names: tuple[str, ...], batch_size: int, seq_len: int) -> dict[str, Tensor]:
        """Inputs ``{name: (batch_size, seq_len) int64}`` for the given input names.

        Raises:
            ValueError: ``seq_len`` exceeds the model's usable positions, or a name is unknown.
        """
        if not 1 <= seq_len <= self.max_seq_len:
            raise ValueError(f"seq_len {seq_len} is outside 1..{self.max_seq_len} (the model's positions)")
        ids = torch.randint(0, self.vocab_size, (batch_size, seq_len), generator=self._gen)
        ids[ids == self.pad_token_id] = (self.pad_token_id + 1) % self.vocab_size
        lengths = [max(1, seq_len - (i * seq_len) // (batch_size + 1)) for i in range(batch_size)]
        mask = torch.zeros(batch_size, seq_len, dtype=torch.long)
        types = torch.zeros(batch_size, seq_len, dtype=torch.long)
        for i, n in enumerate(lengths):
            mask[i, :n] = 1
            ids[i, n:] = self.pad_token_id
            if self.type_vocab_size > 1:
                types[i, n // 2 : n] = 1
        known = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"no dummy generator for input(s) {unknown}; expected some of {sorted(known)}")
        return {n: known[n] for n in names}
