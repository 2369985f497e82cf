"""The encoder loop: captured internals, token keeping (PoWER-BERT / LAT) and Drop-and-Restore.

Expectations come from an independent re-implementation of a BERT layer from its weights
(``_ref_layer``, METHODS §0 and §1(b)) and from hand-computed index bookkeeping, not from the code under test.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import make_tiny_model
from slimformer.models import Capture, EncoderOutput, HeadKind, encoder_forward

B, N = 3, 10


@pytest.fixture
def model():
    return make_tiny_model("classification", "bert", num_labels=2, num_hidden_layers=3)


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 150, (B, N), generator=g)
    mask = torch.ones(B, N, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 5:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    tt = torch.zeros_like(ids)
    tt[:, 4:] = 1
    return ids, mask, tt * mask


def _rows(x, idx):
    """``x[b, idx[b]]`` for every batch row, by plain indexing."""
    return torch.stack([x[b, idx[b]] for b in range(x.shape[0])])


def _ref_layer(layer, x, mask, num_heads, idx=None):
    """One BERT layer written out from its weights: attention on all rows, FFN on the kept rows ``idx``."""
    bsz, n, d = x.shape
    d_h = d // num_heads
    sa, so = layer.attention.self, layer.attention.output

    def heads(lin):  # (B, n, D) -> (B, H, n, d_h)
        return F.linear(x, lin.weight, lin.bias).reshape(bsz, n, num_heads, d_h).permute(0, 2, 1, 3)

    q, k, v = heads(sa.query), heads(sa.key), heads(sa.value)
    raw = torch.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(d_h)
    probs = raw.masked_fill(mask[:, None, None, :] == 0, float("-inf")).softmax(-1)
    ctx = torch.einsum("bhqk,bhkd->bhqd", probs, v)
    merged = ctx.permute(0, 2, 1, 3).reshape(bsz, n, d)
    ln1 = so.LayerNorm
    o = F.layer_norm(x + F.linear(merged, so.dense.weight, so.dense.bias), (d,), ln1.weight, ln1.bias, ln1.eps)
    o_kept, mask_kept = (o, mask) if idx is None else (_rows(o, idx), _rows(mask, idx))
    inter, out = layer.intermediate.dense, layer.output
    h = F.gelu(F.linear(o_kept, inter.weight, inter.bias))
    ln2 = out.LayerNorm
    y = F.layer_norm(o_kept + F.linear(h, out.dense.weight, out.dense.bias), (d,), ln2.weight, ln2.bias, ln2.eps)
    return {
        "raw_scores": raw,
        "probs": probs,
        "values": v,
        "contexts": ctx,
        "attn_out": o,
        "out": y,
        "mask": mask_kept,
    }


def _ref_encoder(model, ids, mask, tt, keep):
    """The whole encoder from :func:`_ref_layer`; returns per-layer reference dicts and X^0..X^L."""
    assert model.config.hidden_act == "gelu"
    base = model.base
    x = base.embeddings(input_ids=ids, token_type_ids=tt)
    hidden, layers = [x], []
    for i, layer in enumerate(base.encoder.layer):
        r = _ref_layer(layer, x, mask, model.config.num_attention_heads, keep[i])
        layers.append(r)
        x, mask = r["out"], r["mask"]
        hidden.append(x)
    return layers, hidden


def _enc(model, ids, mask, tt, **kw) -> EncoderOutput:
    with torch.no_grad():
        return encoder_forward(model.base, ids, mask, tt, **kw)


# --- captured internals -----------------------------------------------------------------------------


def test_capture_shapes_and_values(model):
    ids, mask, tt = _inputs()
    cfg = model.config
    L, H, D = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.hidden_size
    enc = _enc(model, ids, mask, tt, capture=Capture.all())
    ref_layers, ref_hidden = _ref_encoder(model, ids, mask, tt, [None] * L)

    assert len(enc.hidden_states) == L + 1
    for name in ("attentions", "scores", "attention_outputs", "contexts", "values"):
        assert len(getattr(enc, name)) == L, name
    assert all(h.shape == (B, N, D) for h in enc.hidden_states)
    # X^0 is the embedding output (after LayerNorm)
    torch.testing.assert_close(
        enc.hidden_states[0], model.base.embeddings(input_ids=ids, token_type_ids=tt), atol=0, rtol=0
    )
    torch.testing.assert_close(enc.last_hidden_state, enc.hidden_states[-1], atol=0, rtol=0)
    valid_keys = mask[:, None, None, :].bool().expand(B, H, N, N)
    for i, r in enumerate(ref_layers):
        a, s = enc.attentions[i], enc.scores[i]
        assert a.shape == s.shape == (B, H, N, N)
        assert enc.values[i].shape == enc.contexts[i].shape == (B, H, N, D // H)
        assert enc.attention_outputs[i].shape == (B, N, D)
        torch.testing.assert_close(a.sum(-1), torch.ones(B, H, N), atol=1e-6, rtol=0)
        assert torch.all(a[~valid_keys] == 0), "padded keys must get exactly zero probability"
        assert torch.all(s[~valid_keys] <= torch.finfo(s.dtype).min / 2), "padded keys must hold the mask value"
        torch.testing.assert_close(s[valid_keys], r["raw_scores"][valid_keys], atol=1e-6, rtol=0)
        torch.testing.assert_close(a, r["probs"], atol=1e-6, rtol=0)
        torch.testing.assert_close(enc.values[i], r["values"], atol=1e-6, rtol=0)
        torch.testing.assert_close(enc.contexts[i], a @ enc.values[i], atol=1e-6, rtol=0)
        torch.testing.assert_close(enc.contexts[i], r["contexts"], atol=1e-6, rtol=0)
        torch.testing.assert_close(enc.attention_outputs[i], r["attn_out"], atol=1e-5, rtol=0)
        torch.testing.assert_close(enc.hidden_states[i + 1], ref_hidden[i + 1], atol=1e-5, rtol=0)


def test_capture_matches_hf_hidden_states_and_attentions(model):
    ids, mask, tt = _inputs()
    assert model.hf.config._attn_implementation == "eager"
    with torch.no_grad():
        out = model(ids, mask, tt, capture=Capture.of("hidden_states", "attentions"))
        ref = model.hf(
            input_ids=ids,
            attention_mask=mask,
            token_type_ids=tt,
            output_hidden_states=True,
            output_attentions=True,
        )
    assert len(out.encoder.hidden_states) == len(ref.hidden_states) == model.num_layers + 1
    for ours, theirs in zip(out.encoder.hidden_states, ref.hidden_states):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    assert len(out.encoder.attentions) == len(ref.attentions) == model.num_layers
    for ours, theirs in zip(out.encoder.attentions, ref.attentions):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    assert out.encoder.scores is None and out.encoder.values is None


def test_capture_defaults_and_names(model):
    ids, mask, tt = _inputs()
    enc = _enc(model, ids, mask, tt, capture=Capture())
    for name in (
        "hidden_states",
        "attentions",
        "scores",
        "attention_outputs",
        "contexts",
        "values",
        "positions",
    ):
        assert getattr(enc, name) is None, name
    assert enc.last_hidden_state.shape == (B, N, model.config.hidden_size)
    assert model(ids, mask, tt).encoder is None  # no capture, no keep: no encoder output attached
    assert model(ids, mask, tt, capture=Capture()).encoder is not None

    assert Capture.of("values", "contexts") == Capture(values=True, contexts=True)
    assert all(vars(Capture.all()).values())
    with pytest.raises(ValueError, match="bad"):
        Capture.of("bad")
    with pytest.raises(ValueError, match="attention_probs"):
        Capture.of("attentions", "attention_probs")


# --- token keeping ----------------------------------------------------------------------------------


def test_keep_all_rows_equals_plain_forward(model):
    ids, mask, tt = _inputs()
    arange = torch.arange(N).expand(B, N).clone()
    plain = _enc(model, ids, mask, tt, capture=Capture.all())
    kept = _enc(model, ids, mask, tt, capture=Capture.all(), keep=[arange] * model.num_layers)
    assert torch.equal(kept.last_hidden_state, plain.last_hidden_state)
    for a, b in zip(kept.hidden_states, plain.hidden_states):
        assert torch.equal(a, b)
    assert torch.equal(kept.attention_mask, mask)
    assert all(torch.equal(p, arange) for p in kept.positions)
    assert plain.positions is None
    # a list of Nones and a selector that always answers None are the plain forward too
    none_list = _enc(model, ids, mask, tt, keep=[None] * model.num_layers)
    none_sel = _enc(model, ids, mask, tt, keep=lambda i, probs, m: None)
    assert torch.equal(none_list.last_hidden_state, plain.last_hidden_state)
    assert torch.equal(none_sel.last_hidden_state, plain.last_hidden_state)
    assert none_list.positions is None and none_sel.positions is None
    with torch.no_grad():
        logits = model(ids, mask, tt, keep=[arange] * model.num_layers).logits
        assert torch.equal(logits, model(ids, mask, tt).logits)


def test_keep_subset_runs_ffn_on_kept_rows(model):
    ids, mask, tt = _inputs()
    D = model.config.hidden_size
    # (B, 6) indices into the N rows; batch rows 1 and 2 keep a padding position
    idx = torch.tensor([[0, 3, 1, 8, 6, 2], [0, 9, 2, 4, 5, 1], [0, 7, 3, 1, 2, 4]])
    keep = [None, idx, None]
    enc = _enc(model, ids, mask, tt, keep=keep, capture=Capture.all())
    ref_layers, ref_hidden = _ref_encoder(model, ids, mask, tt, keep)

    assert [h.shape[1] for h in enc.hidden_states] == [N, N, 6, 6]
    assert enc.attention_outputs[1].shape == (B, N, D)  # the attention block ran on all N rows
    assert enc.attentions[2].shape[-1] == 6  # the next layer attends over the kept rows only
    # FFN of layer 1 on the kept rows of O^1, written out by hand
    layer = model.base.encoder.layer[1]
    o = _rows(enc.attention_outputs[1], idx)
    h = F.linear(
        F.gelu(F.linear(o, layer.intermediate.dense.weight, layer.intermediate.dense.bias)),
        layer.output.dense.weight,
        layer.output.dense.bias,
    )
    ln = layer.output.LayerNorm
    expected = F.layer_norm(o + h, (D,), ln.weight, ln.bias, ln.eps)
    torch.testing.assert_close(enc.hidden_states[2], expected, atol=1e-5, rtol=0)
    # and the whole forward agrees with the written-out encoder
    for ours, ref in zip(enc.hidden_states, ref_hidden):
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(enc.attentions[2], ref_layers[2]["probs"], atol=1e-6, rtol=0)
    # the mask is gathered with the same indices
    assert torch.equal(enc.attention_mask, _rows(mask, idx))
    assert torch.equal(enc.attention_mask, torch.tensor([[1] * 6, [1, 0, 1, 1, 1, 1], [1, 0, 1, 1, 1, 1]]))
    # kept rows come in the given order (not re-sorted)
    assert torch.equal(enc.positions[1], idx) and torch.equal(enc.positions[2], idx)
    assert torch.equal(enc.positions[0], torch.arange(N).expand(B, N))


def test_positions_after_two_drops(model):
    ids, mask, tt = _inputs()
    first = torch.tensor([[0, 5, 2, 9, 4, 7, 1], [0, 1, 2, 3, 4, 5, 6], [0, 8, 6, 4, 2, 3, 1]])  # (B, 7)
    second = torch.tensor([[0, 3, 1, 6], [0, 6, 5, 2], [0, 1, 5, 2]])  # (B, 4), indices into the 7 kept rows
    enc = _enc(model, ids, mask, tt, keep=[first, None, second], capture=Capture.of("hidden_states"))
    expected = [[first[b][second[b][j]].item() for j in range(4)] for b in range(B)]
    assert enc.positions[0].tolist() == first.tolist()
    assert enc.positions[1].tolist() == first.tolist()
    assert enc.positions[2].tolist() == expected
    assert enc.last_hidden_state.shape == (B, 4, model.config.hidden_size)
    assert torch.equal(enc.attention_mask, _rows(mask, torch.tensor(expected)))
    _, ref_hidden = _ref_encoder(model, ids, mask, tt, [first, None, second])
    torch.testing.assert_close(enc.last_hidden_state, ref_hidden[-1], atol=1e-5, rtol=0)


def test_token_selector_receives_layer_probs_and_mask(model):
    ids, mask, tt = _inputs()
    H = model.config.num_attention_heads
    calls = []

    def power_bert(layer_idx, probs, key_mask):
        """Keep [CLS] plus the tokens receiving the most attention (PoWER-BERT significance score)."""
        calls.append((layer_idx, probs.clone(), key_mask.clone()))
        n = probs.shape[-1]
        score = probs.sum(dim=(1, 2))  # (B, n): attention each key receives
        top = score[:, 1:].topk(n - 3, dim=1).indices + 1
        return torch.cat([torch.zeros(B, 1, dtype=torch.long), top], dim=1)

    enc = _enc(model, ids, mask, tt, keep=power_bert, capture=Capture.of("attentions"))
    assert [c[0] for c in calls] == [0, 1, 2]
    for (i, probs, key_mask), n in zip(calls, [10, 8, 6]):
        assert probs.shape == (B, H, n, n) and key_mask.shape == (B, n)
        torch.testing.assert_close(probs, enc.attentions[i], atol=0, rtol=0)
    assert torch.equal(calls[0][2], mask)
    assert [p.shape[1] for p in enc.positions] == [8, 6, 4]
    assert torch.all(enc.positions[-1][:, 0] == 0)  # [CLS] kept
    # padding keys get ~0 attention, so pads are dropped first: the 4 survivors of row 2 are real tokens
    assert torch.all(enc.attention_mask == 1)


@pytest.mark.parametrize(
    ("keep", "match"),
    [
        ([None, None], r"keep has 2 entries; expected one per layer \(3\)"),
        (
            [None, torch.zeros(2, 3, dtype=torch.long), None],
            r"keep\[1\] must be a \(batch=3, k\) long tensor",
        ),
        ([None, torch.zeros(B, dtype=torch.long), None], r"keep\[1\] must be a \(batch=3, k\) long tensor"),
        ([None, torch.zeros(B, 3), None], r"keep\[1\] .*dtype torch.float32"),
        ([None, torch.zeros(B, 0, dtype=torch.long), None], r"keep\[1\] keeps 0 rows; expected 1\.\.10"),
        ([None, torch.zeros(B, 11, dtype=torch.long), None], r"keep\[1\] keeps 11 rows; expected 1\.\.10"),
        ([None, torch.full((B, 2), N, dtype=torch.long), None], r"keep\[1\] has indices outside 0\.\.9"),
        ([None, torch.full((B, 2), -1, dtype=torch.long), None], r"keep\[1\] has indices outside 0\.\.9"),
    ],
    ids=["n-entries", "batch", "1d", "float", "k=0", "k>n", "too-large", "negative"],
)
def test_bad_keep_raises(model, keep, match):
    ids, mask, tt = _inputs()
    with pytest.raises(ValueError, match=match):
        _enc(model, ids, mask, tt, keep=keep)


def test_bad_selector_output_raises(model):
    ids, mask, tt = _inputs()
    with pytest.raises(ValueError, match=r"keep\[0\] has indices outside"):
        _enc(model, ids, mask, tt, keep=lambda i, p, m: torch.full((B, 2), 99, dtype=torch.long))


# --- Drop-and-Restore -------------------------------------------------------------------------------


def _expected_restored(enc: EncoderOutput) -> torch.Tensor:
    """Each original position holds its row of X^l for the last l whose output still contained it."""
    hidden, positions = enc.hidden_states, enc.positions
    expected = torch.empty_like(hidden[0])
    for b in range(B):
        for p in range(N):
            for j in range(len(hidden) - 1, -1, -1):  # X^L down to X^0
                pos = list(range(N)) if j == 0 else positions[j - 1][b].tolist()
                if p in pos:
                    expected[b, p] = hidden[j][b, pos.index(p)]
                    break
    return expected


def test_restore_without_drops_equals_plain_forward(model):
    ids, mask, tt = _inputs()
    plain = _enc(model, ids, mask, tt)
    restored = _enc(model, ids, mask, tt, restore=True)
    assert torch.equal(restored.last_hidden_state, plain.last_hidden_state)
    arange = torch.arange(N).expand(B, N).clone()
    restored_all = _enc(model, ids, mask, tt, restore=True, keep=[arange] * model.num_layers)
    assert torch.equal(restored_all.last_hidden_state, plain.last_hidden_state)
    assert torch.equal(restored_all.attention_mask, mask)


def test_restore_puts_dropped_tokens_back(model):
    ids, mask, tt = _inputs()
    first = torch.tensor([[0, 5, 2, 9, 4, 7, 1], [0, 1, 2, 3, 4, 5, 6], [0, 8, 6, 4, 2, 3, 1]])
    second = torch.tensor([[0, 3, 1, 6], [0, 6, 5, 2], [0, 1, 5, 2]])
    keep = [first, None, second]
    enc = _enc(model, ids, mask, tt, keep=keep, restore=True, capture=Capture.of("hidden_states"))
    assert enc.last_hidden_state.shape == (B, N, model.config.hidden_size)
    assert torch.equal(enc.attention_mask, mask)
    assert torch.equal(enc.last_hidden_state, _expected_restored(enc))
    # spot checks written out for batch row 0: rows leaving layers 0/1 are positions [0, 5, 2, 9, 4, 7, 1],
    # rows leaving layer 2 are positions [0, 9, 5, 1]. Position 3 is dropped at layer 0 -> X^0; position 2
    # (row 2 of X^2) is dropped at layer 2 -> X^2; position 9 survives to the end as row 1 of X^3.
    x = enc.hidden_states
    assert torch.equal(enc.last_hidden_state[0, 3], x[0][0, 3])
    assert torch.equal(enc.last_hidden_state[0, 2], x[2][0, 2])
    assert torch.equal(enc.last_hidden_state[0, 9], x[3][0, 1])
    assert not torch.equal(x[2][0, 2], x[1][0, 2])  # (X^1 and X^2 differ, so the check above means something)
    # the kept rows equal the shortened forward without restore
    short = _enc(model, ids, mask, tt, keep=keep)
    assert torch.equal(_rows(enc.last_hidden_state, short.positions[-1]), short.last_hidden_state)


def test_restore_drop_at_last_layer_only(model):
    ids, mask, tt = _inputs()
    idx = torch.tensor([[0, 2, 4]] * B)
    enc = _enc(model, ids, mask, tt, keep=[None, None, idx], restore=True, capture=Capture.of("hidden_states"))
    assert torch.equal(enc.last_hidden_state, _expected_restored(enc))
    assert torch.equal(enc.last_hidden_state[:, 1], enc.hidden_states[2][:, 1])


def test_qa_head_with_dropped_tokens_gives_full_length_logits():
    qa = make_tiny_model(HeadKind.QA, "bert", num_hidden_layers=3)
    ids, mask, tt = _inputs()
    first = torch.tensor([[0, 5, 2, 9, 4, 7, 1], [0, 1, 2, 3, 4, 5, 6], [0, 8, 6, 4, 2, 3, 1]])
    keep = [None, first, None]
    with torch.no_grad():
        # restore defaults to True for QA
        out = qa(ids, mask, tt, keep=keep, capture=Capture.of("hidden_states"))
        assert out.start_logits.shape == out.end_logits.shape == (B, N)
        restored = _expected_restored(out.encoder)
        ref = F.linear(restored, qa.hf.qa_outputs.weight, qa.hf.qa_outputs.bias)  # (B, N, 2)
        torch.testing.assert_close(out.start_logits, ref[..., 0], atol=1e-6, rtol=0)
        torch.testing.assert_close(out.end_logits, ref[..., 1], atol=1e-6, rtol=0)
        loss = qa(
            ids,
            mask,
            tt,
            keep=keep,
            start_positions=torch.tensor([1, 2, 3]),
            end_positions=torch.tensor([2, 2, 4]),
        ).loss
        assert torch.isfinite(loss)
        with pytest.raises(ValueError, match="restore=True"):
            qa(ids, mask, tt, keep=keep, restore=False)


def test_row_gather_and_scatter_equal_elementwise_gather_and_scatter():
    """The row helpers behind token dropping and Drop-and-Restore: same values and gradients as torch.gather /
    Tensor.scatter with the index expanded over the feature dim."""
    from slimformer.models.encoder import _gather_rows, _scatter_rows

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 5, generator=g, requires_grad=True)
    rows = torch.randn(3, 4, 5, generator=g, requires_grad=True)
    idx = torch.stack([torch.sort(torch.randperm(7, generator=g)[:4]).values for _ in range(3)])  # (3, 4)
    expand = idx.unsqueeze(-1).expand(-1, -1, 5)
    torch.testing.assert_close(_gather_rows(x, idx), torch.gather(x, 1, expand), rtol=0, atol=0)
    torch.testing.assert_close(_gather_rows(x[..., 0], idx), torch.gather(x[..., 0], 1, idx), rtol=0, atol=0)
    got = _scatter_rows(x, idx, rows)
    want = x.scatter(1, expand, rows)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    w = torch.randn(3, 7, 5, generator=g)
    grads = torch.autograd.grad((got * w).sum(), (x, rows))
    want_grads = torch.autograd.grad((want * w).sum(), (x, rows))
    for a, b in zip(grads, want_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.equal(grads[0][0, idx[0]], torch.zeros(4, 5))  # overwritten rows get no gradient
