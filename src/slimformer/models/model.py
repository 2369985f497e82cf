"""``SlimModel``: a Hugging Face task model driven by :func:`encoder_forward`.

The wrapped model is an ordinary ``AutoModelForSequenceClassification`` /
``AutoModelForQuestionAnswering`` / ``AutoModel`` (BERT, RoBERTa, XLM-R), so a saved slimformer model is
a regular Hugging Face checkpoint. Only the forward pass is ours (see :mod:`slimformer.models.encoder`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import torch.nn.functional as F
from torch import Tensor, nn
from transformers.utils import ModelOutput

from slimformer.models.encoder import Capture, EncoderOutput, TokenSelector, encoder_forward

__all__ = ["HeadKind", "SlimModel", "TaskOutput", "SUPPORTED_ARCHITECTURES", "count_parameters"]

#: ``config.model_type`` values whose layer layout ``encoder_forward`` drives (PEFT-style adapter table:
#: the name of the attribute that holds the base model, and whether the classifier reads the pooler).
SUPPORTED_ARCHITECTURES: dict[str, dict[str, object]] = {
    "bert": {"pooler_classifier": True},
    "roberta": {"pooler_classifier": False},
    "xlm-roberta": {"pooler_classifier": False},
}


class HeadKind(str, Enum):
    """The task head on top of the encoder."""

    CLASSIFICATION = "classification"  # sequence classification; num_labels == 1 means regression
    QA = "qa"  # extractive question answering: start/end logits per token
    NONE = "none"  # bare encoder (sentence embeddings)


@dataclass
class TaskOutput(ModelOutput):
    """Output of :meth:`SlimModel.forward`.

    Attributes:
        loss: scalar task loss when labels were given (CE for classification, MSE for regression,
            mean of start and end CE for QA, as in Hugging Face).
        logits: ``(B, num_labels)`` for classification.
        start_logits, end_logits: ``(B, N)`` for QA (full length: Drop-and-Restore when tokens are dropped).
        encoder: the :class:`EncoderOutput` (when internals were captured, tokens dropped, or the head is
            ``none``: then ``encoder.last_hidden_state`` is the output).
    """

    loss: Tensor | None = None
    logits: Tensor | None = None
    start_logits: Tensor | None = None
    end_logits: Tensor | None = None
    encoder: EncoderOutput | None = None


class SlimModel(nn.Module):
    """A BERT-family task model whose forward exposes internals and per-layer token keeping.

    Args:
        hf_model: an HF ``*ForSequenceClassification``, ``*ForQuestionAnswering`` or base model of a
            type in :data:`SUPPORTED_ARCHITECTURES`.
        head: which head ``hf_model`` carries.

    Raises:
        ValueError: the architecture is not supported.
    """

    def __init__(self, hf_model: nn.Module, head: HeadKind) -> None:
        super().__init__()
        model_type = hf_model.config.model_type
        if model_type not in SUPPORTED_ARCHITECTURES:
            raise ValueError(
                f"model_type {model_type!r} is not supported; expected one of {sorted(SUPPORTED_ARCHITECTURES)}"
            )
        self.hf = hf_model
        self.head = HeadKind(head)
        self._arch = SUPPORTED_ARCHITECTURES[model_type]
        self.train(hf_model.training)  # mirror the wrapped model's mode (from_pretrained returns it in eval)

    @property
    def config(self):  # noqa: ANN201 - transformers PretrainedConfig
        """The Hugging Face config of the wrapped model."""
        return self.hf.config

    @property
    def base(self) -> nn.Module:
        """The HF base model (``BertModel`` / ``RobertaModel`` / ``XLMRobertaModel``)."""
        if self.head is HeadKind.NONE:
            return self.hf
        return getattr(self.hf, self.hf.base_model_prefix)

    @property
    def num_layers(self) -> int:
        """Number of encoder layers ``L``."""
        return len(self.base.encoder.layer)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
        start_positions: Tensor | None = None,
        end_positions: Tensor | None = None,
        *,
        keep: Sequence[Tensor | None] | TokenSelector | None = None,
        capture: Capture | None = None,
        restore: bool | None = None,
        layers: Sequence[int] | None = None,
    ) -> TaskOutput:
        """Forward pass.

        Args:
            input_ids: ``(B, N)``; attention_mask, token_type_ids: ``(B, N)`` or ``None``.
            labels: ``(B,)`` class ids (long) or regression targets (float), classification only.
            start_positions, end_positions: ``(B,)`` token indices of the answer span, QA only.
            keep: per-layer token keeping, see :func:`encoder_forward`.
            capture: internals to return in ``output.encoder``.
            restore: Drop-and-Restore; defaults to ``True`` for QA (so logits exist for every token) and
                ``False`` otherwise.
            layers: LayerDrop, the indices of the layers to run (see :func:`encoder_forward`).

        Returns:
            :class:`TaskOutput`.
        """
        if restore is None:
            restore = self.head is HeadKind.QA
        enc = encoder_forward(
            self.base,
            input_ids,
            attention_mask,
            token_type_ids,
            keep=keep,
            capture=capture,
            restore=restore,
            layers=layers,
        )
        # A bare encoder (HeadKind.NONE) has nothing but the encoder output to return.
        wants_encoder = capture is not None or keep is not None or self.head is HeadKind.NONE
        out = TaskOutput(encoder=enc if wants_encoder else None)
        seq = enc.last_hidden_state  # (B, n, D)
        if self.head is HeadKind.CLASSIFICATION:
            out.logits = self._classify(seq)
            if labels is not None:
                out.loss = self._classification_loss(out.logits, labels)
        elif self.head is HeadKind.QA:
            if seq.shape[1] != input_ids.shape[1]:
                raise ValueError("QA needs full-length hidden states: pass restore=True when dropping tokens")
            logits = self.hf.qa_outputs(seq)  # (B, N, 2)
            start, end = logits.split(1, dim=-1)
            out.start_logits, out.end_logits = start.squeeze(-1), end.squeeze(-1)
            if start_positions is not None and end_positions is not None:
                out.loss = _span_loss(out.start_logits, out.end_logits, start_positions, end_positions)
        return out

    def _classify(self, seq: Tensor) -> Tensor:
        """``(B, n, D)`` -> ``(B, num_labels)`` with the HF head's modules (row 0 is [CLS]/<s>)."""
        if self._arch["pooler_classifier"]:
            pooled = self.base.pooler(seq)  # tanh(W·h_[CLS] + b), (B, D)
            return self.hf.classifier(self.hf.dropout(pooled))
        return self.hf.classifier(seq)  # RoBERTa-style head reads features[:, 0]

    def _classification_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        if logits.shape[-1] == 1:  # regression (STS-B)
            return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).view(-1))
        return F.cross_entropy(logits, labels.view(-1))


def _span_loss(start: Tensor, end: Tensor, start_pos: Tensor, end_pos: Tensor) -> Tensor:
    """Mean of start and end cross-entropy; positions outside ``0..N-1`` are ignored (HF convention)."""
    n = start.shape[1]
    start_pos = start_pos.view(-1).clamp(0, n)
    end_pos = end_pos.view(-1).clamp(0, n)
    start_loss = F.cross_entropy(start, start_pos, ignore_index=n)
    end_loss = F.cross_entropy(end, end_pos, ignore_index=n)
    return (start_loss + end_loss) / 2


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (elements) of ``model``."""
    return sum(p.numel() for p in model.parameters())
