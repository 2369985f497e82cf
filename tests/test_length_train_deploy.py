"""One meaning of a length configuration from training to deployment (issue "Length-adaptive training that matches
what is deployed"): the smallest sub-model a LengthDrop training step runs keeps, in every row of a padded batch
and at every layer, the tokens the smallest configuration the search may return keeps when the search or the
exported ONNX graph applies it."""

from __future__ import annotations

import pytest
import torch

from conftest import make_tiny_model
from slimformer.length import forward_with_config
from slimformer.length.config import gene_config
from slimformer.length.genes import initial_population
from slimformer.length.selector import LengthSelector
from slimformer.length.trainer import LengthDropTrainer
from slimformer.stages.search import SearchStageConfig

N = 16  # the training max_seq_length = the search's seq_len (its default: the model's max_seq_length)
P = 0.3  # length_drop_ratio_bound of the length stage = length_drop_ratio of the search
REAL = [13, 11, 7, 3]  # real tokens per row; the longest row is shorter than N, as in most padded batches


@pytest.fixture
def record_counts(monkeypatch):
    """Per forward pass (one :class:`LengthSelector` each): ``{layer: per-row kept counts}``, in call order."""
    passes: list[dict[int, list[int]]] = []
    original = LengthSelector.__call__

    def call(self, layer_idx, probs, mask):
        if not passes or passes[-1].get("_selector") is not self:
            passes.append({"_selector": self})
        passes[-1][layer_idx] = self.row_keep_counts(layer_idx).tolist()
        return original(self, layer_idx, probs, mask)

    monkeypatch.setattr(LengthSelector, "__call__", call)
    return passes


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    width = max(REAL)  # dynamic padding, as DataCollatorWithPadding pads a training batch
    ids = torch.randint(5, 150, (len(REAL), width), generator=g)
    mask = (torch.arange(width)[None, :] < torch.tensor(REAL)[:, None]).long()
    return {
        "input_ids": ids.masked_fill(mask == 0, 0),
        "attention_mask": mask,
        "token_type_ids": torch.zeros_like(ids),
        "labels": torch.tensor([0, 1, 0, 1]),
    }


def _counts(passes: list[dict], layers: int) -> list[list[int]]:
    """``[layer][row]`` kept counts of one recorded pass."""
    (p,) = passes
    return [p[i] for i in range(layers)]


def test_smallest_training_sub_model_keeps_what_the_smallest_searchable_configuration_keeps(tmp_path, record_counts):
    from transformers import TrainingArguments

    layers = 3
    model = make_tiny_model("classification", "bert", num_labels=2, num_hidden_layers=layers)
    batch = _batch()

    # what the search stage scores and exports as its cheapest configuration (stages/search.py: run_search)
    search = SearchStageConfig(task="sst2", data="x", seq_len=N, length_drop_ratio=P)
    smallest = initial_population(
        0, num_layers=layers, max_length=N, min_length=search.min_length, length_drop_ratio=search.length_drop_ratio
    )[1]
    deployed = gene_config(smallest, search.gene_form, N)
    feed = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        forward_with_config(model, **feed, config=deployed)  # the search's metric path (length/evaluate.py)
    searched = _counts(record_counts, layers)
    # the exported graph computes k per row from the row's real length with the same float32 rule
    assert searched == [[deployed.lengths_for(n)[i] for n in REAL] for i in range(layers)]
    record_counts.clear()

    # one training step of the length stage (min_length and the grid are the stage's defaults)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", max_steps=1)
    trainer = LengthDropTrainer(
        model=model, args=args, seq_len=N, length_drop_ratio_bound=P, layer_drop_prob=0.0, num_sandwich=0
    )
    model.train()
    trainer.compute_loss(model, batch)
    assert [s.kind for s in trainer.last_sandwich] == ["full", "smallest"]
    trained = _counts(record_counts, layers)  # the full pass has no selector: the one pass is the smallest

    assert trained == searched  # row by row, layer by layer
    # and it is not "every row keeps everything" (what absolute lengths of the longest row gave the short rows)
    assert any(trained[-1][b] < n for b, n in enumerate(REAL))
    # the very configuration the graph is fed: ratios g_i / N
    assert trainer.last_sandwich[1].config == deployed


def test_the_exported_graph_runs_the_smallest_configuration_as_the_search_scores_it(tmp_path):
    """The ONNX leg: the graph, fed the smallest searchable configuration, gives the search's logits on the batch."""
    import numpy as np

    from slimformer.export.length import export_length_onnx
    from slimformer.export.length_ort import LengthOrtModel

    layers = 3
    model = make_tiny_model("classification", "bert", num_labels=2, num_hidden_layers=layers)
    smallest = initial_population(0, num_layers=layers, max_length=N, min_length=2, length_drop_ratio=P)[1]
    deployed = gene_config(smallest, "ratios", N)
    path = export_length_onnx(model, tmp_path / "m.onnx", deployed)
    batch = {k: v.numpy() for k, v in _batch().items() if k != "labels"}
    with torch.no_grad():
        ref = forward_with_config(model, **{k: torch.from_numpy(v) for k, v in batch.items()}, config=deployed)
    np.testing.assert_allclose(LengthOrtModel(path, deployed)(batch)["logits"], ref.logits.numpy(), atol=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_random_sub_models_are_search_genes_and_keep_what_deployment_keeps(tmp_path, record_counts, seed):
    """Every random sub-model is a gene of the search's space, applied as the search applies it."""
    from transformers import TrainingArguments

    from slimformer.length.genes import check_gene

    layers = 3
    model = make_tiny_model("classification", "bert", num_labels=2, num_hidden_layers=layers)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", max_steps=1)
    trainer = LengthDropTrainer(
        model=model, args=args, seq_len=N, length_drop_ratio_bound=P, num_sandwich=2, length_seed=seed
    )
    model.train()
    batch = _batch()
    trainer.compute_loss(model, batch)
    subs = trainer.last_sandwich[1:]
    smallest = subs[0].gene
    for i, sub in enumerate(subs):
        check_gene(sub.gene, num_layers=layers, min_length=2, max_length=N)
        assert all(a >= b for a, b in zip(sub.gene, smallest))
        assert sub.config == gene_config(sub.gene, "ratios", N)
        kept = record_counts[i]
        assert [kept[j] for j in range(layers)] == [[sub.config.lengths_for(n)[j] for n in REAL] for j in range(layers)]
