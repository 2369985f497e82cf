"""The bad-input table: hostile recipes, model folders, ONNX files, data, budgets and paths, run through the CLI.

Shared by ``tests/test_bad_input.py`` (one test per case) and ``benchmarks/reliability.py`` (counts). Every case
builds its files in a fresh folder (a copy of tiny assets made once: a random BERT classifier fine-tuned on
nothing, its ONNX export, a QA model, SST-2 / SQuAD files), runs ``slimformer.cli.main(argv)`` in-process and is
*clean* when:

- the exit status is 2;
- stdout/stderr (Python level and file descriptors 1/2, logging handlers included) hold exactly one stderr line,
  and it starts with ``error:`` (and names what the case expects: ``needles``);
- no ``Traceback`` appears anywhere in the output;
- every file that existed under the case folder before the command has the same bytes after it, and no
  temporary (``.slimtmp-``) file is left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SST2_TRAIN = ["the movie was good\t1", "a terrible film\t0", "very boring\t0", "great fun\t1"] * 4
SST2_DEV = SST2_TRAIN[:4]


# ----------------------------------------------------------------------------------------------------------------
# assets


def build_assets(base: Path) -> Path:
    """Tiny assets every case copies: ``model/`` (+ ``model/onnx``), ``qa-model/``, ``SST-2/``, ``squad/``."""
    from transformers import BertTokenizerFast

    from conftest import make_tiny_model, tiny_vocab
    from slimformer.checkpoint import save_model
    from slimformer.export import export_onnx
    from slimformer.models import ModelMeta

    base.mkdir(parents=True, exist_ok=True)
    vocab = base / "vocab.txt"
    vocab.write_text("\n".join(tiny_vocab()) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    vocab.unlink()
    data = base / "SST-2"
    data.mkdir()
    (data / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(SST2_TRAIN) + "\n", encoding="utf-8")
    (data / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(SST2_DEV) + "\n", encoding="utf-8")
    (data / "test.tsv").write_text("index\tsentence\n0\tgood fun\n1\ta boring film\n", encoding="utf-8")
    record = {"stage": "finetune", "data": "SST-2", "seed": 0}
    meta = ModelMeta(head="classification", task="sst2", applied=[record], max_seq_length=32, labels=["0", "1"])
    model = make_tiny_model("classification", num_labels=2)
    save_model(model, tok, base / "model", meta)
    onnx_dir = base / "model" / "onnx"
    onnx_dir.mkdir()
    export_onnx(model, onnx_dir / "model.onnx")
    for name in ("tokenizer.json", "tokenizer_config.json", "slimformer.json"):
        shutil.copy(base / "model" / name, onnx_dir / name)
    squad = base / "squad"
    squad.mkdir()
    ctx = "paris is the capital city of france"
    qa = {"data": [{"title": "t", "paragraphs": [{"context": ctx, "qas": [{"id": "q1", "question": "what is paris",
          "answers": [{"text": "the capital city", "answer_start": 9}]}]}]}], "version": "1.1"}  # fmt: skip
    (squad / "dev-v1.1.json").write_text(json.dumps(qa), encoding="utf-8")
    qa_meta = ModelMeta(head="qa", task="squad", applied=[{"stage": "finetune", "data": "squad"}], max_seq_length=64)
    save_model(make_tiny_model("qa"), tok, base / "qa-model", qa_meta)
    return base


def copy_assets(base: Path, root: Path) -> None:
    """Copy the assets into ``root`` (a fresh case folder)."""
    for entry in base.iterdir():
        if entry.is_dir():
            shutil.copytree(entry, root / entry.name)
        else:
            shutil.copy2(entry, root / entry.name)


# ----------------------------------------------------------------------------------------------------------------
# helpers the cases use to build their files


def _recipe(root: Path, body: str | dict, name: str = "r.yaml") -> str:
    p = root / name
    p.write_text(body if isinstance(body, str) else yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return str(p)


def _base_recipe(root: Path, stages: list | None = None, **top) -> dict:
    return {"name": "r", "task": "sst2", "data": str(root / "SST-2"), **top, "stages": stages or [{"evaluate": {}}]}


def _earlier_run(root: Path) -> Path:
    """A run folder with records of an earlier run (they must survive every refused command)."""
    run = root / "run"
    run.mkdir()
    (run / "recipe.resolved.yaml").write_text("name: r\n# an earlier run\n", encoding="utf-8")
    (run / "state.json").write_text(json.dumps({"recipe": "r", "stages": []}), encoding="utf-8")
    return run


def _compress(root: Path, body: str | dict, *extra: str) -> list[str]:
    run = _earlier_run(root)
    return ["compress", _recipe(root, body), "--run-dir", str(run), *extra]


def _edit_json(path: Path, **changes) -> None:
    d = json.loads(path.read_text(encoding="utf-8"))
    d.update(changes)
    path.write_text(json.dumps(d), encoding="utf-8")


def _evaluate(root: Path, model: str = "model", *extra: str) -> list[str]:
    return ["evaluate", str(root / model), "--data", str(root / "SST-2"), *extra]


def _finetune(root: Path, *, model: Path | None = None, data: Path | None = None, out: Path | None = None) -> list[str]:
    return [
        "finetune",
        "--model",
        str(model or root / "model"),
        "--task",
        "sst2",
        "--data",
        str(data or root / "SST-2"),
        "--out",
        str(out or root / "out"),
        "--max-steps",
        "1",
        "--batch-size",
        "4",
        "--save-steps",
        "100",
    ]


def _run_with_done_stages(root: Path, stages: list[dict], done: dict[int, dict], *extra: str) -> list[str]:
    """``compress`` of a recipe whose run folder records stages ``done`` (index -> outputs) as finished."""
    from slimformer.recipe import _config_hash, parse_recipe

    raw = _base_recipe(root, stages)
    recipe = parse_recipe(json.loads(json.dumps(raw)))
    run = root / "run"
    run.mkdir()
    records = []
    for i in sorted(done):
        name, cfg = recipe.stages[i]
        records.append({"name": name, "hash": _config_hash(name, cfg), "status": "done", "outputs": done[i]})
    (run / "state.json").write_text(json.dumps({"recipe": "r", "stages": records}, indent=2), encoding="utf-8")
    (run / "recipe.resolved.yaml").write_text(yaml.safe_dump(recipe.to_yaml_dict(), sort_keys=False), "utf-8")
    return ["compress", _recipe(root, raw), "--run-dir", str(run), *extra]


def _search_run(root: Path, *extra: str) -> list[str]:
    stages = [{"finetune": {"max_steps": 1}}, {"search": {"iterations": 1, "population": 2, "search_examples": 4}}]
    return _run_with_done_stages(root, stages, {0: {"model_dir": str(root / "model")}}, *extra)


def _bomb() -> str:
    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "name: r\ntask: sst2\ndata: x\n" + "\n".join(lines) + "\nstages:\n  - evaluate: {}\n"


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _benchmark(root: Path, garbage: str) -> list[str]:
    _write(root / "model" / "onnx" / garbage, b"\x08\x07garbage")
    return ["benchmark", str(root / "model"), "--data", str(root / "SST-2"), "--iters", "1", "--warmup", "0"]


def _quantize_truncated(root: Path) -> list[str]:
    """A run whose export is recorded as done, but whose ``model.onnx`` was truncated since: the quantize stage."""
    onnx = root / "model" / "onnx" / "model.onnx"
    _truncate(onnx)
    stages = [{"finetune": {"max_steps": 1}}, {"export": {}}, {"quantize": {}}]
    done = {0: {"model_dir": str(root / "model")}, 1: {"export_dir": str(onnx.parent), "onnx_fp32": str(onnx)}}
    return _run_with_done_stages(root, stages, done)


def _squad(root: Path, text: str | None) -> list[str]:
    file = root / "squad" / "dev-v1.1.json"
    if text is None:
        file.unlink()
    else:
        _write(file, text)
    return ["evaluate", str(root / "qa-model"), "--data", str(root / "squad")]


def _finetune_auto_map(root: Path) -> list[str]:
    _edit_json(root / "model" / "config.json", auto_map={"AutoModel": "x.Y"})
    return _finetune(root)


def _export_shape_mismatch(root: Path) -> list[str]:
    _edit_json(root / "model" / "config.json", hidden_size=64)
    return ["export", str(root / "model")]


def _finetune_foreign_out(root: Path) -> list[str]:
    _write(root / "thesis" / "chapter1.tex", "\\section{Intro}\n")
    return _finetune(root, out=root / "thesis")


def _export_read_only(root: Path) -> list[str]:
    _read_only(root / "ro")
    return ["export", str(root / "model"), "--out", str(root / "ro" / "onnx")]


def _distill_other_task(root: Path) -> list[str]:
    stages = [{"distill": {"teacher": str(root / "model"), "student_layers": [0]}}]
    return _compress(root, _base_recipe(root, stages, task="stsb"))


def _compress_bytes(root: Path) -> list[str]:
    argv = _compress(root, "")
    (root / "r.yaml").write_bytes(b"name: r\ntask: \xff\xfe sst2\n")
    return argv


def _corrupt_state(root: Path) -> list[str]:
    (root / "run" / "state.json").write_text('{"recipe": "r", "stages": [', encoding="utf-8")
    return ["compress", str(root / "r.yaml"), "--run-dir", str(root / "run")]


def _read_only(folder: Path) -> None:
    folder.mkdir()
    folder.chmod(0o555)


# ----------------------------------------------------------------------------------------------------------------
# the table


def _user(root: Path, train: str | None, *extra: str, name: str = "train.csv") -> list[str]:
    """``compress --model <a plain fine-tuned HF folder> --train <file> ...`` (the user's model and data)."""
    hf = root / "hf-teacher"
    if not hf.exists():
        shutil.copytree(
            root / "model", hf, ignore=shutil.ignore_patterns("slimformer.json", "onnx", "eval_results.json")
        )
    args = ["compress", "--model", str(hf), "--label-column", "label", "--run-dir", str(root / "user-run")]
    if train is not None:
        _write(root / name, train)
        args += ["--train", str(root / name)]
    return [*args, *extra]


def _plain(root: Path, folder: str) -> Path:
    """A copy of a tiny model folder without slimformer.json: a plain Hugging Face folder."""
    out = root / f"plain-{folder}"
    shutil.copytree(root / folder, out, ignore=shutil.ignore_patterns("slimformer.json", "onnx", "eval_results.json"))
    return out


def _rows_csv(n: int, labels: tuple[str, ...] = ("0", "1"), empty_at: int | None = None) -> str:
    lines = ["text,label"]
    for i in range(n):
        label = "" if i == empty_at else labels[i % len(labels)]
        lines.append(f"the movie was good {i},{label}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Case:
    """One hostile input: ``build(root) -> argv`` writes its files under ``root`` and returns the CLI arguments.

    ``needles``: texts the ``error:`` line must contain. ``skip_as_root``: the case relies on file permissions,
    which do not bind the superuser.
    """

    id: str
    group: str
    build: Callable[[Path], list[str]]
    needles: tuple[str, ...] = ()
    skip_as_root: bool = False


def _c(id: str, group: str, build: Callable[[Path], list[str]], *needles: str, **kw) -> Case:
    return Case(id, group, build, tuple(needles), **kw)


def _model_case(id: str, mutate: Callable[[Path], None], *needles: str) -> Case:
    def build(root: Path) -> list[str]:
        mutate(root / "model")
        return _evaluate(root)

    return _c(id, "model", build, *needles)


def _onnx_case(id: str, mutate: Callable[[Path], None], *needles: str, extra: tuple[str, ...] = ()) -> Case:
    def build(root: Path) -> list[str]:
        mutate(root / "model" / "onnx" / "model.onnx")
        return ["evaluate", str(root / "model" / "onnx" / "model.onnx"), "--data", str(root / "SST-2"), *extra]

    return _c(id, "onnx", build, *needles)


def _data_case(id: str, mutate: Callable[[Path], None], *needles: str, finetune: bool = True) -> Case:
    def build(root: Path) -> list[str]:
        mutate(root / "SST-2")
        return _finetune(root) if finetune else _evaluate(root)

    return _c(id, "data", build, *needles)


def _rm(name: str) -> Callable[[Path], None]:
    return lambda d: (d / name).unlink()


def _set_config(**changes) -> Callable[[Path], None]:
    return lambda d: _edit_json(d / "config.json", **changes)


def _pickle_only(d: Path) -> None:
    (d / "model.safetensors").unlink()
    _write(d / "pytorch_model.bin", b"\x80\x04\x95not really a pickle")


def _empty_model(d: Path) -> None:
    shutil.rmtree(d)
    d.mkdir()


def _onnx_dir(p: Path) -> None:
    p.unlink()
    p.mkdir()


CASES: list[Case] = [
    # -- recipes -------------------------------------------------------------------------------------------------
    _c("recipe-missing-file", "recipe", lambda r: ["compress", str(r / "nope.yaml")], "nope.yaml", "not found"),
    _c("recipe-is-a-folder", "recipe", lambda r: ["compress", str(r / "SST-2")], "SST-2"),
    _c("recipe-not-yaml", "recipe", lambda r: _compress(r, "name: r\nstages: [\n  - : :\n"), "r.yaml", "YAML"),
    _c("recipe-not-utf8", "recipe", lambda r: _compress_bytes(r), "UTF-8"),
    _c("recipe-empty-file", "recipe", lambda r: _compress(r, ""), "r.yaml", "mapping"),
    _c("recipe-a-list", "recipe", lambda r: _compress(r, "- finetune: {}\n"), "r.yaml", "mapping"),
    _c("recipe-a-scalar", "recipe", lambda r: _compress(r, "just some words\n"), "r.yaml", "mapping"),
    _c("recipe-no-stages", "recipe", lambda r: _compress(r, "name: r\ntask: sst2\ndata: x\n"), "stages"),
    _c("recipe-empty-stages", "recipe", lambda r: _compress(r, {**_base_recipe(r), "stages": []}), "stages"),
    _c("recipe-stages-a-mapping", "recipe", lambda r: _compress(r, {**_base_recipe(r), "stages": {"a": 1}}), "stages"),
    _c(
        "recipe-stage-two-keys",
        "recipe",
        lambda r: _compress(r, _base_recipe(r, [{"evaluate": {}, "export": {}}])),
        "stages[0]",
        "single-key",
    ),
    _c("recipe-unknown-stage", "recipe", lambda r: _compress(r, _base_recipe(r, [{"distil": {}}])), "'distil'"),
    # stages that cannot work are refused by the plan check before the first stage runs (recipe.validate_plan)
    _c(
        "recipe-stage3-unlabelled-split",
        "recipe",
        lambda r: _compress(r, _base_recipe(r, [{"finetune": {}}, {"export": {}}, {"evaluate": {"split": "test"}}])),
        "stages[2].evaluate",
        "no labels",
    ),
    _c(
        "recipe-quantize-a-quantized-model",
        "recipe",
        lambda r: _compress(
            r,
            _base_recipe(
                r,
                [
                    {"finetune": {}},
                    {"qat": {"weight_quantizer": "uniform", "weight_bits": 8}},
                    {"export": {}},
                    {"quantize": {}},
                ],
            ),
        ),
        "stages[3].quantize",
        "onnx_fp32",
    ),
    _c(
        "recipe-report-without-search",
        "recipe",
        lambda r: _compress(r, _base_recipe(r, [{"finetune": {}}, {"length_benchmark": {}}])),
        "stages[1].length_benchmark",
        "front_json",
    ),
    _c(
        "recipe-unknown-key",
        "recipe",
        lambda r: _compress(r, _base_recipe(r, [{"finetune": {"epoch": 1}}])),
        "stages[0].finetune.epoch",
        "unknown key",
    ),
    _c("recipe-unknown-top-key", "recipe", lambda r: _compress(r, _base_recipe(r, colour="red")), "colour"),
    _c("recipe-missing-task", "recipe", lambda r: _compress(r, "name: r\ndata: x\nstages: [evaluate: {}]\n"), "task"),
    _c(
        "recipe-bad-value-type",
        "recipe",
        lambda r: _compress(r, _base_recipe(r, [{"finetune": {"epochs": "many"}}])),
        "finetune.epochs",
        "'many'",
    ),
    _c(
        "recipe-negative-learning-rate",
        "recipe",
        lambda r: _compress(r, _base_recipe(r, [{"finetune": {"learning_rate": -1}}])),
        "learning_rate",
    ),
    _c("recipe-bad-name", "recipe", lambda r: _compress(r, _base_recipe(r, name="a b/../c")), "name"),
    _c("recipe-seed-a-list", "recipe", lambda r: _compress(r, _base_recipe(r, seed=[1, 2])), "seed"),
    _c(
        "recipe-options-a-list",
        "recipe",
        lambda r: _compress(r, _base_recipe(r, [{"finetune": [1, 2]}])),
        "stages[0].finetune",
        "mapping",
    ),
    _c(
        "recipe-options-a-string",
        "recipe",
        lambda r: _compress(r, _base_recipe(r, [{"finetune": "epochs=2"}])),
        "stages[0].finetune",
        "mapping",
    ),
    _c(
        "recipe-options-a-number",
        "recipe",
        lambda r: _compress(r, _base_recipe(r, [{"finetune": 3}])),
        "stages[0].finetune",
        "mapping",
    ),
    _c(
        "recipe-option-key-not-a-string",
        "recipe",
        lambda r: _compress(r, "name: r\ntask: sst2\ndata: x\nstages:\n  - finetune: {1: 2}\n"),
        "stages[0].finetune",
        "key 1",
    ),
    _c(
        "recipe-top-key-not-a-string",
        "recipe",
        lambda r: _compress(r, "name: r\ntask: sst2\ndata: x\nnull: 2\nstages: [evaluate: {}]\n"),
        "key None",
    ),
    _c("recipe-alias-bomb", "recipe", lambda r: _compress(r, _bomb()), "alias"),
    _c(
        "recipe-deep-nesting",
        "recipe",
        lambda r: _compress(r, "name: r\nx: " + "[" * 5000 + "]" * 5000 + "\n"),
        "nesting",
    ),
    _c(
        "recipe-duplicate-key",
        "recipe",
        lambda r: _compress(r, "name: r\ntask: sst2\ntask: cola\ndata: x\nstages: [evaluate: {}]\n"),
        "duplicate key 'task'",
    ),
    _c(
        "recipe-python-object-tag",
        "recipe",
        lambda r: _compress(r, "name: !!python/object/apply:os.system ['echo pwned']\n"),
        "python/object",
    ),
    _c(
        "recipe-python-name-tag",
        "recipe",
        lambda r: _compress(r, "name: r\ntask: !!python/name:os.system\ndata: x\nstages: [evaluate: {}]\n"),
        "python/name",
    ),
    _c(
        "recipe-huge-integer",
        "recipe",
        lambda r: _compress(r, "name: r\ntask: sst2\ndata: x\nseed: " + "9" * 5000 + "\nstages: [evaluate: {}]\n"),
        "r.yaml",
    ),
    _c("recipe-too-large", "recipe", lambda r: _compress(r, "name: r\n#" + "x" * 1_100_000 + "\n"), "bytes"),
    _c(
        "recipe-state-json-corrupt",
        "recipe",
        lambda r: _compress(r, _base_recipe(r)) and _corrupt_state(r),
        "state.json",
    ),
    # -- overrides -----------------------------------------------------------------------------------------------
    _c("override-without-equals", "override", lambda r: _compress(r, _base_recipe(r), "seed"), "'seed'", "key=value"),
    _c(
        "override-no-such-stage",
        "override",
        lambda r: _compress(r, _base_recipe(r), "stages.7.finetune.epochs=1"),
        "does not address",
    ),
    _c("override-bad-value", "override", lambda r: _compress(r, _base_recipe(r), "seed=abc"), "seed", "'abc'"),
    _c("override-bad-yaml", "override", lambda r: _compress(r, _base_recipe(r), "seed=[1"), "override", "YAML"),
    _c(
        "override-tag",
        "override",
        lambda r: _compress(r, _base_recipe(r), "name=!!python/object/apply:os.system [id]"),
        "python/object",
    ),
    _c("override-unknown-option", "override", lambda r: _compress(r, _base_recipe(r), "--colour", "red"), "--colour"),
    _c("rerun-from-no-such-stage", "override", lambda r: _compress(r, _base_recipe(r), "--rerun-from", "9"), "'9'"),
    # -- budgets -------------------------------------------------------------------------------------------------
    _c("budget-negative", "budget", lambda r: _compress(r, _base_recipe(r), "--max-loss", "-1"), "budget"),
    _c("budget-zero", "budget", lambda r: _compress(r, _base_recipe(r), "--budget-ms", "0"), "budget"),
    _c("budget-not-a-number", "budget", lambda r: _compress(r, _base_recipe(r), "--budget-ms", "fast"), "'fast'"),
    _c("budget-nan", "budget", lambda r: _compress(r, _base_recipe(r), "--max-flops", "nan"), "budget"),
    _c(
        "budget-two-at-once",
        "budget",
        lambda r: _compress(r, _base_recipe(r), "--budget-ms", "1", "--max-flops", "1"),
        "not allowed",
    ),
    _c("budget-without-search", "budget", lambda r: _compress(r, _base_recipe(r), "--max-loss", "1"), "search"),
    _c("budget-impossible-flops", "budget", lambda r: _search_run(r, "--max-flops", "1"), "budget 1 FLOPs"),
    _c("budget-impossible-ms", "budget", lambda r: _search_run(r, "--budget-ms", "0.0001"), "budget 0.0001 ms"),
    # -- model folders -------------------------------------------------------------------------------------------
    _c("model-missing", "model", lambda r: _evaluate(r, "no-such-model"), "no-such-model"),
    _model_case("model-empty-folder", _empty_model, "config.json"),
    _model_case("model-no-config", _rm("config.json"), "config.json"),
    _model_case("model-pickle-only", _pickle_only, "pickle", "safetensors"),
    _model_case("model-no-weights", _rm("model.safetensors"), "weights"),
    _model_case("model-truncated-safetensors", lambda d: _truncate(d / "model.safetensors"), "model.safetensors"),
    _model_case("model-garbage-safetensors", lambda d: _write(d / "model.safetensors", b"\x00" * 64), "safetensors"),
    _model_case("model-config-not-json", lambda d: _write(d / "config.json", "{not json"), "config.json", "JSON"),
    _model_case("model-config-a-list", lambda d: _write(d / "config.json", "[1, 2]"), "config.json", "object"),
    _model_case("model-unknown-model-type", _set_config(model_type="gpt9"), "'gpt9'", "not supported"),
    _model_case(
        "model-auto-map-config",
        _set_config(auto_map={"AutoModelForSequenceClassification": "modeling_evil.Evil"}),
        "config.json",
        "auto_map",
    ),
    _model_case(
        "model-auto-map-tokenizer",
        lambda d: _edit_json(d / "tokenizer_config.json", auto_map={"AutoTokenizer": ["tok_evil.T", None]}),
        "tokenizer_config.json",
        "auto_map",
    ),
    _model_case("model-no-tokenizer-files", _rm("tokenizer.json"), "tokenizer"),
    _model_case("model-shape-mismatch", _set_config(intermediate_size=48), "shape", "config.json"),
    _model_case("model-vocab-mismatch", _set_config(vocab_size=7), "word_embeddings", "config.json"),
    _model_case("model-no-slimformer-json", _rm("slimformer.json"), "slimformer.json"),
    _model_case("model-slimformer-json-garbage", lambda d: _write(d / "slimformer.json", "\x00{"), "slimformer.json"),
    _model_case(
        "model-slimformer-json-unknown-head",
        lambda d: _edit_json(d / "slimformer.json", head="regressor"),
        "'regressor'",
    ),
    _c("model-is-a-file", "model", lambda r: _evaluate(r, "SST-2/train.tsv"), "train.tsv"),
    _c(
        "model-head-vs-regression-task",
        "model",
        lambda r: _evaluate(r, "model", "--task", "stsb"),
        "stsb",
        "2 output",
    ),
    _c("model-head-vs-qa-task", "model", lambda r: _evaluate(r, "model", "--task", "squad"), "squad", "qa head"),
    _c(
        "model-qa-head-vs-classification",
        "model",
        lambda r: _evaluate(r, "qa-model", "--task", "sst2"),
        "qa head",
        "sst2",
    ),
    _c(
        "finetune-model-auto-map",
        "model",
        _finetune_auto_map,
        "auto_map",
    ),
    _c(
        "export-shape-mismatch",
        "model",
        _export_shape_mismatch,
        "shape",
    ),
    _c(
        "distill-teacher-of-another-task",
        "model",
        _distill_other_task,
        "stsb",
    ),
    # -- ONNX files ----------------------------------------------------------------------------------------------
    _onnx_case("onnx-garbage", lambda p: _write(p, os.urandom(2048)), "model.onnx"),
    _onnx_case("onnx-truncated", lambda p: _truncate(p), "model.onnx"),
    _onnx_case("onnx-empty", lambda p: _write(p, b""), "model.onnx"),
    _onnx_case("onnx-text", lambda p: _write(p, "this is not a graph\n"), "model.onnx"),
    _onnx_case("onnx-a-folder", _onnx_dir, "model.onnx", "folder"),
    _onnx_case("onnx-missing", lambda p: p.unlink(), "model.onnx"),
    _onnx_case("onnx-no-tokenizer", lambda p: (p.parent / "tokenizer.json").unlink(), "tokenizer"),
    _onnx_case("onnx-head-vs-task", lambda p: None, "stsb", extra=("--task", "stsb")),
    _c(
        "benchmark-garbage-onnx",
        "onnx",
        lambda r: _benchmark(r, "model.onnx"),
        "model.onnx",
    ),
    _c(
        "benchmark-garbage-int8",
        "onnx",
        lambda r: _benchmark(r, "model.int8.onnx"),
        "model.int8.onnx",
    ),
    _c(
        "quantize-truncated-onnx",
        "onnx",
        _quantize_truncated,
        "model.onnx",
    ),
    # -- data ----------------------------------------------------------------------------------------------------
    _c("data-missing-folder", "data", lambda r: _finetune(r, data=r / "nowhere"), "nowhere"),
    _data_case("data-missing-train-tsv", lambda d: (d / "train.tsv").unlink(), "train.tsv"),
    _data_case("data-missing-dev-tsv", lambda d: (d / "dev.tsv").unlink(), "dev.tsv", finetune=False),
    _data_case("data-extra-column", lambda d: _write(d / "train.tsv", "sentence\tlabel\ngood\t1\tx\n"), "train.tsv:2"),
    _data_case("data-label-outside-set", lambda d: _write(d / "train.tsv", "sentence\tlabel\ngood\t7\n"), "'7'"),
    _data_case("data-row-without-tab", lambda d: _write(d / "train.tsv", "sentence\tlabel\njust text\n"), "train.tsv"),
    _data_case("data-empty-file", lambda d: _write(d / "train.tsv", ""), "train.tsv"),
    _data_case("data-header-only", lambda d: _write(d / "train.tsv", "sentence\tlabel\n"), "train.tsv"),
    _data_case("data-wrong-header", lambda d: _write(d / "train.tsv", "text\ty\ngood\t1\n"), "header"),
    _data_case("data-not-utf8", lambda d: _write(d / "train.tsv", b"sentence\tlabel\n\xff\xfe\t1\n"), "train.tsv:2"),
    _data_case("data-binary-garbage", lambda d: _write(d / "train.tsv", os.urandom(512)), "train.tsv"),
    _c("data-test-split-unlabelled", "data", lambda r: _evaluate(r, "model", "--split", "test"), "no labels"),
    _c("data-unknown-split", "data", lambda r: _evaluate(r, "model", "--split", "holdout"), "holdout"),
    _c("data-unknown-task", "data", lambda r: _evaluate(r, "model", "--task", "sst3"), "sst3"),
    _c(
        "squad-not-json",
        "data",
        lambda r: _squad(r, "{this is not json"),
        "dev-v1.1.json",
    ),
    _c(
        "squad-wrong-structure",
        "data",
        lambda r: _squad(r, '{"data": 5}'),
        "dev-v1.1.json",
    ),
    _c(
        "squad-missing-file",
        "data",
        lambda r: _squad(r, None),
        "dev-v1.1.json",
    ),
    # -- options and paths ---------------------------------------------------------------------------------------
    _c("option-batch-size-zero", "path", lambda r: _evaluate(r, "model", "--batch-size", "0"), "--batch-size"),
    _c("option-unknown-command", "path", lambda r: ["distil", str(r / "model")], "distil"),
    _c("finetune-out-is-a-file", "path", lambda r: _finetune(r, out=r / "SST-2" / "train.tsv"), "train.tsv", "file"),
    _c(
        "finetune-out-foreign-folder",
        "path",
        _finetune_foreign_out,
        "thesis",
        "--overwrite",
    ),
    _c("finetune-out-under-a-file", "path", lambda r: _finetune(r, out=r / "SST-2" / "dev.tsv" / "m"), "dev.tsv"),
    _c(
        "export-out-is-a-file",
        "path",
        lambda r: ["export", str(r / "model"), "--out", str(r / "SST-2" / "dev.tsv")],
        "dev.tsv",
    ),
    _c("export-out-unwritable", "path", lambda r: ["export", str(r / "model"), "--out", "/proc/sf-out"], "/proc"),
    _c(
        "export-out-read-only-folder",
        "path",
        _export_read_only,
        "ro",
        skip_as_root=True,
    ),
    _c(
        "compress-run-dir-is-a-file",
        "path",
        lambda r: ["compress", _recipe(r, _base_recipe(r)), "--run-dir", str(r / "SST-2" / "dev.tsv")],
        "dev.tsv",
    ),
    _c(
        "benchmark-target-not-a-run",
        "path",
        lambda r: ["benchmark", str(r / "SST-2")],
        "SST-2",
    ),
    # -- the user's model and data (compress --model DIR --train FILE) ----------------------------------------------
    _c("user-missing-column", "user", lambda r: _user(r, "text,category\nthe movie,0\n"), "train.csv", "label"),
    _c("user-empty-label", "user", lambda r: _user(r, _rows_csv(40, empty_at=3)), "row 4", "empty label"),
    _c("user-unknown-format", "user", lambda r: _user(r, "x", name="train.xlsx"), "train.xlsx", "format"),
    _c("user-empty-file", "user", lambda r: _user(r, ""), "train.csv", "empty"),
    _c(
        "user-missing-file",
        "user",
        lambda r: ["compress", "--model", str(r / "model"), "--train", str(r / "no.csv")],
        "no.csv",
    ),
    _c(
        "user-regression-not-numeric",
        "user",
        lambda r: _user(r, _rows_csv(40, ("a", "b")), "--kind", "regression"),
        "expected a number",
    ),
    _c("user-teacher-labels-do-not-fit", "user", lambda r: _user(r, _rows_csv(40, ("a", "b", "c"))), "2 labels", "3"),
    _c(
        "user-train-without-model",
        "user",
        lambda r: ["compress", "--train", str(_write(r / "t.csv", _rows_csv(40)))],
        "--model",
    ),
    _c("user-too-few-examples", "user", lambda r: _user(r, _rows_csv(40)), "training examples"),
    _c(
        "user-qa-head-for-classification",
        "user",
        lambda r: [
            "compress",
            "--model",
            str(_plain(r, "qa-model")),
            "--train",
            str(_write(r / "t.csv", _rows_csv(40))),
            "--label-column",
            "label",
        ],
        "head",
    ),
]


# ----------------------------------------------------------------------------------------------------------------
# running a case


@dataclass
class Outcome:
    """What a case did: exit status, captured output, and the files it changed."""

    case: str
    code: int | None
    stderr: str
    stdout: str
    changed: list[str] = field(default_factory=list)  # files that existed before, with other bytes or gone
    debris: list[str] = field(default_factory=list)  # temporary files left behind
    exception: str | None = None  # an exception that escaped main()

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.strip()]

    @property
    def traceback(self) -> bool:
        return self.exception is not None or "Traceback" in self.stderr or "Traceback" in self.stdout

    @property
    def one_line(self) -> bool:
        lines = self.error_lines
        return len(lines) == 1 and lines[0].startswith("error:")

    @property
    def clean(self) -> bool:
        """Exit status 2, one ``error:`` line, no traceback, no file changed, no temporary left."""
        return self.code == 2 and self.one_line and not self.traceback and not self.changed and not self.debris

    def names(self, case: Case) -> bool:
        """Whether the ``error:`` line holds every text ``case.needles`` expects."""
        return self.one_line and all(n in self.error_lines[0] for n in case.needles)


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> hex digest)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            if p.is_symlink() or not p.is_file():
                continue
            try:
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
            except OSError:
                out[str(p.relative_to(root))] = "<unreadable>"
    return out


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    return [
        h
        for lg in loggers
        for h in lg.handlers
        if isinstance(h, logging.StreamHandler)
        and not isinstance(h, logging.FileHandler)
        and not isinstance(getattr(type(h), "stream", None), property)  # logging.lastResort: reads sys.stderr
    ]


@contextlib.contextmanager
def capture_all() -> Iterator[dict[str, str]]:
    """Capture stdout and stderr at every level: ``sys.stdout``/``sys.stderr``, logging stream handlers (which hold
    the stream they were created with) and file descriptors 1 and 2 (native code such as ONNX Runtime)."""
    result: dict[str, str] = {}
    py_out, py_err = io.StringIO(), io.StringIO()
    handlers = [(h, h.stream) for h in _stream_handlers()]
    for f in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            f.flush()
    with tempfile.TemporaryFile() as fd_out, tempfile.TemporaryFile() as fd_err:
        saved = os.dup(1), os.dup(2)
        try:
            os.dup2(fd_out.fileno(), 1)
            os.dup2(fd_err.fileno(), 2)
            for h, _ in handlers:
                h.stream = py_err
            with contextlib.redirect_stdout(py_out), contextlib.redirect_stderr(py_err):
                yield result
        finally:
            for h, stream in handlers:
                h.stream = stream
            for f in (sys.__stdout__, sys.__stderr__):
                with contextlib.suppress(Exception):
                    f.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            fd_out.seek(0)
            fd_err.seek(0)
            result["stdout"] = py_out.getvalue() + fd_out.read().decode("utf-8", "replace")
            result["stderr"] = py_err.getvalue() + fd_err.read().decode("utf-8", "replace")


def run_case(case: Case, root: Path, assets: Path) -> Outcome:
    """Build ``case`` in the empty folder ``root`` from ``assets`` (:func:`build_assets`), run it, compare files."""
    import traceback

    from slimformer.cli import main

    copy_assets(assets, root)
    argv = case.build(root)
    before = snapshot(root)
    exception = None
    code = None
    with capture_all() as out:
        try:
            code = main(argv)
        except SystemExit as e:  # main() returns usage errors; a SystemExit here is a bug
            code = e.code if isinstance(e.code, int) else 1
            exception = f"SystemExit({e.code!r})"
        except BaseException as e:  # noqa: BLE001 - recorded as a failure of the case
            exception = "".join(traceback.format_exception(e))
    for p in root.rglob("*"):  # a read-only folder of the case must not stop the clean-up
        if p.is_dir() and not os.access(p, os.W_OK):
            p.chmod(0o755)
    after = snapshot(root)
    changed = sorted(k for k, v in before.items() if after.get(k) != v)
    debris = sorted(k for k in after if k not in before and ".slimtmp-" in k)
    return Outcome(case.id, code, out["stderr"], out["stdout"], changed, debris, exception)


def runnable(case: Case) -> bool:
    """Whether ``case`` can be run here (permission cases need a user other than root)."""
    return not (case.skip_as_root and hasattr(os, "geteuid") and os.geteuid() == 0)
