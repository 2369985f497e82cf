"""The ``qat`` and ``sdq`` stages end to end on a tiny teacher and tiny data: the saved folder holds exactly the
trained, converted model; the meta records what was applied; config errors are one-line ConfigErrors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import SST2_ROWS, write_sst2
from kd_helpers import save_teacher
from slimformer.checkpoint import load_model
from slimformer.errors import ConfigError
from slimformer.quant import QuantizedLinear
from slimformer.recipe import load_recipe, parse_recipe, run_recipe
from slimformer.stages._kd import evaluate_model
from slimformer.stages.qat import QATStageConfig, run_qat
from slimformer.stages.sdq import SDQStageConfig

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
BUDGET = {"max_steps": 2, "batch_size": 4, "logging_steps": 1, "learning_rate": 1e-3, "max_seq_length": 32}


@pytest.fixture
def teacher_and_data(tmp_path: Path, tiny_tokenizer) -> tuple[Path, Path]:
    data = write_sst2(tmp_path, SST2_ROWS)
    return save_teacher(tmp_path / "teacher", tiny_tokenizer, data), data


def test_qat_stage_saves_the_trained_converted_model(tmp_path: Path, teacher_and_data) -> None:
    teacher, data = teacher_and_data
    cfg = QATStageConfig(task="sst2", data=str(data), seed=7, **BUDGET)
    res = run_qat(cfg, tmp_path / "qat", teacher=teacher)
    out = Path(res["model_dir"])
    assert not (tmp_path / "qat.trainer").exists()
    meta = json.loads((out / "slimformer.json").read_text())
    assert [a["stage"] for a in meta["applied"]] == ["finetune", "qat"]
    rec = meta["applied"][-1]
    assert rec["kd_losses"] == cfg.kd_losses and rec["seed"] == 7 and meta["seed"] == 7 and rec["steps"] == 2
    assert rec["bits"] == {"weight": 2, "activation": 8} == res["bits"]
    assert rec["quantization"]["weight"] == {
        "quantizer": "ternary", "bits": 2, "granularity": "PerTensor", "clip": 2.5, "threshold_factor": 0.7,
    }  # fmt: skip
    assert rec["teacher"] == str(teacher)
    assert json.loads((out / "eval_results.json").read_text())["metrics"] == res["metrics"]

    state = load_file(out / "model.safetensors")  # the fp32 tensors; the ternary codes are stored packed
    packed = load_file(out / "quantized.safetensors")
    assert len([k for k in packed if k.endswith("weight_packed")]) == 2 * 6 + 1
    assert not any(k.endswith("query.weight") for k in state)

    # the saved folder loads back as the converted model the stage evaluated: same metrics, same logits twice
    loaded_teacher = load_model(teacher)
    reloaded = load_model(out).model.eval()
    assert sum(isinstance(m, QuantizedLinear) for m in reloaded.modules()) == 2 * 6 + 1
    metrics = evaluate_model(reloaded, loaded_teacher.tokenizer, cfg, teacher_meta=loaded_teacher.meta)
    assert metrics == res["metrics"]
    # training moved the fp32 head away from the teacher's (the teacher itself is untouched on disk)
    assert not torch.equal(state["classifier.weight"], loaded_teacher.model.hf.classifier.weight)
    ids = torch.randint(5, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    again = load_model(out).model.eval()
    torch.testing.assert_close(reloaded(ids).logits, again(ids).logits, rtol=0, atol=0)


def test_plain_int8_qat_then_sdq_int4_in_a_recipe(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = write_sst2(tmp_path, SST2_ROWS)
    plain = {"weight_quantizer": "uniform", "weight_bits": 8, "kd_losses": {}, "gt_weight": 1.0, **BUDGET}
    sdq = {"weight_bits": 4, "noise_start": 0.5, "noise_ramp": 1.0, **BUDGET}
    raw = {
        "name": "tiny-quant",
        "task": "sst2",
        "model": str(tiny_model_dir),
        "data": str(data),
        "stages": [{"finetune": {"max_steps": 2, "batch_size": 8}}, {"qat": plain}, {"sdq": sdq}],
    }
    ctx = run_recipe(parse_recipe(raw), run_dir=tmp_path / "run", log=lambda _: None)
    outs = list(ctx.outputs.values())
    assert outs[1]["model_dir"] == str(tmp_path / "run" / "qat") and outs[1]["kd_losses"] == {}
    assert outs[2]["model_dir"] == str(tmp_path / "run" / "sdq")
    assert outs[2]["bits"] == {"weight": 4, "activation": 8}
    assert outs[2]["kd_losses"] == {"logits_kd": 1.0, "sdq_attention_kl": 1.0}
    # the teacher of both is the latest full-precision model of the run (the fine-tuned one), never a quantized one
    rec = json.loads((tmp_path / "run" / "sdq" / "slimformer.json").read_text())["applied"][-1]
    assert rec["teacher"] == str(tmp_path / "run" / "finetune") and outs[2]["quantized"] is True
    assert rec["stage"] == "sdq" and rec["noise_start"] == 0.5 and rec["quantization"]["weight"]["bits"] == 4
    with pytest.raises(ConfigError, match=r"is already quantized \(stage 'qat'\); give a full-precision teacher"):
        run_qat(SDQStageConfig(task="sst2", data=str(data)), tmp_path / "x", teacher=tmp_path / "run" / "qat")
    for name, bound in (("qat", 127), ("sdq", 7)):
        model = load_model(tmp_path / "run" / name).model
        codes = [m.weight_codes for m in model.modules() if isinstance(m, QuantizedLinear)]
        assert len(codes) == 13 and max(int(c.abs().max()) for c in codes) <= bound


def test_teacher_of_another_task_is_refused(tmp_path: Path, tiny_tokenizer) -> None:
    data = write_sst2(tmp_path, SST2_ROWS)
    teacher = save_teacher(tmp_path / "t", tiny_tokenizer, data, task="mrpc")
    with pytest.raises(ConfigError, match=r"fine-tuned on 'mrpc', not on task 'sst2'"):
        run_qat(QATStageConfig(task="sst2", data=str(data), **BUDGET), tmp_path / "o", teacher=teacher)
    assert not (tmp_path / "o").exists()


def test_stage_without_teacher_is_a_config_error(tmp_path: Path) -> None:
    recipe = parse_recipe({"name": "x", "task": "sst2", "data": "d", "stages": [{"qat": {}}]})
    with pytest.raises(ConfigError, match=r"stages\[0\]\.qat: teacher: no earlier stage writes a full-precision model"):
        run_recipe(recipe, run_dir=tmp_path, log=lambda _: None)


@pytest.mark.parametrize(
    ("stage", "options", "match"),
    [
        ("qat", {"weight_quantizer": "lsq"}, r"weight_quantizer 'lsq' is unknown; expected one of"),
        ("qat", {"weight_quantizer": "ternary", "weight_bits": 4}, r"'ternary' has 2-bit weights, got weight_bits=4"),
        ("qat", {"weight_quantizer": "binary", "weight_bits": 2}, r"'binary' has 1-bit weights"),
        ("qat", {"weight_quantizer": "uniform", "weight_bits": 16}, r"bits must be one of 2, 3, 4, 8, got 16"),
        ("qat", {"weight_quantizer": "uniform"}, r"'uniform' needs weight_bits"),
        ("qat", {"act_bits": 5}, r"ActivationQuantizer bits must be one of"),
        ("qat", {"kd_losses": {"attention_maps": 1}}, r"unknown loss 'attention_maps'"),
        ("qat", {"kd_losses": {}}, r"nothing to train"),
        ("qat", {"temperature": 0}, r"temperature"),
        ("sdq", {"weight_quantizer": "ternary", "weight_bits": 2}, r"sdq needs weight_quantizer: uniform"),
        ("sdq", {"noise_start": 1.5}, r"noise_start"),
        ("qat", {"noise_start": 0.5}, r"noise_start: unknown key"),
        ("qat", {"embedding_bits": 3}, r"embedding_bits"),
    ],
)
def test_bad_stage_options_name_the_problem(stage: str, options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as e:
        parse_recipe({"name": "x", "task": "sst2", "data": "d", "stages": [{stage: options}]}, "r.yaml")
    assert "\n" not in str(e.value) and str(e.value).startswith(f"r.yaml: stages[0].{stage}")


def test_binary_and_weight_only_configs_build() -> None:
    cfg = QATStageConfig(task="sst2", data="d", weight_quantizer="binary", act_bits=None).qat_config()
    assert cfg.activation is None and type(cfg.weight).__name__ == "BinaryWeight"
    cfg = QATStageConfig(task="sst2", data="d", weight_quantizer="uniform", weight_bits=4, weight_clip=None)
    assert cfg.qat_config().weight.bits == 4 and cfg.qat_config().weight.clip is None
    assert SDQStageConfig(task="sst2", data="d").qat_config().weight.bits == 8


@pytest.mark.parametrize("name", ["ternary-kd-sst2", "sdq-int8-sst2"])
def test_shipped_quant_recipes_switch_task_by_override(name: str) -> None:
    recipe = load_recipe(RECIPES / f"{name}.yaml", ["task=mrpc", "data=glue_data/MRPC"])
    assert recipe.stages[0][0] == "finetune"
    stage_names = [n for n, _ in recipe.stages]
    assert ("qat" if name.startswith("ternary") else "sdq") in stage_names
    for n, cfg in recipe.stages:
        if hasattr(cfg, "task"):
            assert (cfg.task, cfg.data) == ("mrpc", "glue_data/MRPC"), n


def test_qat_stage_trains_a_quantized_embedding_table(tmp_path: Path, teacher_and_data) -> None:
    from slimformer.quant import QuantizedEmbedding

    teacher, data = teacher_and_data
    cfg = QATStageConfig(task="sst2", data=str(data), embedding_bits=2, **BUDGET)
    res = run_qat(cfg, tmp_path / "qat", teacher=teacher)
    rec = json.loads((Path(res["model_dir"]) / "slimformer.json").read_text())["applied"][-1]
    assert rec["quantization"]["embedding"] == {
        "quantizer": "ternary", "bits": 2, "granularity": "PerRow", "trained": True,
    }  # fmt: skip
    assert "base.embeddings.word_embeddings.weight" not in load_file(Path(res["model_dir"]) / "model.safetensors")
    reloaded = load_model(res["model_dir"]).model.eval()
    table = reloaded.base.embeddings.word_embeddings
    assert isinstance(table, QuantizedEmbedding) and set(table.weight_codes.unique().tolist()) <= {-1, 0, 1}
    loaded_teacher = load_model(teacher)
    assert evaluate_model(reloaded, loaded_teacher.tokenizer, cfg, teacher_meta=loaded_teacher.meta) == res["metrics"]
