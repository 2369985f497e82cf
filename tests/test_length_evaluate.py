"""The search's metric callable (a gene -> the task metric) and a lean import of slimformer.length."""

from __future__ import annotations

import subprocess
import sys

import torch

from conftest import SST2_ROWS, make_tiny_model, write_sst2
from slimformer.length import LengthConfig, forward_with_config
from slimformer.length.evaluate import evaluate_config, metric_fn
from slimformer.tasks.data import load_eval_set


def _per_example_accuracy(model, dev, config):
    correct = 0
    for f in dev.features:
        ids = torch.tensor([f["input_ids"]])
        with torch.no_grad():
            logits = forward_with_config(model, ids, torch.ones_like(ids), torch.tensor([f["token_type_ids"]]), config)
        correct += int(logits.logits.argmax(-1)) == f["labels"]
    return correct / len(dev.features)


def test_metric_fn_scores_genes_on_batched_padded_data(tmp_path, tiny_tokenizer):
    rows = ["the movie was good and fun\t1", "a terrible boring film\t0", "very bad\t0", "great\t1"] * 2
    data = write_sst2(tmp_path, SST2_ROWS, rows)
    dev = load_eval_set("sst2", data, tiny_tokenizer, max_seq_length=16)
    model = make_tiny_model("classification", "bert", num_labels=2, num_hidden_layers=2, seed=4)
    metric = metric_fn(model, dev, batch_size=5)
    for gene in [(16, 16), (4, 2), (1, 1)]:
        expected = _per_example_accuracy(model, dev, LengthConfig.from_lengths(gene))
        assert metric(gene) == expected
    assert evaluate_config(model, dev, None, batch_size=5)["main"] == _per_example_accuracy(model, dev, None)


def test_import_slimformer_length_is_lean():
    code = (
        "import sys, slimformer.length\n"
        "assert 'onnxruntime' not in sys.modules and 'onnx' not in sys.modules\n"
        "assert 'slimformer.length.trainer' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
