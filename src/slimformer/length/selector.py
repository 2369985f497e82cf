"""Token selection by attention significance, and inference with any length configuration.

Paper: Kim & Cho, *Length-Adaptive Transformer*, ACL 2021 (https://arxiv.org/abs/2010.07003), §3, with the
significance score of PoWER-BERT (Goyal et al., ICML 2020); METHODS.md §1(b).

At layer ``i``, after self-attention over the ``n`` rows entering it, the significance of row ``j`` is the
attention it receives, summed over heads and over the *real* query rows::

    s[b, j] = Σ_h Σ_{q : mask[b, q] = 1} A^i[b, h, q, j]                  (B, n)

Padded rows receive exactly 0 attention (their keys are masked); they are ranked below every real row, in
order of position, so which padding rows are kept is deterministic. Row 0 (``[CLS]`` / ``<s>``) is always
kept. The ``k_i`` rows with the largest score are kept **in their original order** (sorted indices; LAT keeps
top-k order, which is the same maths for absolute-position encoders, METHODS pitfall §1(f).8).

Differences from the LAT code, on purpose: pad *queries* are left out of the sum (LAT sums every query row),
so a row's kept tokens do not depend on how much padding its batch has; the probabilities are taken before
attention dropout (pitfall §1(f).7).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from slimformer.errors import ConfigError
from slimformer.length.config import RATIO_SLACK, LengthConfig
from slimformer.models import HeadKind, SlimModel, TaskOutput

__all__ = [
    "token_significance",
    "top_k_rows",
    "length_inputs",
    "check_select_layers",
    "LengthSelector",
    "forward_with_config",
    "NO_CAP",
]

#: The per-layer cap used for keep-ratio configurations (no absolute limit).
NO_CAP = 1 << 30


def token_significance(probs: Tensor, mask: Tensor) -> Tensor:
    """Attention each row receives, summed over heads and real queries; padding ranked last, ``[CLS]`` first.

    Args:
        probs: attention probabilities ``(B, H, n, n)`` (query, key), before dropout.
        mask: 0/1 mask of the rows ``(B, n)``.

    Returns:
        Scores ``(B, n)``: real rows ``≥ 0``, row 0 ``= +finfo.max``, padded row ``j`` ``= −1 − j``.
    """
    m = mask.to(probs.dtype)
    # (B, 1, 1, n) @ (B, H, n, n) -> (B, H, 1, n) -> (B, n): one read of the probabilities, an fp32 MatMul in ONNX
    # (ORT's int8 quantizer leaves activation x activation MatMuls alone); the elementwise mask product and
    # 2-axis ReduceSum it replaces cost as much as a layer's int8 MatMuls in ONNX Runtime
    scores = torch.matmul(m[:, None, None, :], probs).sum(dim=(1, 2))
    pos = torch.cumsum(torch.ones_like(m), dim=1) - 1  # (B, n) positions 0..n-1 (shape-agnostic for export)
    scores = torch.where(mask.bool(), scores, -1.0 - pos)
    return torch.where(pos == 0, torch.full_like(scores, torch.finfo(scores.dtype).max), scores)


def top_k_rows(scores: Tensor, k: int | Tensor) -> Tensor:
    """Indices ``(B, k)`` of the ``k`` largest scores of each row, in increasing (original) order."""
    top = torch.topk(scores, k, dim=1).indices  # (B, n) -> (B, k)
    return torch.sort(top, dim=1).values


def length_inputs(config: LengthConfig | None, num_layers: int) -> tuple[Tensor, Tensor]:
    """The tensor form of a configuration: keep ratios ``(L,)`` float32 and caps ``(L,)`` int64.

    Layer ``i`` keeps ``k_i = clip(min(ceil(r_i · N − 0.001), cap_i), 1, k_{i−1})`` rows. Ratio configs have
    ``cap = NO_CAP``; absolute configs have ``r = 1`` and ``cap = l_i``; ``None`` is the full model. These are
    the two extra inputs of the exported ONNX graph.

    Raises:
        ConfigError: ``config`` does not have ``num_layers`` layers.
    """
    config = (config or LengthConfig.full(num_layers)).check_layers(num_layers)
    if config.ratios is not None:
        return torch.tensor(config.ratios, dtype=torch.float32), torch.full((num_layers,), NO_CAP, dtype=torch.long)
    return torch.ones(num_layers, dtype=torch.float32), torch.tensor(config.lengths, dtype=torch.long)


def check_select_layers(config: LengthConfig | None, select_layers: Sequence[int] | None, where: str) -> None:
    """Check that ``config`` drops tokens only at ``select_layers`` (``None``: every layer selects).

    Raises:
        ConfigError: ``config`` can drop tokens at a layer outside ``select_layers`` (names ``where``, the layers
            and the configuration).
    """
    if config is None or select_layers is None:
        return
    outside = [i for i in config.selecting_layers() if i not in set(select_layers)]
    if outside:
        raise ConfigError(
            f"{where} selects tokens only at layers {[i + 1 for i in select_layers]} (1-based); length configuration "
            f"{config.values} also drops tokens at layer(s) {[i + 1 for i in outside]}; use a graph exported for "
            "every configuration (export stage: length_graph: any)"
        )


class LengthSelector:
    """A :data:`~slimformer.models.TokenSelector` applying a length configuration (one per forward pass).

    The number of rows kept at each layer is computed with tensor operations (so the same code traces into an
    ONNX graph whose configuration is an input), **per batch row**: row ``b`` with ``n_b`` real tokens keeps
    ``k_{b,i} = clip(min(ceil(r_i · n_b − 0.001), cap_i), 1, k_{b,i−1})`` of them, exactly what it keeps alone
    at batch size 1. The batch gathers ``k_i = max_b k_{b,i}`` rows; in a row that keeps fewer, the surplus
    (its lowest-ranked gathered rows) is masked from then on (:data:`~slimformer.models.TokenSelector`'s
    ``row_keep``), so padding never changes what a sentence keeps or its outputs.

    With ``select_layers``, only those layers run a selection; every other layer keeps every row entering it
    (no ops at all, in a traced graph). That is exact for any configuration whose
    :meth:`~slimformer.length.LengthConfig.selecting_layers` lie within ``select_layers``, on every real row; the
    caller checks it (:func:`check_select_layers`).

    Args:
        ratios: ``(L,)`` float32 keep ratios; caps: ``(L,)`` int64 absolute caps (see :func:`length_inputs`).
        attention_mask: ``(B, N)`` 0/1 mask of the input.
        select_layers: the layers (0-based) that select; ``None``: every layer.
    """

    def __init__(
        self, ratios: Tensor, caps: Tensor, attention_mask: Tensor, select_layers: Sequence[int] | None = None
    ) -> None:
        self.ratios, self.caps = ratios, caps
        self.select_layers = None if select_layers is None else frozenset(int(i) for i in select_layers)
        self.n_rows = attention_mask.sum(dim=1)  # (B,) int64: real tokens of each row
        self.prev_k: Tensor = self.n_rows  # (B,) rows each batch row kept at the previous selecting layer
        self.kept: dict[int, int] = {}  # eager only: layer -> rows gathered (max over the batch; tests, reports)

    @classmethod
    def from_config(
        cls,
        config: LengthConfig | None,
        num_layers: int,
        attention_mask: Tensor,
        select_layers: Sequence[int] | None = None,
    ) -> LengthSelector:
        """Build from a :class:`LengthConfig` (``None``: the full model).

        Raises:
            ConfigError: ``config`` has the wrong number of layers, or drops tokens outside ``select_layers``.
        """
        ratios, caps = length_inputs(config, num_layers)
        check_select_layers(config, select_layers, "the selector")
        return cls(ratios.to(attention_mask.device), caps.to(attention_mask.device), attention_mask, select_layers)

    def row_keep_counts(self, layer_idx: int) -> Tensor:
        """``k_{b,i}`` for layer ``layer_idx``, ``(B,)`` int64 (float32 arithmetic, see the module notes)."""
        n = self.n_rows.to(torch.float32)
        # narrow, not [i]: an ONNX Gather on a float graph input would be int8-quantized by ORT's quantizer
        ratio = self.ratios.narrow(0, layer_idx, 1)
        k = torch.ceil(ratio * n - RATIO_SLACK).to(torch.long)
        k = torch.minimum(k, self.caps.narrow(0, layer_idx, 1))
        return torch.clamp(torch.minimum(k, self.prev_k), min=1)

    def keep_count(self, layer_idx: int) -> Tensor:
        """``k_i = max_b k_{b,i}``: rows gathered at layer ``layer_idx``, a 0-d int64 tensor."""
        return self.row_keep_counts(layer_idx).max()

    def __call__(self, layer_idx: int, probs: Tensor, mask: Tensor) -> tuple[Tensor, Tensor] | None:
        """``(indices (B, k), row_keep (B, k))`` in original order, or ``None`` (every row kept: eager, or a layer
        outside ``select_layers``)."""
        if self.select_layers is not None and layer_idx not in self.select_layers:
            if not torch.jit.is_tracing():
                self.kept[layer_idx] = probs.shape[-1]
            return None
        k_rows = self.row_keep_counts(layer_idx)
        self.prev_k = k_rows
        k = k_rows.max()
        scores = token_significance(probs, mask)
        if not torch.jit.is_tracing():
            k = int(k)
            self.kept[layer_idx] = k
            if k >= probs.shape[-1] and bool((k_rows >= mask.sum(dim=1)).all()):
                return None
        ranked = torch.topk(scores, k, dim=1).indices  # (B, k), most significant first
        idx, rank = torch.sort(ranked, dim=1)  # original order; rank = place in the significance order
        return idx, (rank < k_rows.unsqueeze(1)).to(mask.dtype)


def forward_with_config(
    model: SlimModel,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    token_type_ids: Tensor | None = None,
    config: LengthConfig | None = None,
    *,
    restore: bool | None = None,
    layers: Sequence[int] | None = None,
    select_layers: Sequence[int] | None = None,
    **labels: Tensor,
) -> TaskOutput:
    """Run ``model`` with a length configuration (LAT inference; also the sub-model passes of training).

    Args:
        model: a :class:`SlimModel` (classification or QA head), or a ``DistributedDataParallel`` wrapping one.
        input_ids, attention_mask, token_type_ids: ``(B, N)``.
        config: the length configuration; ``None`` = plain forward (no selection at all).
        restore: Drop-and-Restore; default ``True`` for span QA (start/end logits ``(B, N)`` for every token,
            dropped tokens keep the hidden state of the last layer that processed them) and ``False`` for
            classification (plain dropping; the head reads ``[CLS]``, always kept).
        layers: LayerDrop, indices of the layers to run (training only).
        select_layers: the layers that select tokens (``None``: every layer), as in a graph exported with them.
        **labels: ``labels`` or ``start_positions``/``end_positions``, passed to the model for its task loss.

    Returns:
        :class:`~slimformer.models.TaskOutput`; ``logits`` ``(B, C)`` or ``start_logits``/``end_logits``
        ``(B, N)``.

    Raises:
        ConfigError: ``config`` has the wrong number of layers, or drops tokens outside ``select_layers``.
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    inner = getattr(model, "module", model)  # a data-parallel (DDP) wrapper runs the forward; attributes are inside
    if restore is None:
        restore = inner.head is HeadKind.QA
    keep = None
    if config is not None:
        keep = LengthSelector.from_config(config, inner.num_layers, attention_mask, select_layers)
    return model(input_ids, attention_mask, token_type_ids, keep=keep, restore=restore, layers=layers, **labels)
