"""Token significance, top-k selection, forward_with_config (plain dropping / Drop-and-Restore) and LayerDrop.

Expectations are computed independently: significance by explicit loops over heads and queries, kept indices by
sorting scores in Python, and reference forwards by passing explicit index lists to the encoder loop (whose
maths is checked in test_models_encoder.py) or by deleting layers from a copy of the model.
"""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import make_tiny_model
from slimformer.errors import ConfigError
from slimformer.length import LengthConfig, LengthSelector, forward_with_config, token_significance, top_k_rows
from slimformer.models import Capture, HeadKind

B, N = 3, 12


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 150, (B, N), generator=g)
    mask = torch.ones(B, N, dtype=torch.long)
    mask[1, 9:] = 0
    mask[2, 6:] = 0
    return ids.masked_fill(mask == 0, 0), mask, torch.zeros_like(ids)


def _loop_significance(probs, mask):
    b, h, n, _ = probs.shape
    out = torch.zeros(b, n)
    for hi in range(h):
        for q in range(n):
            out += probs[:, hi, q, :].detach() * mask[:, q, None]
    return out


def test_significance_sums_over_heads_and_real_queries():
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    probs = torch.rand(2, 3, 5, 5).masked_fill(mask[:, None, None, :] == 0, 0.0)
    probs = probs / probs.sum(-1, keepdim=True)
    s = token_significance(probs, mask)
    ref = _loop_significance(probs, mask)
    torch.testing.assert_close(s[:, 1:][mask[:, 1:].bool()], ref[:, 1:][mask[:, 1:].bool()])
    assert s[0, 0] == s[1, 0] == torch.finfo(s.dtype).max  # [CLS] first
    assert s[0, 4] == -5 and s[1, 2] == -3 and s[1, 4] == -5  # padding last, earlier positions first


def test_top_k_keeps_cls_and_original_order():
    scores = torch.tensor([[0.1, 5.0, 0.2, 9.0, 3.0, 0.0], [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]])
    scores[:, 0] = torch.finfo(scores.dtype).max
    assert top_k_rows(scores, 3).tolist() == [[0, 1, 3], [0, 4, 5]]
    assert top_k_rows(scores, 1).tolist() == [[0], [0]]


@pytest.fixture(params=["classification", "qa"])
def model(request):
    return make_tiny_model(request.param, "bert", num_labels=2, num_hidden_layers=3)


def _reference_keep(model, ids, mask, tt, ks):
    """Explicit per-layer indices: run layer by layer with a recording selector over Python-sorted scores."""
    chosen = []

    def pick(i, probs, m):
        s = _loop_significance(probs, m)
        s[:, 0] = float("inf")
        n = probs.shape[-1]
        for b in range(s.shape[0]):
            for j in range(n):
                if not m[b, j]:
                    s[b, j] = -1 - j
        idx = torch.tensor([sorted(sorted(range(n), key=lambda j: -float(s[b, j]))[: ks[i]]) for b in range(len(s))])
        chosen.append(idx)
        return idx

    with torch.no_grad():
        model(ids, mask, tt, keep=pick, restore=model.head is HeadKind.QA)
    return chosen


def test_forward_with_config_keeps_the_most_significant_tokens(model):
    ids, mask, tt = _inputs()
    cfg = LengthConfig.from_lengths([8, 5, 3])
    keep = _reference_keep(model, ids, mask, tt, [8, 5, 3])
    restore = model.head is HeadKind.QA
    with torch.no_grad():
        got = forward_with_config(model, ids, mask, tt, cfg)
        ref = model(ids, mask, tt, keep=keep, restore=restore)
    for name in ("logits", "start_logits", "end_logits"):
        if getattr(ref, name) is not None:
            torch.testing.assert_close(getattr(got, name), getattr(ref, name), atol=1e-6, rtol=0)
    assert got.encoder.positions[-1].tolist() == [
        [int(keep[0][b][int(keep[1][b][int(r)])]) for r in keep[2][b]] for b in range(B)
    ]
    for pos in got.encoder.positions:  # [CLS] kept, original order
        assert (pos[:, 0] == 0).all() and (pos[:, 1:] > pos[:, :-1]).all()


def test_selector_counts_follow_lengths_for():
    mask = torch.ones(2, 40, dtype=torch.long)
    mask[1, 25:] = 0  # N = longest real row = 40
    for cfg in (LengthConfig.from_ratios([0.9, 0.3, 0.3, 0.05]), LengthConfig.from_lengths([39, 20, 20, 1])):
        sel = LengthSelector.from_config(cfg, 4, mask)
        assert tuple(int(sel.keep_count(i)) for i in range(4)) == cfg.lengths_for(40)
    sel = LengthSelector.from_config(LengthConfig.from_ratios([0.5, 0.5]), 2, mask[1:])  # N = 25 here
    assert int(sel.keep_count(0)) == 13
    ratios = LengthConfig.from_ratios([0.9, 0.3, 0.3, 0.05])
    sel = LengthSelector.from_config(ratios, 4, mask)  # per batch row: its own real length
    counts = []
    for i in range(4):  # each layer clips to what the row kept at the previous one, as __call__ does
        sel.prev_k = sel.row_keep_counts(i)
        counts.append(sel.prev_k.tolist())
    assert [tuple(c[b] for c in counts) for b in range(2)] == [ratios.lengths_for(40), ratios.lengths_for(25)]


@pytest.mark.parametrize("head", ["classification", "qa"])
def test_ratio_configuration_keeps_per_row_what_the_row_keeps_alone(head):
    """In a padded batch, each row keeps ceil(r · its own length) tokens: outputs equal batch-size-1 runs."""
    model = make_tiny_model(head, "bert", num_labels=3 if head == "classification" else 2, num_hidden_layers=3).eval()
    ids, mask, tt = _inputs(4)
    cfg = LengthConfig.from_ratios([0.8, 0.5, 0.3])
    with torch.no_grad():
        batch = forward_with_config(model, ids, mask, tt, cfg)
        for b in range(B):
            n = int(mask[b].sum())
            alone = forward_with_config(model, ids[b : b + 1, :n], mask[b : b + 1, :n], tt[b : b + 1, :n], cfg)
            for name in ("logits", "start_logits", "end_logits"):
                if getattr(alone, name) is not None:
                    got = getattr(batch, name)[b]
                    got = got if name == "logits" else got[:n]  # span logits of real tokens
                    torch.testing.assert_close(got, getattr(alone, name)[0], atol=1e-5, rtol=0, msg=f"{name} row {b}")
            if head == "classification":  # the same tokens survive, in the same order
                kept = batch.encoder.positions[-1][b][batch.encoder.attention_mask[b].bool()]
                assert kept.tolist() == alone.encoder.positions[-1][0].tolist()


def test_qa_drop_and_restore_puts_tokens_back_at_their_positions():
    qa = make_tiny_model("qa", "bert", num_hidden_layers=3)
    ids, mask, tt = _inputs(1)
    cfg = LengthConfig.from_lengths([9, 6, 2])
    with torch.no_grad():
        out = qa(
            ids,
            mask,
            tt,
            keep=LengthSelector.from_config(cfg, 3, mask),
            restore=True,
            capture=Capture.of("hidden_states"),
        )
    enc = out.encoder
    x, pos = enc.hidden_states, enc.positions
    assert out.start_logits.shape == (B, N)
    for b in range(B):
        for p in range(N):
            # the last layer whose output still holds position p; X^0 if dropped at the first layer
            last = max([layer + 1 for layer in range(3) if p in pos[layer][b].tolist()], default=0)
            expected = x[0][b, p] if last == 0 else x[last][b, pos[last - 1][b].tolist().index(p)]
            torch.testing.assert_close(enc.last_hidden_state[b, p], expected, atol=0, rtol=0)
    ref = qa.hf.qa_outputs(enc.last_hidden_state)[..., 0]
    torch.testing.assert_close(out.start_logits, ref, atol=1e-6, rtol=0)


def test_classification_result_does_not_depend_on_padding():
    clf = make_tiny_model("classification", "bert", num_labels=3, num_hidden_layers=3)
    ids, mask, tt = _inputs(2)
    cfg = LengthConfig.from_ratios([0.8, 0.5, 0.3])
    with torch.no_grad():
        batch = forward_with_config(clf, ids, mask, tt, cfg).logits
        n1 = int(mask[1].sum())
        n0 = int(mask[0].sum())
        # the longest row alone gives the same N, so the same k per layer
        alone = forward_with_config(clf, ids[:1, :n0], mask[:1, :n0], tt[:1, :n0], cfg).logits
        # more padding never changes which tokens are kept (absolute lengths)
        abs_cfg = LengthConfig.from_lengths([7, 4, 2])
        padded = forward_with_config(clf, ids, mask, tt, abs_cfg).logits[1]
        short = forward_with_config(clf, ids[1:2, :n1], mask[1:2, :n1], tt[1:2, :n1], abs_cfg).logits[0]
    torch.testing.assert_close(batch[0], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(padded, short, atol=1e-5, rtol=0)


def test_full_configuration_equals_plain_forward_on_real_tokens(model):
    ids, mask, tt = _inputs()
    with torch.no_grad():
        plain = model(ids, mask, tt)
        full = forward_with_config(model, ids, mask, tt, LengthConfig.full(3))
    if model.head is HeadKind.CLASSIFICATION:
        torch.testing.assert_close(full.logits, plain.logits, atol=1e-5, rtol=0)
    else:
        real = mask.bool()
        torch.testing.assert_close(full.start_logits[real], plain.start_logits[real], atol=1e-5, rtol=0)


def test_layer_drop_equals_a_model_without_the_layer(model):
    ids, mask, tt = _inputs()
    shallow = copy.deepcopy(model)
    del shallow.base.encoder.layer[1]
    with torch.no_grad():
        got = forward_with_config(model, ids, mask, tt, None, layers=[0, 2])
        ref = shallow(ids, mask, tt)
    name = "logits" if model.head is HeadKind.CLASSIFICATION else "start_logits"
    torch.testing.assert_close(getattr(got, name), getattr(ref, name), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"layers=\[2, 0\] must be strictly increasing"):
        forward_with_config(model, ids, mask, tt, None, layers=[2, 0])


def test_wrong_number_of_layers_is_a_config_error(model):
    ids, mask, tt = _inputs()
    with pytest.raises(ConfigError, match="has 2 layers; the model has 3"):
        forward_with_config(model, ids, mask, tt, LengthConfig.from_lengths([5, 3]))
