"""Parity of ``SlimModel.forward`` (our layer loop) with the Hugging Face model's own forward."""

from __future__ import annotations

import pytest
import torch

from conftest import make_tiny_model, requires_minilm
from slimformer.checkpoint import load_pretrained
from slimformer.models import Capture, HeadKind

ARCHS = ["bert", "roberta", "xlm-roberta"]
HEADS = ["classification", "qa", "none"]


def _make(head: str, model_type: str, **cfg):
    if head == "classification":
        cfg.setdefault("num_labels", 3)
    # type_vocab_size=2 so that non-zero token_type_ids are exercised for the RoBERTa family too
    return make_tiny_model(head, model_type, type_vocab_size=2, **cfg)


def _padded_inputs(model, batch: int = 3, seq: int = 11, seed: int = 0):
    """Random ids with right padding (rows of length 11, 7, 4) and two segments."""
    g = torch.Generator().manual_seed(seed)
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    ids = torch.randint(5, model.config.vocab_size, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    ids = ids.masked_fill(mask == 0, pad)
    token_type_ids = torch.zeros_like(ids)
    token_type_ids[:, 5:] = 1
    token_type_ids = token_type_ids * mask
    return ids, mask, token_type_ids


def _assert_same_outputs(model, ours, ref, atol: float) -> None:
    head = model.head
    if head is HeadKind.CLASSIFICATION:
        assert ours.logits.shape == ref.logits.shape
        torch.testing.assert_close(ours.logits, ref.logits, atol=atol, rtol=0)
    elif head is HeadKind.QA:
        assert ours.start_logits.shape == ref.start_logits.shape
        torch.testing.assert_close(ours.start_logits, ref.start_logits, atol=atol, rtol=0)
        torch.testing.assert_close(ours.end_logits, ref.end_logits, atol=atol, rtol=0)
    else:
        assert ours.encoder is not None, "head 'none' must return the encoder output"
        hidden = ours.encoder.last_hidden_state
        assert hidden.shape == ref.last_hidden_state.shape
        torch.testing.assert_close(hidden, ref.last_hidden_state, atol=atol, rtol=0)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("model_type", ARCHS)
def test_forward_matches_hf_eval(model_type, head):
    model = _make(head, model_type)
    ids, mask, tt = _padded_inputs(model)
    with torch.no_grad():
        ours = model(ids, mask, tt)
        ref = model.hf(input_ids=ids, attention_mask=mask, token_type_ids=tt)
    _assert_same_outputs(model, ours, ref, atol=1e-6)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("model_type", ARCHS)
def test_forward_matches_hf_without_mask_and_segments(model_type, head):
    model = _make(head, model_type)
    ids, _, _ = _padded_inputs(model)
    with torch.no_grad():
        _assert_same_outputs(model, model(ids), model.hf(input_ids=ids), atol=1e-6)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("model_type", ARCHS)
def test_forward_matches_hf_train_mode_no_dropout(model_type, head):
    model = _make(head, model_type, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    ids, mask, tt = _padded_inputs(model)
    ours = model(ids, mask, tt)
    ref = model.hf(input_ids=ids, attention_mask=mask, token_type_ids=tt)
    _assert_same_outputs(model, ours, ref, atol=1e-6)


@pytest.mark.parametrize("model_type", ARCHS)
def test_dropout_placement_matches_hf(model_type):
    """With dropout on and the same seed, the same random masks are drawn at the same places as in HF."""
    model = _make("classification", model_type, hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2).train()
    ids, mask, tt = _padded_inputs(model)
    torch.manual_seed(7)
    ours = model(ids, mask, tt).logits
    torch.manual_seed(7)
    ref = model.hf(input_ids=ids, attention_mask=mask, token_type_ids=tt).logits
    torch.manual_seed(8)
    other = model(ids, mask, tt).logits
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
    assert not torch.allclose(ours, other), "dropout had no effect in train mode"


@pytest.mark.parametrize("model_type", ARCHS)
def test_loss_matches_hf(model_type):
    model = _make("classification", model_type)
    ids, mask, tt = _padded_inputs(model)
    labels = torch.tensor([0, 2, 1])
    ours = model(ids, mask, tt, labels=labels)
    ref = model.hf(input_ids=ids, attention_mask=mask, token_type_ids=tt, labels=labels)
    torch.testing.assert_close(ours.loss, ref.loss, atol=1e-6, rtol=0)

    qa = _make("qa", model_type)
    start, end = torch.tensor([1, 3, 40]), torch.tensor([2, 5, 40])  # 40 is out of range: ignored by both
    ours = qa(ids, mask, tt, start_positions=start, end_positions=end)
    ref = qa.hf(input_ids=ids, attention_mask=mask, token_type_ids=tt, start_positions=start, end_positions=end)
    torch.testing.assert_close(ours.loss, ref.loss, atol=1e-6, rtol=0)


def test_unsupported_architecture_is_refused():
    from transformers import DistilBertConfig, DistilBertModel

    from slimformer.models import SlimModel

    cfg = DistilBertConfig(vocab_size=50, dim=32, n_layers=1, n_heads=4, hidden_dim=64)
    with pytest.raises(ValueError, match="distilbert"):
        SlimModel(DistilBertModel(cfg), HeadKind.NONE)


# --- integration: the real MiniLM -------------------------------------------------------------------

PAIRS = [
    ("A man is playing a guitar.", "Someone plays an instrument."),
    ("The cat sat on the mat.", "Stock markets fell sharply on Monday after the announcement."),
    ("Paris is the capital of France.", "What is the capital city of France?"),
    ("It was a terrible, boring film.", "I loved every minute of it."),
]


@pytest.fixture(scope="module")
def minilm():
    torch.manual_seed(0)
    model, tok = load_pretrained("minilm-l6", "classification", num_labels=2)
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():  # a seeded head with weights large enough that 1e-5 on the logits means something
        model.hf.classifier.weight.copy_(torch.randn(model.hf.classifier.weight.shape, generator=g) * 0.5)
        model.hf.classifier.bias.copy_(torch.randn(model.hf.classifier.bias.shape, generator=g) * 0.1)
    model.eval()
    batch = tok([a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any() and (batch["token_type_ids"] == 1).any()
    return model, batch


def _hf_with_attention(model, impl: str):
    try:
        model.hf.set_attn_implementation(impl)
    except (ValueError, ImportError) as e:
        pytest.skip(f"attn_implementation {impl!r} not available: {e}")
    assert model.hf.config._attn_implementation == impl


@pytest.mark.integration
@requires_minilm
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_minilm_logits_match_hf(minilm, impl):
    model, batch = minilm
    _hf_with_attention(model, impl)
    with torch.no_grad():
        ours = model(
            batch["input_ids"],
            batch["attention_mask"],
            batch["token_type_ids"],
            capture=Capture.of("hidden_states"),
        )
        ref = model.hf(**batch, output_hidden_states=True)
    assert ours.logits.abs().max() > 0.1  # not a degenerate head
    torch.testing.assert_close(ours.logits, ref.logits, atol=1e-5, rtol=0)
    valid = batch["attention_mask"].bool()
    torch.testing.assert_close(ours.encoder.hidden_states[-1][valid], ref.hidden_states[-1][valid], atol=1e-5, rtol=0)
