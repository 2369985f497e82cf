"""The encoder forward the compression methods act on.

Design (see ``docs/encoder.md``): the weights stay in Hugging Face's own modules (``BertModel``,
``RobertaModel``, ``XLMRobertaModel``, so ``save_pretrained`` / ``from_pretrained`` keep working and a
saved model is an ordinary Hugging Face checkpoint), and this file drives those modules with a short
loop of its own. Per layer the loop:

1. runs self-attention over the ``n_in`` tokens entering the layer (Q/K/V projections are the HF
   ``nn.Linear`` modules, so a quantization method that swaps them is picked up unchanged);
2. runs the attention output block ``O = LN(X + W_o·C + b_o)`` (the HF ``*SelfOutput`` module);
3. optionally keeps a subset of the ``n_in`` rows of ``O`` (token dropping, as in PoWER-BERT / the
   Length-Adaptive Transformer: the feed-forward block runs only on the kept rows);
4. runs the feed-forward block (HF ``*Intermediate`` + ``*Output`` modules).

The internals that distillation and quantization losses need are returned as values in
:class:`EncoderOutput` when requested with :class:`Capture`; nothing is patched or hooked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Capture", "EncoderOutput", "TokenSelector", "encoder_forward", "extended_mask"]

#: A callable deciding, at layer ``layer_idx`` (0-based), which rows to keep. It receives the
#: layer's attention probabilities ``(B, H, n_in, n_in)`` and the 0/1 key mask ``(B, n_in)`` and
#: returns indices ``(B, k)`` into the ``n_in`` rows, or ``None`` to keep every row. It may also return
#: ``(indices, row_keep)`` with a 0/1 ``(B, k)`` tensor: gathered rows with ``row_keep = 0`` are masked from
#: then on (dropped for that batch row only, so rows of one padded batch can keep different numbers of tokens).
TokenSelector = Callable[[int, Tensor, Tensor], "Tensor | tuple[Tensor, Tensor] | None"]


@dataclass(frozen=True)
class Capture:
    """Which internals :func:`encoder_forward` returns (all off by default: no extra memory).

    Attributes:
        hidden_states: ``X^0..X^L``, the embedding output and each layer's output, ``(B, n_l, D)``.
        attentions: attention probabilities ``A^l = softmax(S^l)`` before dropout, ``(B, H, n, n)``.
        scores: attention scores ``S^l = QKᵀ/√d_h + mask`` (masked keys hold ``finfo.min``), ``(B, H, n, n)``.
        attention_outputs: attention block outputs ``O^l = LN(X^{l-1} + W_o·C^l + b_o)``, ``(B, n, D)``
            (after projection, residual and LayerNorm; before token dropping).
        contexts: per-head context ``C^l = A^l V^l``, ``(B, H, n, d_h)``.
        values: per-head value vectors ``V^l``, ``(B, H, n, d_h)``.
    """

    hidden_states: bool = False
    attentions: bool = False
    scores: bool = False
    attention_outputs: bool = False
    contexts: bool = False
    values: bool = False

    @classmethod
    def all(cls) -> Capture:
        """Capture every internal."""
        return cls(**{f.name: True for f in fields(cls)})

    @classmethod
    def of(cls, *names: str) -> Capture:
        """Build from field names, e.g. ``Capture.of("attentions", "values")``.

        Raises:
            ValueError: a name is not one of the fields.
        """
        known = {f.name for f in fields(cls)}
        bad = [n for n in names if n not in known]
        if bad:
            raise ValueError(f"unknown capture name(s) {bad}; expected some of {sorted(known)}")
        return cls(**{n: True for n in names})


@dataclass
class EncoderOutput:
    """What :func:`encoder_forward` returns. Lists have one entry per layer unless stated.

    Attributes:
        last_hidden_state: ``(B, n_L, D)``; with ``restore=True`` the full-length ``(B, N, D)``
            Drop-and-Restore buffer instead.
        attention_mask: 0/1 mask of the rows of ``last_hidden_state``, ``(B, n_L)`` (or ``(B, N)``).
        positions: original token positions of the rows leaving each layer, ``(B, n_l)``; only
            filled when tokens were dropped (``None`` otherwise).
        hidden_states: ``L + 1`` tensors ``X^0..X^L`` (see :class:`Capture`), or ``None``.
        attentions, scores, attention_outputs, contexts, values: see :class:`Capture`, or ``None``.
    """

    last_hidden_state: Tensor
    attention_mask: Tensor
    positions: list[Tensor] | None = None
    hidden_states: list[Tensor] | None = None
    attentions: list[Tensor] | None = None
    scores: list[Tensor] | None = None
    attention_outputs: list[Tensor] | None = None
    contexts: list[Tensor] | None = None
    values: list[Tensor] | None = None
    extras: dict[str, object] = field(default_factory=dict)


def extended_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Turn a 0/1 key mask ``(B, n)`` into an additive mask ``(B, 1, 1, n)``.

    The mask holds 0 where a key is kept and ``finfo.min`` where it is masked.
    """
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def _batch_rows(idx: Tensor) -> Tensor:
    """``(B, k)`` batch-row numbers ``b`` matching ``idx`` ``(B, k)``, for advanced indexing ``x[b, idx]``."""
    return torch.arange(idx.shape[0], device=idx.device).unsqueeze(1).expand_as(idx)


def _gather_rows(x: Tensor, idx: Tensor) -> Tensor:
    """Gather rows of ``x`` ``(B, n, ...)`` at ``idx`` ``(B, k)`` -> ``(B, k, ...)``.

    Advanced indexing, not ``torch.gather`` with ``idx`` expanded over the feature dims: in the exported ONNX
    graph it becomes a ``Gather`` of whole rows instead of a per-element ``GatherElements`` (~3x faster in
    ONNX Runtime at batch 32; ``benchmarks/selection_ops.py``).
    """
    return x[_batch_rows(idx), idx]


def _scatter_rows(buffer: Tensor, idx: Tensor, rows: Tensor) -> Tensor:
    """``buffer`` ``(B, N, D)`` with row ``idx[b, j]`` of batch row ``b`` replaced by ``rows[b, j]`` ``(B, k, D)``.

    Out of place (``index_put``, an ONNX ``ScatterND`` of whole rows; ``Tensor.scatter`` with an index expanded
    over ``D`` exports to a per-element ``ScatterElements``, ~10x slower in ONNX Runtime). ``idx`` must not
    repeat within a batch row (kept rows are distinct).
    """
    return buffer.index_put((_batch_rows(idx), idx), rows)


def _self_attention(attn: nn.Module, x: Tensor, add_mask: Tensor, num_heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """Scaled dot-product attention scores with the HF ``*SelfAttention`` module's Q/K/V projections.

    Args:
        x: ``(B, n, D)``; add_mask: ``(B, 1, 1, n)`` additive mask.

    Returns:
        scores ``(B, H, n, n)``, probabilities ``(B, H, n, n)`` (before dropout), values ``(B, H, n, d_h)``.
    """
    b, n, d = x.shape
    d_h = d // num_heads
    # (B, n, D) -> (B, H, n, d_h)
    q = attn.query(x).view(b, n, num_heads, d_h).transpose(1, 2)
    k = attn.key(x).view(b, n, num_heads, d_h).transpose(1, 2)
    v = attn.value(x).view(b, n, num_heads, d_h).transpose(1, 2)
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d_h) + add_mask  # (B, H, n, n)
    probs = torch.softmax(scores, dim=-1)
    return scores, probs, v


def encoder_forward(
    base: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    token_type_ids: Tensor | None = None,
    *,
    keep: Sequence[Tensor | None] | TokenSelector | None = None,
    capture: Capture | None = None,
    restore: bool = False,
    layers: Sequence[int] | None = None,
) -> EncoderOutput:
    """Run a Hugging Face BERT-family base model layer by layer with the project's own loop.

    ``base`` is a ``BertModel``, ``RobertaModel`` or ``XLMRobertaModel``.

    With ``keep=None`` and no capture the result equals the Hugging Face forward's
    ``last_hidden_state`` (tested to 1e-5 on the real MiniLM).

    Args:
        base: the HF base model (has ``.embeddings`` and ``.encoder.layer``).
        input_ids: ``(B, N)`` token ids.
        attention_mask: ``(B, N)`` 0/1; all ones when ``None``.
        token_type_ids: ``(B, N)`` segment ids, or ``None``.
        keep: per-layer rows to keep after the attention block (PoWER-BERT / LAT token dropping):
            a list of ``L`` entries (``None`` or a ``(B, k)`` long tensor of indices into the rows entering
            that layer; ``k`` may differ per layer, must be ≥ 1), or a :data:`TokenSelector`.
        capture: which internals to return (see :class:`Capture`).
        restore: Drop-and-Restore (Kim & Cho 2021, §3): return a full-length ``(B, N, D)`` buffer in which
            each dropped token holds the hidden state of the last layer that processed it.
        layers: LayerDrop (Fan et al. 2019): the 0-based indices of the layers to run, strictly increasing;
            the others are skipped (identity). ``None`` runs every layer. ``keep`` stays indexed by the
            model's layer index (entries of skipped layers are ignored; a selector is called with the model's
            index); per-layer captures and ``positions`` have one entry per layer that ran.

    Returns:
        :class:`EncoderOutput`.

    Raises:
        ValueError: ``keep`` has a wrong number of entries, a wrong batch size or out-of-range indices;
            ``layers`` is not strictly increasing within ``0..L-1``.
    """
    capture = capture or Capture()
    modules = base.encoder.layer
    num_layers = len(modules)
    run = list(range(num_layers)) if layers is None else [int(i) for i in layers]
    if any(i < 0 or i >= num_layers for i in run) or any(a >= b for a, b in zip(run, run[1:])):
        raise ValueError(f"layers={list(run)} must be strictly increasing indices within 0..{num_layers - 1}")
    if keep is not None and not callable(keep) and len(keep) != num_layers:
        raise ValueError(f"keep has {len(keep)} entries; expected one per layer ({num_layers})")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    x = base.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)  # (B, N, D)
    bsz, seq_len, _ = x.shape
    mask = attention_mask
    num_heads = base.config.num_attention_heads
    positions: Tensor | None = None  # (B, n) original positions of the current rows, once dropping starts
    per_layer_positions: list[Tensor | None] = []
    buffer = x if restore else None
    masked_rows = False  # a selector masked rows of some batch rows (Drop-and-Restore must not overwrite them)

    out: dict[str, list[Tensor]] = {f.name: [] for f in fields(Capture) if getattr(capture, f.name)}
    if capture.hidden_states:
        out["hidden_states"].append(x)

    for i in run:
        layer = modules[i]
        add_mask = extended_mask(mask, x.dtype)
        self_attn = layer.attention.self
        scores, probs, v = _self_attention(self_attn, x, add_mask, num_heads)
        p_drop = self_attn.dropout.p if base.training else 0.0
        ctx_heads = torch.matmul(F.dropout(probs, p_drop, training=p_drop > 0), v)  # (B, H, n, d_h)
        context = ctx_heads.transpose(1, 2).reshape(bsz, x.shape[1], -1)  # (B, H, n, d_h) -> (B, n, D)
        attn_out = layer.attention.output(context, x)  # O^l = LN(x + W_o C + b_o), (B, n, D)
        for name, value in (
            ("scores", scores),
            ("attentions", probs),
            ("contexts", ctx_heads),
            ("values", v),
            ("attention_outputs", attn_out),
        ):
            if name in out:
                out[name].append(value)

        idx = keep(i, probs, mask) if callable(keep) else (keep[i] if keep is not None else None)
        row_keep = None
        if isinstance(idx, tuple):
            idx, row_keep = idx
        if idx is not None:
            _check_keep(idx, bsz, attn_out.shape[1], i)
            attn_out = _gather_rows(attn_out, idx)  # (B, n, D) -> (B, k, D)
            mask = torch.gather(mask, 1, idx)
            if row_keep is not None:  # rows dropped for some batch rows only: masked as keys and queries from now
                mask = mask * row_keep.to(mask.dtype)
            if positions is None:
                positions = torch.arange(seq_len, device=x.device).expand(bsz, -1)
            positions = torch.gather(positions, 1, idx)
        per_layer_positions.append(positions)

        x = layer.output(layer.intermediate(attn_out), attn_out)  # FFN with residual + LN, (B, k, D)
        if capture.hidden_states:
            out["hidden_states"].append(x)
        if buffer is not None:
            if positions is None:
                buffer = x
            else:  # Drop-and-Restore: write the kept rows back at their original positions
                if row_keep is not None or masked_rows:  # real rows masked by a selector keep their state
                    masked_rows = True
                    dropped = (torch.gather(attention_mask, 1, positions) > 0) & (mask == 0)  # (B, k)
                    x_live = torch.where(dropped.unsqueeze(-1), _gather_rows(buffer, positions), x)
                    buffer = _scatter_rows(buffer, positions, x_live)
                else:
                    buffer = _scatter_rows(buffer, positions, x)

    result = EncoderOutput(last_hidden_state=x, attention_mask=mask, **out)
    if positions is not None:
        full = torch.arange(seq_len, device=x.device).expand(bsz, -1)
        result.positions = [full if p is None else p for p in per_layer_positions]
    if buffer is not None:
        result.last_hidden_state = buffer
        result.attention_mask = attention_mask
    return result


def _check_keep(idx: Tensor, bsz: int, n_in: int, layer: int) -> None:
    if idx.dtype != torch.long or idx.dim() != 2 or idx.shape[0] != bsz:
        raise ValueError(
            f"keep[{layer}] must be a (batch={bsz}, k) long tensor; got dtype {idx.dtype}, shape {tuple(idx.shape)}"
        )
    if idx.shape[1] < 1 or idx.shape[1] > n_in:
        raise ValueError(f"keep[{layer}] keeps {idx.shape[1]} rows; expected 1..{n_in} (rows entering layer {layer})")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n_in):
        raise ValueError(f"keep[{layer}] has indices outside 0..{n_in - 1}")
