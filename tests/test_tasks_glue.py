"""GLUE readers (every task's official layout), errors, registry, tokenization and metrics."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATA, requires_data, tiny_vocab
from slimformer.errors import ConfigError, DataError
from slimformer.tasks import TASKS, Example, compute_glue_metrics, encode_glue, get_task, read_glue

MNLI_TRAIN_HEADER = (
    "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
    "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label"
)
MNLI_DEV_HEADER = MNLI_TRAIN_HEADER.replace("label1\tgold_label", "label1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label")
MNLI_TEST_HEADER = MNLI_TRAIN_HEADER.replace("\tlabel1\tgold_label", "")
STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"

# (task, folder, file, file text, split, expected examples) -- one labelled and one test file per task.
LAYOUTS = [
    (
        "cola",
        "CoLA",
        "train.tsv",
        'gj04\t1\t\tThe film was "good".\ngj04\t0\t*\tFilm the good was.\n',
        "train",
        [
            Example("train-0", 'The film was "good".', None, "1"),
            Example("train-1", "Film the good was.", None, "0"),
        ],
    ),
    (
        "cola",
        "CoLA",
        "test.tsv",
        "index\tsentence\n0\tBill whistled.\n",
        "test",
        [Example("test-0", "Bill whistled.", None, None)],
    ),
    (
        "sst2",
        "SST-2",
        "train.tsv",
        'sentence\tlabel\na "great movie \t1\nboring \t0\n',
        "train",
        [Example("train-0", 'a "great movie ', None, "1"), Example("train-1", "boring ", None, "0")],
    ),
    (
        "sst2",
        "SST-2",
        "test.tsv",
        "index\tsentence\n0\tfun .\n",
        "test",
        [Example("test-0", "fun .", None, None)],
    ),
    (
        "mrpc",
        "MRPC",
        "dev.tsv",
        '\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t11\t12\tParis is big.\t"Paris is large.\n',
        "dev",
        [Example("dev-0", "Paris is big.", '"Paris is large.', "1")],
    ),
    (
        "mrpc",
        "MRPC",
        "test.tsv",
        "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t1\t2\tA b.\tC d.\n",
        "test",
        [Example("test-0", "A b.", "C d.", None)],
    ),
    (
        "stsb",
        "STS-B",
        "train.tsv",
        STSB_HEADER + "\tscore\n0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane.\tAn air plane.\t5.000\n"
        "1\tmain-news\tMSRpar\t2012train\t0002\tnone\tnone\tX y.\tZ w.\t0.4\n",
        "train",
        [Example("train-0", "A plane.", "An air plane.", 5.0), Example("train-1", "X y.", "Z w.", 0.4)],
    ),
    (
        "stsb",
        "STS-B",
        "test.tsv",
        STSB_HEADER + "\n0\tg\tf\ty\t3\tn\tn\tS1.\tS2.\n",
        "test",
        [Example("test-0", "S1.", "S2.", None)],
    ),
    (
        "qqp",
        "QQP",
        "train.tsv",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n7\t15\t16\tHow are you?\tHow do you do?\t1\n",
        "train",
        [Example("train-7", "How are you?", "How do you do?", "1")],
    ),
    (
        "qqp",
        "QQP",
        "test.tsv",
        "id\tquestion1\tquestion2\n3\tQ1?\tQ2?\n",
        "test",
        [Example("test-3", "Q1?", "Q2?", None)],
    ),
    (
        "mnli",
        "MNLI",
        "train.tsv",
        MNLI_TRAIN_HEADER
        + "\n0\t31193\t31193n\tgovernment\t( ( a ) )\t( b )\t(ROOT a)\t(ROOT b)\tPrem one.\tHyp one.\t"
        "neutral\tneutral\n",
        "train",
        [Example("train-0", "Prem one.", "Hyp one.", "neutral")],
    ),
    (
        "mnli",
        "MNLI",
        "dev_matched.tsv",
        MNLI_DEV_HEADER + "\n9\t1\t1e\tfiction\tx\ty\tx\ty\tP.\tH.\tneutral\tentailment\tentailment\tneutral\t"
        "entailment\tentailment\n",
        "dev",
        [Example("dev-9", "P.", "H.", "entailment")],
    ),
    (
        "mnli",
        "MNLI",
        "dev_mismatched.tsv",
        MNLI_DEV_HEADER + "\n4\t1\t1c\tletters\tx\ty\tx\ty\tP.\tH.\tcontradiction\tcontradiction\tneutral\t"
        "contradiction\tcontradiction\tcontradiction\n",
        "dev_mismatched",
        [Example("dev_mismatched-4", "P.", "H.", "contradiction")],
    ),
    (
        "mnli",
        "MNLI",
        "test_matched.tsv",
        MNLI_TEST_HEADER + "\n0\t1\t1\tg\tx\ty\tx\ty\tP.\tH.\n",
        "test",
        [Example("test-0", "P.", "H.", None)],
    ),
    (
        "qnli",
        "QNLI",
        "dev.tsv",
        "index\tquestion\tsentence\tlabel\n0\tWho?\tHe did.\tnot_entailment\n",
        "dev",
        [Example("dev-0", "Who?", "He did.", "not_entailment")],
    ),
    (
        "rte",
        "RTE",
        "train.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\tA b c.\tA b.\tentailment\n",
        "train",
        [Example("train-0", "A b c.", "A b.", "entailment")],
    ),
    (
        "rte",
        "RTE",
        "test.tsv",
        "index\tsentence1\tsentence2\n0\tA.\tB.\n",
        "test",
        [Example("test-0", "A.", "B.", None)],
    ),
    (
        "wnli",
        "WNLI",
        "train.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\tI stuck a pin.\tThe pin had a hole.\t0\n",
        "train",
        [Example("train-0", "I stuck a pin.", "The pin had a hole.", "0")],
    ),
]


def _write(root: Path, folder: str, name: str, content: str | bytes) -> Path:
    path = root / "glue_data" / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


@pytest.mark.parametrize(
    "task, folder, name, content, split, expected", LAYOUTS, ids=[f"{t[0]}-{t[4]}" for t in LAYOUTS]
)
def test_reads_official_layout(tmp_path, task, folder, name, content, split, expected):
    _write(tmp_path, folder, name, content)
    assert read_glue(task, tmp_path, split) == expected


def test_every_glue_task_has_a_layout_case():
    glue = {name for name, spec in TASKS.items() if spec.kind != "qa"}
    assert glue == {case[0] for case in LAYOUTS}


def test_data_dir_may_be_glue_data_or_task_folder_and_crlf_and_no_final_newline(tmp_path):
    path = _write(tmp_path, "SST-2", "dev.tsv", "sentence\tlabel\r\ngood\t1\r\nbad\t0")
    expected = [Example("dev-0", "good", None, "1"), Example("dev-1", "bad", None, "0")]
    assert read_glue("SST-2", tmp_path / "glue_data", "dev") == expected
    assert read_glue("sst-2", path.parent, "dev") == expected


def _error(tmp_path: Path, task: str, split: str, folder: str, name: str, content: str | bytes, **kw) -> str:
    _write(tmp_path, folder, name, content)
    with pytest.raises(DataError) as info:
        read_glue(task, tmp_path, split, **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "task, folder, content, line, words",
    [
        ("sst2", "SST-2", "sentence\tlabel\ngood\t1\ngood\t1\textra\n", 3, ["expected 2", "found 3"]),
        ("cola", "CoLA", "gj04\t1\t\tOk.\ngj04\t1\tOk.\n", 2, ["expected 4", "found 3"]),
        ("sst2", "SST-2", "sentence\tlabel\ngood\t2\n", 2, ["label '2'", "'label'"]),
        (
            "mnli",
            "MNLI",
            MNLI_TRAIN_HEADER + "\n0\t1\t1\tg\tx\ty\tx\ty\tP.\tH.\tneutral\tcontradictory\n",
            2,
            ["contradictory", "gold_label"],
        ),
        ("rte", "RTE", "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\t1\n", 2, ["label '1'"]),
        (
            "stsb",
            "STS-B",
            STSB_HEADER + "\tscore\n0\tg\tf\ty\t3\tn\tn\tS1.\tS2.\thigh\n",
            2,
            ["'high'", "number"],
        ),
        (
            "stsb",
            "STS-B",
            STSB_HEADER + "\tscore\n0\tg\tf\ty\t3\tn\tn\tS1.\tS2.\t5.5\n",
            2,
            ["'5.5'", "[0, 5]"],
        ),
        ("sst2", "SST-2", "sentence\tlabel\ngood\t1\n\nbad\t0\n", 3, ["empty line"]),
        ("sst2", "SST-2", "sentence\tlabel\ngood\t1\n \t0\n", 3, ["empty text", "'sentence'"]),
        (
            "mrpc",
            "MRPC",
            "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA.\t\n",
            2,
            ["'#2 String'"],
        ),
        ("sst2", "SST-2", "text\tlabel\ngood\t1\n", 1, ["header", "'sentence'"]),
        ("mnli", "MNLI", MNLI_TRAIN_HEADER.replace("gold_label", "gold") + "\n", 1, ["gold_label"]),
        ("sst2", "SST-2", "sentence\tlabel\n", 1, ["no examples"]),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, task, folder, content, line, words):
    message = _error(tmp_path, task, "train", folder, "train.tsv", content)
    assert f"train.tsv:{line}:" in message
    for word in words:
        assert word in message


def test_non_utf8_bytes_report_the_line(tmp_path):
    message = _error(tmp_path, "sst2", "dev", "SST-2", "dev.tsv", b"sentence\tlabel\ngood\t1\nbad \xff\t0\n")
    assert "dev.tsv:3:" in message and "UTF-8" in message


def test_missing_file_names_path_and_how_to_set_data_dir(tmp_path):
    with pytest.raises(DataError) as info:
        read_glue("mnli", tmp_path, "dev_mismatched")
    message = str(info.value)
    assert str(tmp_path / "MNLI" / "dev_mismatched.tsv") in message
    assert "--data" in message and "SLIMFORMER_DATA" in message


def test_unknown_split_and_qa_task_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="dev_mismatched"):
        read_glue("sst2", tmp_path, "dev_mismatched")
    with pytest.raises(ConfigError, match="read_squad"):
        read_glue("squad", tmp_path, "dev")


def test_skip_malformed_is_opt_in(tmp_path, caplog):
    content = (
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
        "1\t1\t2\tA?\tB?\t0\n"
        "2\t3\t4\tC?\n"  # truncated line, as in the official QQP train file
        "3\t5\t6\tD?\tE?\t1\n"
    )
    message = _error(tmp_path, "qqp", "train", "QQP", "train.tsv", content)
    assert "train.tsv:3:" in message and "expected 6" in message
    with caplog.at_level(logging.WARNING):
        examples = read_glue("qqp", tmp_path, "train", skip_malformed=True)
    assert [e.guid for e in examples] == ["train-1", "train-3"]
    assert "skipped 1 malformed line" in caplog.text and "line 3" in caplog.text


def test_row_number_guid_counts_skipped_lines(tmp_path):
    _write(tmp_path, "SST-2", "train.tsv", "sentence\tlabel\na\t1\nb\t0\textra\nc\t0\n")
    assert [e.guid for e in read_glue("sst2", tmp_path, "train", skip_malformed=True)] == [
        "train-0",
        "train-2",
    ]


# ---------------------------------------------------------------- registry


@pytest.mark.parametrize(
    "alias, name",
    [
        ("SST-2", "sst2"),
        ("sst_2", "sst2"),
        ("STS-B", "stsb"),
        ("CoLA", "cola"),
        ("MNLI", "mnli"),
        ("SQuAD", "squad"),
        ("squad-v1.1", "squad"),
        ("QNLI", "qnli"),
        ("rte", "rte"),
        ("W-NLI", "wnli"),
    ],
)
def test_get_task_normalises_names(alias, name):
    assert get_task(alias) is TASKS[name]
    assert get_task(TASKS[name]) is TASKS[name]


def test_get_task_unknown_lists_known_tasks():
    with pytest.raises(ConfigError) as info:
        get_task("sst3")
    message = str(info.value)
    assert "\n" not in message and "'sst3'" in message
    assert all(name in message for name in ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"))


def test_registry_conventions():
    main = {name: spec.main_metric for name, spec in TASKS.items()}
    assert main == {
        "cola": "mcc",
        "sst2": "accuracy",
        "mrpc": "f1",
        "stsb": "spearman",
        "qqp": "f1",
        "mnli": "accuracy",
        "qnli": "accuracy",
        "rte": "accuracy",
        "wnli": "accuracy",
        "squad": "f1",
    }
    assert set(TASKS["mrpc"].metrics) == set(TASKS["qqp"].metrics) == {"f1", "accuracy"}
    assert set(TASKS["stsb"].metrics) == {"pearson", "spearman"}
    assert TASKS["mnli"].labels == ("contradiction", "entailment", "neutral")
    assert TASKS["mnli"].split_file("dev") == "dev_matched.tsv"
    assert TASKS["mnli"].eval_splits == ("dev", "dev_mismatched")
    assert all(s.max_seq_length == 128 for s in TASKS.values() if s.kind != "qa")
    assert TASKS["squad"].max_seq_length == 384 and TASKS["squad"].kind == "qa"
    assert TASKS["stsb"].kind == "regression" and TASKS["stsb"].labels is None and TASKS["stsb"].num_labels == 1
    assert TASKS["mnli"].num_labels == 3


# ---------------------------------------------------------------- tokenization and metrics


@pytest.fixture(scope="module")
def wordpiece(tiny_tokenizer):
    """conftest's tiny_tokenizer if it tokenizes, else the same vocab given as ``vocab=`` (transformers 5)."""
    if tiny_tokenizer.tokenize("the") == ["the"]:
        return tiny_tokenizer
    from transformers import BertTokenizerFast

    return BertTokenizerFast(vocab={w: i for i, w in enumerate(tiny_vocab())}, do_lower_case=True)


def _ids(*tokens: str) -> list[int]:
    # (single letters appear twice in tiny_vocab -- as letters and as words "a" -- so tests avoid them)
    vocab = tiny_vocab()
    return [vocab.index(t) for t in tokens]


def test_encode_single_sentence(wordpiece):
    examples = [Example("dev-0", "The movie was GOOD", None, "1"), Example("dev-1", "bad", None, None)]
    features = encode_glue(examples, "sst2", wordpiece)
    assert features[0]["input_ids"] == _ids("[CLS]", "the", "movie", "was", "good", "[SEP]")
    assert features[0]["attention_mask"] == [1] * 6
    assert features[0]["token_type_ids"] == [0] * 6
    assert features[0]["labels"] == 1
    assert features[1]["input_ids"] == _ids("[CLS]", "bad", "[SEP]") and "labels" not in features[1]


def test_encode_pair_labels_and_truncation(wordpiece):
    mnli = encode_glue([Example("t-0", "paris is the city", "the river", "neutral")], "mnli", wordpiece)[0]
    assert mnli["input_ids"] == _ids("[CLS]", "paris", "is", "the", "city", "[SEP]", "the", "river", "[SEP]")
    assert mnli["token_type_ids"] == [0] * 6 + [1] * 3
    assert mnli["labels"] == 2  # "neutral" is the third MNLI label
    stsb = encode_glue([Example("t-0", "one two three", "four", 3.8)], get_task("stsb"), wordpiece, max_seq_length=5)[0]
    # 3 + 1 tokens + 3 specials = 7 > 5: longest-first removes "three" (3 vs 1), then "two" (2 vs 1)
    assert stsb["input_ids"] == _ids("[CLS]", "one", "[SEP]", "four", "[SEP]")
    assert isinstance(stsb["labels"], float) and stsb["labels"] == pytest.approx(3.8)


def test_encode_rejects_mixed_pairs_and_foreign_labels(wordpiece):
    with pytest.raises(DataError, match="mix"):
        encode_glue([Example("a", "x", "y", "0"), Example("b", "x", None, "0")], "mrpc", wordpiece)
    with pytest.raises(DataError, match="'maybe'"):
        encode_glue([Example("a", "x", "y", "maybe")], "rte", wordpiece)
    assert encode_glue([], "rte", wordpiece) == []


def test_compute_glue_metrics():
    # logits -> argmax [1, 0, 1, 1]; labels [1, 1, 1, 0]: TP 2, FP 1, FN 1 -> F1 2/3; accuracy 2/4
    logits = np.array([[0.1, 0.9], [2.0, -1.0], [0.0, 0.5], [-3.0, 3.0]])
    assert compute_glue_metrics("mrpc", logits, [1, 1, 1, 0]) == pytest.approx({"f1": 2 / 3, "accuracy": 0.5})
    # STS-B scores (n, 1): perfectly linear -> 1.0 both
    out = compute_glue_metrics("stsb", np.array([[0.5], [1.5], [2.5]]), [1.0, 3.0, 5.0])
    assert out == pytest.approx({"pearson": 1.0, "spearman": 1.0})
    with pytest.raises(ConfigError):
        compute_glue_metrics("squad", [1], [1])


# ---------------------------------------------------------------- real data


@pytest.mark.integration
@requires_data
@pytest.mark.parametrize(
    "task, split, rows, label_counts",
    [
        ("sst2", "train", 67349, {"1": 37569, "0": 29780}),
        ("sst2", "dev", 872, {"1": 444, "0": 428}),
        ("sst2", "test", 1821, {None: 1821}),
        ("cola", "train", 8551, {"1": 6023, "0": 2528}),
        ("cola", "dev", 1043, None),
        ("cola", "test", 1063, {None: 1063}),
        ("mrpc", "train", 3668, {"1": 2474, "0": 1194}),
        ("mrpc", "dev", 408, {"1": 279, "0": 129}),
        ("mrpc", "test", 1725, {None: 1725}),
    ],
)
def test_real_glue_files(task, split, rows, label_counts):
    examples = read_glue(task, SHARED_DATA, split)
    assert len(examples) == rows
    assert len({e.guid for e in examples}) == rows
    if label_counts is not None:
        counts: dict = {}
        for e in examples:
            counts[e.label] = counts.get(e.label, 0) + 1
        assert counts == label_counts


@pytest.mark.integration
@requires_data
def test_real_mrpc_keeps_quotes_and_encodes(wordpiece):
    dev = read_glue("mrpc", SHARED_DATA / "glue_data", "dev")
    # the first dev pair's second sentence opens a quote it never closes (csv quoting would swallow lines)
    assert dev[0].text_b.startswith('"The foodservice pie business')
    features = encode_glue(dev, "mrpc", wordpiece)
    assert len(features) == 408 and all(len(f["input_ids"]) <= 128 for f in features)
