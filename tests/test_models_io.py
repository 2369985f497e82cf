"""Saving and loading slimformer model folders: round trip, atomic overwrite, refusing bad checkpoints."""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict

import pytest
import torch

from conftest import make_tiny_model
from slimformer.checkpoint import load_model, load_pretrained, save_model
from slimformer.errors import ModelLoadError, SlimformerError
from slimformer.models import ModelMeta
from slimformer.models.load import META_FILE, check_checkpoint_dir


def _ids(tokenizer):
    batch = tokenizer(
        ["the movie was good", "paris is the capital of france"],
        ["a very bad film", "what is the capital city"],
        padding=True,
        return_tensors="pt",
    )
    return batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]


def _meta(**kw):
    base = dict(
        head="classification",
        task="sst2",
        base_model="tiny-bert",
        applied=[{"stage": "finetune", "epochs": 1.0}],
        seed=13,
        max_seq_length=32,
        labels=["negative", "positive"],
    )
    base.update(kw)
    return ModelMeta(**base)


def _assert_one_line_error(err: pytest.ExceptionInfo, *needles: str) -> None:
    assert isinstance(err.value, SlimformerError)
    msg = str(err.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"


@pytest.fixture
def no_hub(monkeypatch):
    """Make the hub unreachable at once (instead of retrying for ~25 s) when a name is not local."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


# --- round trip --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("head", "model_type"), [("classification", "bert"), ("qa", "roberta"), ("none", "bert")])
def test_save_load_round_trip(tmp_path, tiny_tokenizer, head, model_type):
    model = make_tiny_model(head, model_type, seed=3, num_labels=2)
    meta = _meta(head=head)
    out = save_model(model, tiny_tokenizer, tmp_path / "m", meta)

    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", META_FILE, "tokenizer_config.json"} <= names
    assert names & {"tokenizer.json", "vocab.txt"}
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl")) for n in names)
    saved = json.loads((out / META_FILE).read_text())
    assert saved["seed"] == 13 and saved["labels"] == ["negative", "positive"]
    assert saved["versions"]["torch"] == torch.__version__

    loaded = load_model(out)
    assert loaded.path == out
    assert loaded.meta == meta
    assert asdict(loaded.meta) == saved
    assert loaded.model.head.value == head and not loaded.model.training
    assert len(loaded.tokenizer) == len(tiny_tokenizer)
    ids, mask, tt = _ids(tiny_tokenizer)
    assert (ids > 4).sum() > 10, "the tokenizer should know these words (not all [UNK]/special)"
    assert torch.equal(_ids(loaded.tokenizer)[0], ids)
    if model_type != "bert":
        tt = torch.zeros_like(tt)
    with torch.no_grad():
        a, b = model(ids, mask, tt), loaded.model(ids, mask, tt)
    if head == "classification":
        assert torch.equal(a.logits, b.logits)
    elif head == "qa":
        assert torch.equal(a.start_logits, b.start_logits) and torch.equal(a.end_logits, b.end_logits)
    else:
        assert torch.equal(a.encoder.last_hidden_state, b.encoder.last_hidden_state)
    # the folder is also an ordinary Hugging Face checkpoint
    slim, _ = load_pretrained(out, head)
    assert type(slim.hf) is type(model.hf)


def test_failed_save_keeps_previous_folder(tmp_path, tiny_tokenizer, monkeypatch):
    target = tmp_path / "m"
    first = make_tiny_model("classification", seed=1, num_labels=2)
    save_model(first, tiny_tokenizer, target, _meta(seed=1))
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tiny_tokenizer, "save_pretrained", boom)
    second = make_tiny_model("classification", seed=2, num_labels=2)
    with pytest.raises(RuntimeError, match="disk full"):
        save_model(second, tiny_tokenizer, target, _meta(seed=2))
    monkeypatch.undo()

    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"], "temporary folder left behind"
    loaded = load_model(target)
    assert loaded.meta.seed == 1
    ids, mask, tt = _ids(tiny_tokenizer)
    with torch.no_grad():
        assert torch.equal(loaded.model(ids, mask, tt).logits, first(ids, mask, tt).logits)
        assert not torch.equal(loaded.model(ids, mask, tt).logits, second(ids, mask, tt).logits)


def test_save_over_existing_folder_replaces_it(tmp_path, tiny_tokenizer):
    target = tmp_path / "m"
    save_model(make_tiny_model("classification", seed=1, num_labels=2), tiny_tokenizer, target, _meta(seed=1))
    (target / "stale.txt").write_text("from the previous save")
    save_model(make_tiny_model("qa", seed=2), tiny_tokenizer, target, _meta(head="qa", seed=2))
    assert not (target / "stale.txt").exists()
    loaded = load_model(target)
    assert loaded.meta.seed == 2 and loaded.model.head.value == "qa"


# --- bad checkpoints ---------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path, tiny_tokenizer):
    """A good slimformer folder."""
    return save_model(make_tiny_model("classification", num_labels=2), tiny_tokenizer, tmp_path / "good", _meta())


def test_missing_folder(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ModelLoadError) as err:
        load_model(missing)
    _assert_one_line_error(err, str(missing), "no such model folder")
    with pytest.raises(ModelLoadError) as err:
        load_pretrained(missing, "classification")
    _assert_one_line_error(err, str(missing), "not a checkpoint folder")


def test_folder_without_weights(saved):
    (saved / "model.safetensors").unlink()
    for load in (lambda: load_model(saved), lambda: load_pretrained(saved, "classification")):
        with pytest.raises(ModelLoadError) as err:
            load()
        _assert_one_line_error(err, str(saved), "no model weights", "model.safetensors")


def test_folder_without_config(saved):
    (saved / "config.json").unlink()
    with pytest.raises(ModelLoadError) as err:
        load_model(saved)
    _assert_one_line_error(err, str(saved), "config.json")


def test_pickle_only_weights_are_refused(saved, monkeypatch):
    model = make_tiny_model("classification", num_labels=2)
    torch.save(model.hf.state_dict(), saved / "pytorch_model.bin")  # a loadable pickle: refusing it is a choice
    (saved / "model.safetensors").unlink()
    monkeypatch.setattr(torch, "load", _forbidden("torch.load"))
    for load in (lambda: load_model(saved), lambda: load_pretrained(saved, "classification")):
        with pytest.raises(ModelLoadError) as err:
            load()
        _assert_one_line_error(err, str(saved), "pytorch_model.bin", "safetensors only")


def test_corrupt_safetensors(saved):
    (saved / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError) as err:
        load_model(saved)
    _assert_one_line_error(err, str(saved))


def test_missing_tokenizer_files(saved):
    for name in ("tokenizer.json", "vocab.txt"):
        (saved / name).unlink(missing_ok=True)
    with pytest.raises(ModelLoadError) as err:
        load_model(saved)
    _assert_one_line_error(err, str(saved), "tokenizer")


def test_missing_meta_file(saved):
    (saved / META_FILE).unlink()
    with pytest.raises(ModelLoadError) as err:
        load_model(saved)
    _assert_one_line_error(err, str(saved), META_FILE, "load_pretrained")
    model, _ = load_pretrained(saved, "classification")  # still an ordinary HF folder
    assert model.hf.config.num_labels == 2


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"task": "sst2"}', "missing key 'head'"),
        ('{"head": "classification", "lables": ["a"]}', "unknown key(s) ['lables']"),
        ('{"head": "regression"}', "head 'regression' is not one of"),
    ],
    ids=["not-json", "not-object", "no-head", "unknown-key", "bad-head"],
)
def test_invalid_meta_file(saved, content, needle):
    (saved / META_FILE).write_text(content)
    with pytest.raises(ModelLoadError) as err:
        load_model(saved)
    _assert_one_line_error(err, str(saved / META_FILE), needle)


def test_unsupported_model_type(tmp_path):
    from safetensors.torch import save_file
    from transformers import GPT2Config

    folder = tmp_path / "gpt2"
    GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=50).save_pretrained(folder)
    save_file({"wte.weight": torch.zeros(50, 32)}, folder / "model.safetensors")
    (folder / META_FILE).write_text(json.dumps({"head": "classification"}))
    for load in (lambda: load_model(folder), lambda: load_pretrained(folder, "classification")):
        with pytest.raises(ModelLoadError) as err:
            load()
        _assert_one_line_error(err, str(folder), "'gpt2' is not supported", "bert")


def test_unknown_alias(no_hub):
    with pytest.raises(ModelLoadError) as err:
        load_pretrained("minilm-l7", "classification")
    _assert_one_line_error(err, "minilm-l7")
    with pytest.raises(ModelLoadError) as err:
        load_pretrained("./no/such/model", "classification")
    _assert_one_line_error(err, "./no/such/model", "minilm-l6")


def test_check_checkpoint_dir_accepts_sharded_index(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors.index.json").write_text("{}")
    check_checkpoint_dir(tmp_path)  # no error


def _forbidden(name):
    def fail(*args, **kwargs):
        raise AssertionError(f"{name} was called while loading")

    return fail


def test_loading_never_unpickles(saved, monkeypatch):
    # a pickle next to the safetensors file must be ignored, not loaded
    torch.save({"x": torch.zeros(1)}, saved / "pytorch_model.bin")
    monkeypatch.setattr(torch, "load", _forbidden("torch.load"))
    monkeypatch.setattr(pickle, "load", _forbidden("pickle.load"))
    monkeypatch.setattr(pickle, "loads", _forbidden("pickle.loads"))
    monkeypatch.setattr(pickle, "Unpickler", _forbidden("pickle.Unpickler"))
    loaded = load_model(saved)
    assert loaded.meta.task == "sst2"
