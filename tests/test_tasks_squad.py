"""SQuAD reader, article split, feature windows and post-processing."""

from __future__ import annotations

import json
import logging
import string

import numpy as np
import pytest

from conftest import SHARED_DATA, requires_data, tiny_vocab
from slimformer.errors import ConfigError, DataError
from slimformer.tasks import (
    SQUAD_SPLITS,
    QAExample,
    article_split,
    postprocess_qa_predictions,
    prepare_eval_features,
    prepare_train_features,
    read_squad,
    split_squad,
    squad_evaluate,
)


@pytest.fixture(scope="module")
def wordpiece(tiny_tokenizer):
    """conftest's tiny_tokenizer if it tokenizes, else the same vocab given as ``vocab=`` (transformers 5)."""
    if tiny_tokenizer.tokenize("the") == ["the"]:
        return tiny_tokenizer
    from transformers import BertTokenizerFast

    return BertTokenizerFast(vocab={w: i for i, w in enumerate(tiny_vocab())}, do_lower_case=True)


@pytest.fixture(scope="module")
def char_roberta():
    """A byte-level BPE (RoBERTa) tokenizer with no merges: one token per character, no token_type_ids."""
    from transformers import RobertaTokenizerFast

    vocab = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "\u0120"]
    vocab += list(string.ascii_letters + string.digits + string.punctuation)
    return RobertaTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, merges=[])


# ---------------------------------------------------------------- reader


def _squad(*articles: tuple[str, list[tuple[str, list[dict]]]]) -> dict:
    data = [{"title": t, "paragraphs": [{"context": c, "qas": qas} for c, qas in paras]} for t, paras in articles]
    return {"version": "1.1", "data": data}


def _qa(qid: str, question: str, *answers: tuple[str, int]) -> dict:
    return {"id": qid, "question": question, "answers": [{"text": t, "answer_start": s} for t, s in answers]}


CTX = "Paris is the capital of France."


def _file(tmp_path, obj) -> str:
    path = tmp_path / "squad.json"
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
    return str(path)


def test_read_squad(tmp_path):
    obj = _squad(
        ("Paris", [(CTX, [_qa("q1", "What is Paris?", ("the capital of France", 9), ("capital", 13))])]),
        ("Empty", [("Nothing here.", [])]),
        ("Rome", [("Rome is old.", [_qa("q2", "Is Rome old?", ("old", 8))])]),
    )
    assert read_squad(_file(tmp_path, obj)) == [
        QAExample("q1", "Paris", CTX, "What is Paris?", (("the capital of France", 9), ("capital", 13))),
        QAExample("q2", "Rome", "Rome is old.", "Is Rome old?", (("old", 8),)),
    ]


def test_answer_start_near_the_text_is_moved_far_is_an_error(tmp_path, caplog):
    obj = _squad(("Paris", [(CTX, [_qa("q1", "Where?", ("France", 21))])]))  # "France" is at 24
    with caplog.at_level(logging.WARNING):
        assert read_squad(_file(tmp_path, obj))[0].answers == (("France", 24),)
    assert "moved answer_start of 1 answer" in caplog.text
    far = _squad(("P", [("France " + "x" * 100 + " end", [_qa("q1", "Where?", ("France", 100))])]))
    with pytest.raises(DataError, match=r"data\[0\]\.paragraphs\[0\]\.qas\[0\]\.answers\[0\].*'France'"):
        read_squad(_file(tmp_path, far))
    absent = _squad(("P", [(CTX, [_qa("q1", "Where?", ("Berlin", 0))])]))
    with pytest.raises(DataError, match="'Berlin' is not in the context"):
        read_squad(_file(tmp_path, absent))


def test_missing_keys_are_named_by_their_path(tmp_path):
    obj = _squad(("A", [(CTX, [_qa("q0", "?", ("Paris", 0))])]), ("B", [(CTX, []), (CTX, [_qa("q1", "?")])]))
    del obj["data"][1]["paragraphs"][1]["qas"][0]["answers"]
    with pytest.raises(DataError, match=r"missing key data\[1\]\.paragraphs\[1\]\.qas\[0\]\.answers$"):
        read_squad(_file(tmp_path, obj))
    with pytest.raises(DataError, match="missing key data$"):
        read_squad(_file(tmp_path, {"version": "1.1"}))
    del obj["data"][0]["title"]
    with pytest.raises(DataError, match=r"missing key data\[0\]\.title"):
        read_squad(_file(tmp_path, obj))


@pytest.mark.parametrize(
    "text, pattern",
    [
        ('{"data": [}', r"squad\.json:1:\d+: invalid JSON"),
        ("[1, 2]", "top level should be a JSON object"),
        (
            json.dumps(_squad(("A", [(CTX, [_qa("q", "?", ("Paris", "0"))])]))),
            r"answer_start should be a int",
        ),
        (json.dumps(_squad(("A", [(CTX, [_qa("q", "?", ("", 0))])]))), r"answers\[0\]\.text is empty"),
        (json.dumps(_squad(("A", [(CTX, [_qa("q", "?"), _qa("q", "?")])]))), "repeats"),
    ],
)
def test_malformed_files(tmp_path, text, pattern):
    with pytest.raises(DataError, match=pattern) as info:
        read_squad(_file(tmp_path, text))
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="SLIMFORMER_DATA"):
        read_squad(tmp_path / "dev-v1.1.json")


# ---------------------------------------------------------------- split


def _corpus(n_articles: int = 20) -> list[QAExample]:
    return [
        QAExample(f"a{a}p{p}q{q}", f"title{a}", f"context {a} {p}", "q?", (("context", 0),))
        for a in range(n_articles)
        for p in range(3)
        for q in range(2)
    ]


def test_article_split_is_disjoint_complete_and_deterministic():
    corpus = _corpus()
    train, held = article_split(corpus)
    # round(0.25 * 20) = 5 eval articles of 3 paragraphs x 2 questions = 30 questions
    assert len({e.title for e in held}) == 5 and len(held) == 30 and len(train) == 90
    assert not {e.title for e in train} & {e.title for e in held}
    assert not {e.context for e in train} & {e.context for e in held}
    assert sorted(e.id for e in train + held) == sorted(e.id for e in corpus)
    assert article_split(list(reversed(corpus)))[1] == list(reversed(held))  # order-independent choice
    assert split_squad(corpus, "dev-article-split") == (train, held)
    assert {e.title for e in article_split(corpus, seed=1)[1]} != {e.title for e in held}


def test_holdout_ids_drop_whole_paragraphs_from_train():
    corpus = _corpus()
    train, _ = article_split(corpus)
    victim = train[0]  # drop its paragraph (2 questions) by naming one question
    train2, _ = article_split(corpus, holdout_ids={victim.id})
    assert [e for e in train if e.context != victim.context] == train2 and len(train2) == len(train) - 2


def test_split_errors():
    with pytest.raises(ConfigError, match="known splits: dev-article-split"):
        split_squad(_corpus(), "random")
    with pytest.raises(ConfigError, match="eval_fraction"):
        article_split(_corpus(), eval_fraction=1.0)
    with pytest.raises(ConfigError, match="two articles"):
        article_split(_corpus(1))
    assert "dev-article-split" in SQUAD_SPLITS


# ---------------------------------------------------------------- features

# 30 context words that are single tokens of the tiny WordPiece vocab.
WORDS = (
    "one two three four five of to in on for with by at from as who when where why how which answer river "
    "year people movie film paris france good"
).split()
LONG_CTX = " ".join(WORDS)


def _answer_example(first: int, last: int, qid: str = "x") -> QAExample:
    text = " ".join(WORDS[first : last + 1])
    return QAExample(qid, "T", LONG_CTX, "what is it ?", ((text, LONG_CTX.index(text)),))


WINDOW = dict(max_seq_length=20, doc_stride=4, max_query_length=8)
# [CLS] what is it ? [SEP] = 6 tokens, then 20 - 4 - 3 = 13 context tokens per window; windows share 4 tokens:
# window 0: context tokens 0..12, window 1: 9..21, window 2: 18..29. Context token k of window w sits at
# position 6 + k - (0, 9, 18)[w].


@pytest.mark.parametrize(
    "first, last, positions",
    [
        (27, 28, [(0, 0), (0, 0), (15, 16)]),  # "paris france": only in window 2
        (9, 10, [(15, 16), (6, 7), (0, 0)]),  # "for with": in the overlap of windows 0 and 1
        (12, 20, [(0, 0), (9, 17), (0, 0)]),  # "at ... which": cut by window 0, whole in window 1
    ],
)
def test_train_feature_windows(wordpiece, first, last, positions):
    ex = _answer_example(first, last)
    feats = prepare_train_features([ex], wordpiece, **WINDOW)
    assert [(f["start_positions"], f["end_positions"]) for f in feats] == positions
    evals = prepare_eval_features([ex], wordpiece, **WINDOW)
    assert len(evals) == 3 and all(len(f["input_ids"]) <= 20 for f in feats)
    for f, e in zip(feats, evals):
        assert f["input_ids"] == e["input_ids"]
        if f["start_positions"]:
            span = LONG_CTX[e["offset_mapping"][f["start_positions"]][0] : e["offset_mapping"][f["end_positions"]][1]]
            assert span == ex.answers[0][0]


def test_eval_features_mark_question_tokens_none(wordpiece):
    ex = QAExample("q7", "T", "paris is good", "where is paris ?", (("paris", 0),))
    (feat,) = prepare_eval_features([ex], wordpiece)
    # [CLS] where is paris ? [SEP] paris is good [SEP]
    assert feat["example_id"] == "q7"
    assert feat["offset_mapping"] == [None] * 6 + [(0, 5), (6, 8), (9, 13), None]
    assert feat["token_type_ids"] == [0] * 6 + [1] * 4


def test_long_questions_are_cut(wordpiece):
    ex = QAExample("q", "T", "paris", "one two three four five", (("paris", 0),))
    (feat,) = prepare_train_features([ex], wordpiece, max_query_length=3)
    assert wordpiece.convert_ids_to_tokens(feat["input_ids"]) == [
        "[CLS]", "one", "two", "three", "[SEP]", "paris", "[SEP]"
    ]  # fmt: skip
    assert (feat["start_positions"], feat["end_positions"]) == (5, 5)


def test_roberta_style_tokenizer_without_token_type_ids(char_roberta):
    ex = QAExample("r", "T", "paris is big", "where?", (("is", 6),))
    (feat,) = prepare_train_features([ex], char_roberta)
    (evl,) = prepare_eval_features([ex], char_roberta)
    assert "token_type_ids" not in feat and "token_type_ids" not in evl
    # <s> w h e r e ? </s> </s> p a r i s Ġ i s ...: "i" of "is" is token 15, "s" token 16
    assert (feat["start_positions"], feat["end_positions"]) == (15, 16)
    assert evl["offset_mapping"][15][0] == 6 and evl["offset_mapping"][16][1] == 8


def test_feature_errors(wordpiece, char_roberta):
    with pytest.raises(DataError, match="no answer"):
        prepare_train_features([QAExample("q", "T", "c", "q", ())], wordpiece)
    with pytest.raises(ConfigError, match="doc_stride"):
        prepare_eval_features([_answer_example(0, 0)], wordpiece, max_seq_length=20, doc_stride=16)


# ---------------------------------------------------------------- post-processing

PP_CTX = "paris is the capital of france"
# token:      0     1     2         3        4        5         6         7        8
PP_OFFSETS = [None, None, (0, 5), (6, 8), (9, 12), (13, 20), (21, 23), (24, 30), None]
PP_EX = QAExample("e", "T", PP_CTX, "q", (("france", 24),))


def _logits(n: int, peaks: dict[int, float]) -> np.ndarray:
    row = np.zeros(n)
    for i, v in peaks.items():
        row[i] = v
    return row


def test_postprocess_picks_best_valid_span():
    feats = [{"example_id": "e", "offset_mapping": PP_OFFSETS}]
    # (7, 2) scores 20 but ends before it starts; (2, 2) = 5 + 10 = 15 beats (7, 7) = 10 + 4 = 14
    start = _logits(9, {7: 10.0, 2: 5.0})[None]
    end = _logits(9, {2: 10.0, 7: 4.0})[None]
    assert postprocess_qa_predictions([PP_EX], feats, start, end) == {"e": "paris"}
    # question tokens (offset None) are never chosen even with the largest logits
    start = _logits(9, {0: 99.0, 1: 99.0, 5: 3.0})[None]
    end = _logits(9, {0: 99.0, 8: 99.0, 7: 3.0})[None]
    assert postprocess_qa_predictions([PP_EX], feats, start, end) == {"e": "capital of france"}
    # the same span is too long at max_answer_length=2 (tokens 5..7 = 3 tokens): next best is a 1-2 token span
    assert postprocess_qa_predictions([PP_EX], feats, start, end, max_answer_length=2)["e"] != "capital of france"


def test_postprocess_best_over_features_padding_and_empty():
    other = [None, None, (0, 5), (6, 8), (9, 12), None]  # a shorter first window
    feats = [{"example_id": "e", "offset_mapping": other}, {"example_id": "e", "offset_mapping": PP_OFFSETS}]
    start = np.stack([_logits(12, {2: 3.0, 11: 50.0}), _logits(12, {7: 4.0})])  # index 11 is padding
    end = np.stack([_logits(12, {2: 3.0, 10: 50.0}), _logits(12, {7: 4.0})])
    # feature 0 best "paris" = 6, feature 1 best "france" = 8 -> "france"
    assert postprocess_qa_predictions([PP_EX], feats, start, end) == {"e": "france"}
    only_question = [{"example_id": "e", "offset_mapping": [None, None, None]}]
    assert postprocess_qa_predictions([PP_EX], only_question, np.ones((1, 3)), np.ones((1, 3))) == {"e": ""}
    assert postprocess_qa_predictions([PP_EX], [], np.zeros((0, 3)), np.zeros((0, 3))) == {"e": ""}
    with pytest.raises(ValueError, match="num_features=1"):
        postprocess_qa_predictions([PP_EX], feats[:1], start, end)


def _oracle(examples, tokenizer, max_answer_length: int = 30, **window) -> dict[str, str]:
    """One-hot logits at the training positions, post-processed: recovers answers inside some window."""
    train = prepare_train_features(examples, tokenizer, **window)
    evals = prepare_eval_features(examples, tokenizer, **window)
    n = max(len(f["input_ids"]) for f in evals)
    start, end = np.full((len(evals), n), -1e4), np.full((len(evals), n), -1e4)
    for i, f in enumerate(train):
        if f["start_positions"] != 0:
            start[i, f["start_positions"]] = end[i, f["end_positions"]] = 10.0
    return postprocess_qa_predictions(examples, evals, start, end, max_answer_length=max_answer_length)


def test_features_and_postprocess_round_trip(wordpiece, char_roberta):
    examples = [_answer_example(a, b, qid=f"{a}-{b}") for a, b in [(0, 0), (9, 10), (12, 20), (27, 28), (29, 29)]]
    # the character-level tokenizer needs longer windows and answers (the longest answer has 39 characters)
    char_window = dict(max_seq_length=96, doc_stride=48, max_query_length=16, max_answer_length=64)
    for tok, window in ((wordpiece, WINDOW), (char_roberta, char_window)):
        preds = _oracle(examples, tok, **window)
        assert preds == {ex.id: ex.answers[0][0] for ex in examples}
        assert squad_evaluate(examples, preds) == {"exact_match": 100.0, "f1": 100.0}


# ---------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def squad_dev() -> list[QAExample]:
    return read_squad(SHARED_DATA / "squad_v1.1" / "dev-v1.1.json")


@pytest.mark.integration
@requires_data
def test_real_squad_dev_and_split(squad_dev):
    assert len(squad_dev) == 10570
    assert len({e.title for e in squad_dev}) == 48
    assert len({(e.title, e.context) for e in squad_dev}) == 2067
    gold = {e.id: e.answers[0][0] for e in squad_dev}
    assert squad_evaluate(squad_dev, gold) == {"exact_match": 100.0, "f1": 100.0}
    train, held = split_squad(squad_dev, "dev-article-split")
    assert (len({e.title for e in train}), len({e.title for e in held})) == (36, 12)  # round(0.25 * 48) = 12
    assert not {e.context for e in train} & {e.context for e in held}
    assert len(train) + len(held) == 10570
    assert (len(train), len(held)) == (8174, 2396)  # the counts stated in article_split's docstring


@pytest.mark.integration
@requires_data
def test_real_xquad_is_part_of_squad_dev(squad_dev):
    xquad = read_squad(SHARED_DATA / "xquad" / "xquad.de.json")
    assert len(xquad) == 1190
    assert len({e.title for e in xquad}) == 48 and len({e.context for e in xquad}) == 240
    assert {e.id for e in xquad} <= {e.id for e in squad_dev}
    train, _ = article_split(squad_dev, holdout_ids={e.id for e in xquad})
    english = {e.context for e in read_squad(SHARED_DATA / "xquad" / "xquad.en.json")}
    assert len(english & {e.context for e in squad_dev}) == 240 and not english & {e.context for e in train}


@pytest.mark.integration
@requires_data
def test_real_squad_oracle_round_trip(squad_dev, wordpiece):
    examples = squad_dev[:60]
    # the tiny vocab splits most words into characters: long windows, long answers
    window = dict(max_seq_length=256, doc_stride=64, max_query_length=64, max_answer_length=200)
    preds = _oracle(examples, wordpiece, **window)
    # every first answer lies in some window and maps back through the offsets to a span containing it;
    # the span is longer only when the answer ends inside a token (e.g. "2" of the single token "2½")
    assert all(e.answers[0][0] in preds[e.id] for e in examples)
    assert sum(preds[e.id] == e.answers[0][0] for e in examples) >= 0.95 * len(examples)
