"""Evaluation batching: stated in every record, batch size 1 for dynamic activation scales (what a served request
gets), the spread over batchings, and static int8 independent of batching."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from conftest import SST2_ROWS, make_tiny_model, write_sst2
from int8_tolerance import int8_atol
from slimformer.errors import ConfigError
from slimformer.evaluate import (
    SERVED_BATCHING,
    EvalBatching,
    batching_spread,
    default_batching,
    evaluate_predictor,
    predict,
    spread_is_large,
)

pytest.importorskip("onnxruntime")

from slimformer.export import (  # noqa: E402
    DummyInputGenerator,
    OrtModel,
    dynamic_activation_scales,
    export_onnx,
    onnx_spec,
    quantize_dynamic_int8,
    quantize_static_int8,
)


# ------------------------------------------------------------------ EvalBatching and predict (no model needed)
def test_eval_batching_validates_and_round_trips() -> None:
    for bad in (
        {"batch_size": 0},
        {"order": "random"},
        {"padding": "max_length"},  # needs max_length
        {"max_length": 16},  # only with padding max_length
        {"padding": "max_length", "max_length": 0},
    ):
        with pytest.raises(ConfigError):
            EvalBatching(**bad)
    b = EvalBatching(batch_size=32, order="file", padding="max_length", max_length=128)
    assert EvalBatching.from_dict(json.loads(json.dumps(b.to_dict()))) == b
    assert "128" in b.describe() and "file order" in b.describe()
    assert SERVED_BATCHING.batch_size == 1 and "alone" in SERVED_BATCHING.describe()
    with pytest.raises(ConfigError):
        EvalBatching.from_dict({"batch": 1})


def test_default_batching_is_one_only_for_dynamic_activation_scales() -> None:
    assert default_batching(True) == SERVED_BATCHING
    assert default_batching(False) == EvalBatching(batch_size=64)
    assert default_batching(True, 32) == EvalBatching(batch_size=32)  # an explicit batch size wins


def _features(lengths: list[int]) -> list[dict]:
    return [{"input_ids": list(range(1, n + 1)), "attention_mask": [1] * n} for n in lengths]


def test_predict_batches_as_the_batching_says() -> None:
    lengths = [5, 2, 7, 3, 4]
    seen: list[tuple[list[int], int]] = []

    def predictor(batch):  # logits = (length of the row, batch width): shows who sat together and the padding
        seen.append((batch["attention_mask"].sum(1).tolist(), batch["input_ids"].shape[1]))
        n = batch["attention_mask"].sum(1).astype(np.float32)
        return {"logits": np.stack([n, np.full_like(n, batch["input_ids"].shape[1])], axis=1)}

    feats = _features(lengths)
    out = predict(predictor, feats, batching=EvalBatching(batch_size=2, order="file"), progress=False)
    assert [s[0] for s in seen] == [[5, 2], [7, 3], [4]]
    assert out["logits"][:, 0].tolist() == lengths  # results come back in the order of the features
    assert out["logits"][:, 1].tolist() == [5, 5, 7, 7, 4]
    seen.clear()
    predict(predictor, feats, batching=EvalBatching(batch_size=2), progress=False)
    assert [s[0] for s in seen] == [[2, 3], [4, 5], [7]]  # length-sorted
    seen.clear()
    fixed = predict(
        predictor, feats, batching=EvalBatching(batch_size=2, padding="max_length", max_length=9), progress=False
    )
    assert {s[1] for s in seen} == {9} and fixed["logits"][:, 1].tolist() == [9] * 5
    seen.clear()
    predict(predictor, feats, batching=SERVED_BATCHING, progress=False)
    assert [s[1] for s in seen] == sorted(lengths)  # each input alone, unpadded
    with pytest.raises(ConfigError, match="max_length=6"):
        predict(predictor, feats, batching=EvalBatching(padding="max_length", max_length=6), progress=False)
    with pytest.raises(ValueError):
        predict(predictor, feats, batch_size=2, batching=SERVED_BATCHING, progress=False)


def test_spread_is_large_reads_the_metric_unit() -> None:
    assert spread_is_large(0.006, 0.85) and not spread_is_large(0.004, 0.85)  # fractions: 0.5 points
    assert spread_is_large(0.6, 85.0) and not spread_is_large(0.4, 85.0)  # points (SQuAD F1)


# ------------------------------------------------------------------ graphs: which ones have dynamic scales
def test_dynamic_activation_scales_of_each_kind_of_graph(tmp_path: Path) -> None:
    from slimformer.quant import ActivationQuantizer, QATConfig, UniformWeight, convert_qat_, prepare_qat_

    model = make_tiny_model("classification", num_labels=2)
    fp32 = export_onnx(model, tmp_path / "fp32.onnx")
    gen, spec = DummyInputGenerator(model.config, seed=1), onnx_spec(model)
    calib = [{k: v.numpy() for k, v in gen.generate(spec.inputs, 4, 12).items()}]
    assert not dynamic_activation_scales(fp32)
    assert dynamic_activation_scales(quantize_dynamic_int8(fp32, tmp_path / "dyn.onnx"))
    assert not dynamic_activation_scales(quantize_static_int8(fp32, tmp_path / "static.onnx", calib))
    for act_q, expected in ((ActivationQuantizer(), True), (None, False)):
        qat = make_tiny_model("classification", num_labels=2)
        prepare_qat_(qat, QATConfig(weight=UniformWeight(8), activation=act_q))
        convert_qat_(qat)
        path = export_onnx(qat, tmp_path / f"qat-{expected}.onnx", atol=0.5)  # int8 kernels vs fake quant
        assert dynamic_activation_scales(path) is expected
        assert OrtModel(path).dynamic_activations is expected


# ------------------------------------------------------------------ a fine-tuned tiny model, exported
_WORDS = "the movie was good a terrible film very boring great fun not bad at all and".split()


def _dev_rows(n: int = 24) -> list[str]:
    rng = random.Random(0)
    return [f"{' '.join(rng.choices(_WORDS, k=rng.randint(1, 14)))}\t{i % 2}" for i in range(n)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> dict:
    """A tiny model fine-tuned 2 steps, exported with a dynamic int8 graph, and a static int8 copy of its export."""
    import shutil

    from slimformer.stages.export import ExportConfig, export_model
    from slimformer.stages.finetune import FinetuneConfig, finetune
    from slimformer.stages.quantize import QuantizeConfig, quantize_model

    root = tmp_path_factory.mktemp("batching")
    hf = root / "tiny-bert"
    make_tiny_model("none").hf.save_pretrained(hf)
    tiny_tokenizer.save_pretrained(hf)
    data = write_sst2(root, SST2_ROWS, _dev_rows())
    model = root / "m"
    finetune(FinetuneConfig(model=str(hf), task="sst2", data=str(data), max_steps=2, batch_size=4), model)
    dyn = root / "dynamic"
    export_model(model, ExportConfig(int8="dynamic"), out=dyn)
    static = root / "static"
    shutil.copytree(dyn, static)
    quantize_model(static / "model.onnx", QuantizeConfig(mode="static", calibration_examples=8))
    return {"model": model, "dynamic": dyn, "static": static, "data": data}


def _eval_set(exported: dict, folder: Path):
    from slimformer.models.load import load_tokenizer
    from slimformer.tasks.data import load_eval_set

    return load_eval_set("sst2", exported["data"], load_tokenizer(str(folder), True), max_seq_length=128)


def test_dynamic_int8_evaluation_defaults_to_batch_size_one_and_says_so(exported: dict) -> None:
    from slimformer.stages.evaluate import EvaluateConfig, evaluate, evaluate_record

    int8 = exported["dynamic"] / "model.int8.onnx"
    record = evaluate_record(int8)
    assert record["dynamic_activations"] is True
    assert record["batching"] == SERVED_BATCHING.to_dict()
    direct = evaluate_predictor(OrtModel(int8), _eval_set(exported, exported["dynamic"]), batching=SERVED_BATCHING)
    assert record["metrics"] == direct
    assert evaluate(int8) == record["metrics"]
    explicit = evaluate_record(int8, config=EvaluateConfig(batch_size=8))  # the user's batch size wins
    assert explicit["batching"] == EvalBatching(batch_size=8).to_dict()
    fp32 = evaluate_record(exported["dynamic"] / "model.onnx")
    assert fp32["dynamic_activations"] is False and fp32["batching"]["batch_size"] == 64
    static = evaluate_record(exported["static"] / "model.int8.onnx")
    assert static["dynamic_activations"] is False and static["batching"]["batch_size"] == 64


def test_batch_size_one_is_what_the_pipeline_serves(exported: dict) -> None:
    from slimformer.serving import pipeline

    folder = exported["dynamic"]
    texts = [line.split("\t")[0] for line in _dev_rows()]
    pipe = pipeline(folder)
    assert pipe.runtime == "int8" and pipe.dynamic_activations and pipe.batch_size == 1
    served = pipe(texts)
    one_by_one = [pipe(t)[0] for t in texts]  # a request of one text
    eval_set = _eval_set(exported, folder)
    logits = predict(OrtModel(folder / "model.int8.onnx"), eval_set.features, batching=SERVED_BATCHING)["logits"]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    labels = pipe.labels
    for i, (s, alone) in enumerate(zip(served, one_by_one)):
        assert s == alone  # a text's prediction does not depend on the other texts of the call
        assert s["label"] == labels[int(logits[i].argmax())]
        assert s["score"] == pytest.approx(float(probs[i].max()), abs=1e-6)
    # at batch size 1 the order of the inputs cannot matter (no batch mates, no padding)
    rev = predict(OrtModel(folder / "model.int8.onnx"), eval_set.features[::-1], batching=SERVED_BATCHING)
    np.testing.assert_array_equal(rev["logits"][::-1], logits)
    assert pipeline(folder, runtime="fp32").batch_size == 32


def test_dynamic_int8_moves_with_batching_and_static_does_not(exported: dict) -> None:
    eval_set = _eval_set(exported, exported["dynamic"])
    feats = eval_set.features
    batchings = [
        SERVED_BATCHING,
        EvalBatching(batch_size=8),
        EvalBatching(batch_size=8, order="file"),
        EvalBatching(batch_size=8, order="file", padding="max_length", max_length=128),
    ]
    static = OrtModel(exported["static"] / "model.int8.onnx")
    ref = predict(static, feats, batching=SERVED_BATCHING)["logits"]
    for b in batchings[1:]:
        out = predict(static, feats, batching=b)["logits"]
        np.testing.assert_allclose(out, ref, rtol=0, atol=int8_atol(ref, 0.01), err_msg=str(b))
    # the same check is sensitive: the dynamic graph's logits of an input change with its batch mates
    dynamic = OrtModel(exported["dynamic"] / "model.int8.onnx")
    d_ref = predict(dynamic, feats, batching=SERVED_BATCHING)["logits"]
    d_batched = predict(dynamic, feats, batching=batchings[3])["logits"]
    assert np.abs(d_batched - d_ref).max() > int8_atol(d_ref, 0.01)
    # the spread: one figure per batching, each the figure of that batching alone
    spread = batching_spread(dynamic, eval_set, batchings)
    assert [r["batching"] for r in spread["rows"]] == [b.to_dict() for b in batchings]
    for row, b in zip(spread["rows"], batchings):
        assert row["metrics"] == evaluate_predictor(dynamic, eval_set, batching=b, progress=False)
    mains = [r["metrics"]["main"] for r in spread["rows"]]
    assert (spread["main_min"], spread["main_max"]) == (min(mains), max(mains))
    assert spread["spread"] == pytest.approx(max(mains) - min(mains))


def test_evaluate_config_batchings_report_a_spread(exported: dict) -> None:
    from slimformer.stages.evaluate import EvaluateConfig, evaluate_record

    int8 = exported["dynamic"] / "model.int8.onnx"
    record = evaluate_record(int8, config=EvaluateConfig(batchings=[1, 4, 16]))
    assert [r["batching"]["batch_size"] for r in record["spread"]["rows"]] == [1, 4, 16]  # bs 1 listed once
    assert record["spread"]["rows"][0]["metrics"] == record["metrics"]
    with pytest.raises(ValueError):
        EvaluateConfig(batchings=[0])


def test_benchmark_rows_state_their_batching(exported: dict, tmp_path: Path) -> None:
    from slimformer.stages.benchmark import BenchmarkConfig, benchmark_artifacts

    folder = exported["dynamic"]
    cfg = BenchmarkConfig(batch_sizes=[1, 2], seq_len=16, warmup=0, iters=1, threads=1, batchings=[1, 8])
    res = benchmark_artifacts(
        exported["model"],
        cfg,
        onnx_fp32=folder / "model.onnx",
        onnx_int8=folder / "model.int8.onnx",
        out_dir=tmp_path,
        name="t",
        data=str(exported["data"]),
    )
    rows = {r["runtime"]: r for r in res["rows"]}
    assert rows["onnxruntime-int8"]["batching"] == SERVED_BATCHING.to_dict()
    assert rows["onnxruntime-int8"]["dynamic_activations"] is True
    assert rows["onnxruntime-fp32"]["batching"]["batch_size"] == 64
    assert rows["pytorch-fp32"]["dynamic_activations"] is False
    spread = rows["onnxruntime-int8"]["batching_spread"]
    assert [r["batching"]["batch_size"] for r in spread["rows"]] == [1, 8]
    assert spread["rows"][0]["metrics"]["main"] == rows["onnxruntime-int8"]["metric_value"]
    assert "batching_spread" not in rows["onnxruntime-fp32"]
    md = Path(res["report_md"]).read_text(encoding="utf-8")
    assert "Metric batching" in md and "batch size 1 (each input alone, unpadded)" in md and "spread" in md
