"""Tasks described by the user's own files (slimformer.tasks.userdata), the user's fine-tuned folder as teacher
(the ``teacher`` stage), the one-command recipe, and serving (slimformer.pipeline) on tiny encoders."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest

from conftest import _WORDS, make_tiny_model
from slimformer.errors import ConfigError, DataError, SlimformerError
from slimformer.tasks import get_task
from slimformer.tasks.metrics import macro_f1
from slimformer.tasks.userdata import DataFiles, describe_task, read_user_qa, read_user_split

LABELS = ["card_arrival", "top_up", "refund", "pin_blocked"]


def _rows(n: int, seed: int = 0, labels: list = LABELS) -> list[dict]:
    rng = random.Random(seed)
    return [
        {"text": " ".join(rng.choices(_WORDS, k=rng.randint(3, 9))), "category": labels[i % len(labels)]}
        for i in range(n)
    ]


def _write(path: Path, rows: list[dict]) -> Path:
    suffix = path.suffix
    if suffix in (".csv", ".tsv"):
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t" if suffix == ".tsv" else ",")
            w.writeheader()
            w.writerows(rows)
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif suffix == ".parquet":
        import datasets

        datasets.Dataset.from_list(rows).to_parquet(str(path))
    else:
        raise AssertionError(suffix)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_every_file_format_reads_the_same_examples(tmp_path: Path, suffix: str) -> None:
    rows = _rows(40)
    spec = describe_task(
        f"fmt{suffix[1:]}", DataFiles(train=str(_write(tmp_path / f"train{suffix}", rows)), label_column="category")
    )
    assert spec.labels == tuple(sorted(LABELS)) and spec.metrics == ("accuracy", "macro_f1")
    train, dev = read_user_split(spec, "train"), read_user_split(spec, "dev")
    assert len(train) + len(dev) == 40
    got = {(e.text_a, e.label) for e in train + dev}
    assert got == {(r["text"], r["category"]) for r in rows}


def test_a_datasets_folder_with_its_own_splits(tmp_path: Path) -> None:
    import datasets

    d = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(_rows(30)),
            "validation": datasets.Dataset.from_list(_rows(8, seed=1)),
            "test": datasets.Dataset.from_list(_rows(6, seed=2)),
        }
    )
    d.save_to_disk(str(tmp_path / "ds"))
    spec = describe_task("dsdir", DataFiles(train=str(tmp_path / "ds"), label_column="category"))
    assert [len(read_user_split(spec, s)) for s in ("train", "dev", "test")] == [30, 8, 6]


def test_holdout_is_seeded_stratified_and_disjoint(tmp_path: Path) -> None:
    path = str(_write(tmp_path / "train.csv", _rows(100)))
    a = describe_task("ho", DataFiles(train=path, label_column="category"))
    train, dev = read_user_split(a, "train"), read_user_split(a, "dev")
    assert {e.guid for e in train}.isdisjoint({e.guid for e in dev}) and len(dev) == 12  # 0.1 * 25 = 2.5 -> 3 per class
    assert sorted({e.label for e in dev}) == sorted(LABELS)  # every class in the hold-out
    assert [e.guid for e in read_user_split(a, "dev")] == [e.guid for e in dev]  # deterministic
    b = describe_task("ho", DataFiles(train=path, label_column="category", holdout_seed=7))
    assert [e.guid for e in read_user_split(b, "dev")] != [e.guid for e in dev]


def test_integer_labels_regression_and_pairs(tmp_path: Path) -> None:
    rows = [{"text": r["text"], "category": i % 3} for i, r in enumerate(_rows(30))]
    spec = describe_task("ints", DataFiles(train=str(_write(tmp_path / "i.csv", rows)), label_column="category"))
    assert spec.labels == ("0", "1", "2")
    reg = [{"a": r["text"], "b": r["text"][::-1], "score": i / 7} for i, r in enumerate(_rows(20))]
    files = DataFiles(
        train=str(_write(tmp_path / "r.jsonl", reg)),
        text_column="a",
        text_pair_column="b",
        label_column="score",
        kind="regression",
    )
    spec = describe_task("reg", files)
    assert spec.kind == "regression" and spec.main_metric == "spearman" and spec.labels is None
    ex = read_user_split(spec, "train")[0]
    assert isinstance(ex.label, float) and ex.text_b is not None


def test_binary_tasks_report_mcc_and_macro_f1_is_right() -> None:
    assert macro_f1([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx((2 / 3 + 0.8) / 2)
    assert macro_f1([0, 1, 2], [0, 1, 2]) == 1.0


def test_hf_layout_qa_and_squad_json(tmp_path: Path) -> None:
    ctx = "paris is the capital city of france"
    rows = [
        {
            "id": f"q{i}",
            "question": "what is the capital of france",
            "context": ctx,
            "answers": {"text": ["paris"], "answer_start": [0]},
        }
        for i in range(20)
    ]
    spec = describe_task(
        "qa",
        DataFiles(train=str(_write(tmp_path / "qa.jsonl", rows)), text_column="question", kind="qa"),
        max_seq_length=64,
    )
    assert spec.main_metric == "f1"
    train, dev = read_user_qa(spec, "train"), read_user_qa(spec, "dev")
    assert len(train) + len(dev) == 20 and dev and train[0].answers == (("paris", 0),)
    bad = [dict(rows[0], answers={"text": ["france"], "answer_start": [3]})]
    files = DataFiles(train=str(_write(tmp_path / "b.jsonl", bad * 5)), text_column="question", kind="qa")
    with pytest.raises(DataError, match="row 1: answer 'france' is not at answer_start 3"):  # found up front
        describe_task("qabad", files)


def _bad(tmp_path: Path, case: str) -> DataFiles:
    rows = _rows(20)
    if case == "missing column":
        return DataFiles(train=str(_write(tmp_path / "t.csv", rows)), label_column="intent")
    if case == "empty label":
        rows[3]["category"] = ""
        return DataFiles(train=str(_write(tmp_path / "t.csv", rows)), label_column="category")
    if case == "nan label":
        rows[3]["category"] = None
        return DataFiles(train=str(_write(tmp_path / "t.jsonl", rows)), label_column="category")
    if case == "mixed types":
        for r in rows[:5]:
            r["category"] = 3
        return DataFiles(train=str(_write(tmp_path / "t.jsonl", rows)), label_column="category")
    if case == "regression not numeric":
        return DataFiles(train=str(_write(tmp_path / "t.csv", rows)), label_column="category", kind="regression")
    if case == "unknown format":
        (tmp_path / "t.xlsx").write_text("x")
        return DataFiles(train=str(tmp_path / "t.xlsx"), label_column="category")
    if case == "empty file":
        (tmp_path / "t.csv").write_text("")
        return DataFiles(train=str(tmp_path / "t.csv"), label_column="category")
    if case == "missing file":
        return DataFiles(train=str(tmp_path / "nope.csv"), label_column="category")
    raise AssertionError(case)


BAD = {
    "missing column": r"t.csv: no column\(s\) \['intent'\]; the file has columns \['text', 'category'\]",
    "empty label": r"t.csv: row 4: empty label in column 'category'",
    "nan label": r"row 4: empty label",
    "mixed types": r"mixes class names and numbers",
    "regression not numeric": r"expected a number \(regression\)",
    "unknown format": r"unknown data format '.xlsx'",
    "empty file": r"t.csv: empty file",
    "missing file": r"nope.csv: data file not found",
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_data_is_a_one_line_error(tmp_path: Path, case: str) -> None:
    with pytest.raises(SlimformerError, match=BAD[case]) as err:
        describe_task("bad", _bad(tmp_path, case))
    assert "\n" not in str(err.value)


def test_an_eval_label_never_seen_in_train_is_refused(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.csv", _rows(20))
    dev = _write(tmp_path / "dev.csv", _rows(4, labels=["lost_card"]))
    spec = describe_task("unseen", DataFiles(train=str(train), eval=str(dev), label_column="category"))
    with pytest.raises(DataError, match="'lost_card' never occurs in the training data"):
        read_user_split(spec, "dev")
    with pytest.raises(ConfigError, match="no test file"):
        read_user_split(spec, "test")


def test_presets_keep_their_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a preset"):
        describe_task("sst2", DataFiles(train=str(_write(tmp_path / "t.csv", _rows(8))), label_column="category"))
    assert get_task("sst2").files is None


# ---------------------------------------------------------------- the user's model as the teacher


def _hf_teacher(tmp_path: Path, tokenizer, labels: list[str] | None = None, head: str = "classification") -> Path:
    """A plain Hugging Face folder: config.json (id2label), model.safetensors, tokenizer; no slimformer.json."""
    labels = sorted(LABELS) if labels is None else labels
    model = make_tiny_model(head, num_labels=len(labels), num_hidden_layers=3)
    if head == "classification":
        model.hf.config.id2label = dict(enumerate(labels))
        model.hf.config.label2id = {n: i for i, n in enumerate(labels)}
    d = tmp_path / "my-teacher"
    model.hf.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def _user_recipe(tmp_path: Path, teacher: Path, stages: list, n: int = 60) -> dict:
    train = _write(tmp_path / "train.csv", _rows(n))
    test = _write(tmp_path / "test.csv", _rows(12, seed=3))
    files = {"train": str(train), "test": str(test), "label_column": "category"}
    return {
        "name": "user",
        "task": {"name": "intents", "files": files, "max_seq_length": 32},
        "model": str(teacher),
        "stages": stages,
    }


def test_a_plain_hf_folder_becomes_the_teacher(tmp_path: Path, tiny_tokenizer) -> None:
    from slimformer.checkpoint import load_model
    from slimformer.recipe import parse_recipe, run_recipe

    teacher = _hf_teacher(tmp_path, tiny_tokenizer)
    recipe = parse_recipe(_user_recipe(tmp_path, teacher, [{"evaluate": {}}]))
    assert [n for n, _ in recipe.stages] == ["teacher", "evaluate"]  # the folder is taken in first
    ctx = run_recipe(recipe, run_dir=tmp_path / "run", log=lambda s: None)
    out = ctx.output_of("teacher")
    assert out["teacher_source"] == "hf-folder" and set(out["metrics"]) >= {"accuracy", "macro_f1", "main"}
    loaded = load_model(out["model_dir"])
    assert loaded.meta.teacher_source == "hf-folder" and loaded.meta.labels == sorted(LABELS)
    assert loaded.meta.task_spec["files"]["label_column"] == "category"
    # evaluate agrees with the teacher stage's own score on the same split
    assert ctx.output_of("evaluate")["metrics"] == pytest.approx(out["metrics"])


@pytest.mark.parametrize(
    ("labels", "head", "match"),
    [
        (["a", "b"], "classification", r"the teacher.s labels \(id2label, 2 names\) miss data label\(s\)"),
        (["x", "y", "z", "w"], "classification", r"id2label does not match the labels of task intents"),
        (None, "qa", r"has a qa head; task intents \(classification\) needs a classification head"),
    ],
)
def test_a_teacher_that_does_not_fit_the_data_is_refused(tmp_path, tiny_tokenizer, labels, head, match) -> None:
    from slimformer.recipe import parse_recipe, run_recipe

    teacher = _hf_teacher(tmp_path, tiny_tokenizer, labels=labels, head=head)
    raw = _user_recipe(tmp_path, teacher, [{"teacher": {}}])
    if labels is not None and labels[0] == "x":
        raw["task"]["labels"] = sorted(LABELS)  # the data's labels, not the model's
    with pytest.raises(SlimformerError, match=match) as err:
        run_recipe(parse_recipe(raw), run_dir=tmp_path / "run", log=lambda s: None)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run" / "teacher").exists()


def test_one_command_writes_its_recipe_and_runs(tmp_path: Path, tiny_tokenizer, monkeypatch) -> None:
    from slimformer.cli import main

    teacher = _hf_teacher(tmp_path, tiny_tokenizer)
    (tmp_path / "data").mkdir()
    train = _write(tmp_path / "data" / "train.csv", _rows(1200))
    test = _write(tmp_path / "data" / "test.csv", _rows(40, seed=5))
    run = tmp_path / "run"
    fast = [
        "stages.1.distill.epochs=1",
        "stages.1.distill.max_steps=2",
        "stages.2.search.population=4",
        "stages.2.search.mutation_size=2",
        "stages.2.search.crossover_size=2",
        "stages.2.search.iterations=1",
        "stages.2.search.latency_iters=2",
        "stages.2.search.latency_warmup=0",
        "stages.2.search.progress=false",
        "stages.4.length_benchmark.iters=2",
        "stages.4.length_benchmark.iters_bs32=1",
        "stages.4.length_benchmark.rounds=1",
        "stages.4.length_benchmark.warmup=0",
        "stages.4.length_benchmark.min_time_s=0",
    ]
    code = main(
        [
            "compress",
            "--model",
            str(teacher),
            "--train",
            str(train),
            "--test",
            str(test),
            "--label-column",
            "category",
            "--run-dir",
            str(run),
            "--max-loss",
            "100",
            *fast,
        ]
    )
    assert code == 0
    recipe = (run / "half-depth" / "recipe.yaml").read_text()
    assert "teacher: {}" in recipe and "loss_reference: teacher" in recipe and "student_layers:" in recipe
    assert "search_split: eval" in recipe  # a test file to report on: the pick is made on the eval split
    assert json.loads((run / "variants.json").read_text())["chosen"] == "half-depth"
    state = json.loads((run / "half-depth" / "state.json").read_text())
    assert [s["name"] for s in state["stages"]] == ["teacher", "distill", "search", "export", "length_benchmark"]
    export = Path(state["stages"][3]["outputs"]["export_dir"])
    config = json.loads((export / "config.json").read_text())
    assert config["id2label"] == {str(i): n for i, n in enumerate(sorted(LABELS))}


def test_variants_fall_back_in_order_and_never_claim_an_unmet_loss(tmp_path, tiny_tokenizer, monkeypatch) -> None:
    from slimformer import api

    teacher = _hf_teacher(tmp_path, tiny_tokenizer)
    files = DataFiles(train=str(_write(tmp_path / "train.csv", _rows(1200))), label_column="category")
    ran: list[str] = []

    def fake(recipe, *, run_dir, **_):
        ran.append(Path(run_dir).name)
        if Path(run_dir).name != "teacher-depth":
            raise ConfigError("no point reaches metric 0.9 (reference 0.91 - max loss 0.01); the best available is 0.8")
        return api.RunContext(run_dir=Path(run_dir), recipe=None, history=[("search", {"selected": {"metric": 0.91}})])

    monkeypatch.setattr(api, "compress", fake)
    ctx = api.compress_user(model=str(teacher), files=files, max_loss=1.0, run_dir=tmp_path / "run", log=lambda s: None)
    assert ran == ["half-depth", "two-thirds-depth", "teacher-depth"] and ctx.run_dir.name == "teacher-depth"
    record = json.loads((tmp_path / "run" / "variants.json").read_text())
    assert [t["met_max_loss"] for t in record["tried"]] == [False, False, True] and record["chosen"] == "teacher-depth"
    assert "distill" not in (tmp_path / "run" / "teacher-depth" / "recipe.yaml").read_text()

    def never(recipe, *, run_dir, **_):
        raise ConfigError("no point reaches metric 0.9 (reference 0.91 - max loss 0.01); the best available is 0.8")

    monkeypatch.setattr(api, "compress", never)
    with pytest.raises(ConfigError, match="no variant met --max-loss 1.0"):
        api.compress_user(model=str(teacher), files=files, run_dir=tmp_path / "run2", log=lambda s: None)


def test_recipe_new_writes_without_running(tmp_path: Path, tiny_tokenizer) -> None:
    from slimformer.cli import main

    teacher = _hf_teacher(tmp_path, tiny_tokenizer)
    train = _write(tmp_path / "train.csv", _rows(1200))
    out = tmp_path / "r.yaml"
    assert (
        main(
            [
                "recipe",
                "new",
                "--model",
                str(teacher),
                "--train",
                str(train),
                "--label-column",
                "category",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert out.is_file() and not (tmp_path / "runs").exists()
    assert (
        main(
            [
                "recipe",
                "new",
                "--model",
                str(teacher),
                "--train",
                str(train),
                "--label-column",
                "category",
                "--out",
                str(out),
            ]
        )
        == 2
    )  # never overwrites


# ---------------------------------------------------------------- serving


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_tokenizer):
    """A tiny user-task teacher taken in, exported (fp32 + int8) and its dev set."""
    from slimformer.recipe import parse_recipe, run_recipe

    tmp = tmp_path_factory.mktemp("served")
    teacher = _hf_teacher(tmp, tiny_tokenizer)
    raw = _user_recipe(tmp, teacher, [{"teacher": {}}, {"export": {"int8": "dynamic"}}])
    ctx = run_recipe(parse_recipe(raw), run_dir=tmp / "run", log=lambda s: None)
    return ctx


@pytest.mark.parametrize("runtime", ["int8", "fp32", "pytorch"])
def test_pipeline_outputs_equal_evaluation_outputs(served, runtime: str) -> None:
    import slimformer
    from slimformer.checkpoint import load_model
    from slimformer.evaluate import predict, torch_predictor
    from slimformer.export import OrtModel
    from slimformer.tasks.data import load_eval_set

    export_dir = Path(served.output_of("export")["export_dir"])
    model_dir = served.output_of("teacher")["model_dir"]
    folder = model_dir if runtime == "pytorch" else export_dir
    pipe = slimformer.pipeline(folder, runtime=runtime)
    loaded = load_model(model_dir)
    dev = load_eval_set("intents", Path("."), loaded.tokenizer, max_seq_length=32)
    texts = [e.text_a for e in dev.examples]
    preds = pipe(texts)
    runner = {
        "pytorch": lambda: torch_predictor(loaded.model),
        "fp32": lambda: OrtModel(export_dir / "model.onnx"),
        "int8": lambda: OrtModel(export_dir / "model.int8.onnx"),
    }[runtime]()
    # a dynamic int8 graph scales activations per batch: the pipeline serves each text alone (batch size 1)
    logits = predict(runner, dev.features, batch_size=1 if runtime == "int8" else 32, progress=False)["logits"]
    assert [p["label"] for p in preds] == [sorted(LABELS)[k] for k in logits.argmax(-1)]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose([p["score"] for p in preds], probs.max(-1), rtol=1e-5)
    assert pipe("the movie")[0]["label"] in LABELS  # a single text works too


def test_predict_command_and_bad_inputs(served, tmp_path: Path) -> None:
    from slimformer.cli import main

    export_dir = served.output_of("export")["export_dir"]
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "the movie was good"}\n"a terrible film"\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["predict", export_dir, "--input", str(src), "--output", str(out)]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 2 and all(x["label"] in LABELS for x in lines)
    src.write_text("{not json\n", encoding="utf-8")
    assert main(["predict", export_dir, "--input", str(src), "--output", str(out)]) == 2
    import slimformer

    with pytest.raises(ConfigError, match="not a length-adaptive graph"):
        slimformer.pipeline(export_dir)(["x"], config=[1.0, 1.0, 1.0])


def test_searching_on_the_eval_split_needs_a_test_split_to_report_on(tmp_path: Path) -> None:
    from slimformer.stages.search import SearchStageConfig, run_search

    cfg = SearchStageConfig(task="sst2", data=str(tmp_path), search_split="eval")
    with pytest.raises(ConfigError, match="search_split: eval needs a task with a test file"):
        run_search(cfg, _model_for_search(tmp_path), tmp_path / "out")


def _model_for_search(tmp_path: Path) -> Path:
    from transformers import BertTokenizerFast

    from conftest import tiny_vocab
    from slimformer.checkpoint import save_model
    from slimformer.models import ModelMeta

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(tiny_vocab()) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    model = make_tiny_model("classification", num_labels=2, num_hidden_layers=2)
    meta = ModelMeta(head="classification", task="sst2", applied=[{"stage": "finetune", "data": str(tmp_path)}])
    return save_model(model, tok, tmp_path / "m", meta)
