"""Task features as a map-style dataset for the Hugging Face Trainer."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["FeatureDataset"]


class FeatureDataset(torch.utils.data.Dataset):
    """A list of feature dicts (``input_ids``, ``attention_mask`` ... of one example each) as a dataset.

    Only model inputs and labels are kept (``labels``; ``start_positions`` / ``end_positions`` for span QA).
    """

    _KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels", "start_positions", "end_positions")

    def __init__(self, features: list[dict[str, Any]]) -> None:
        self.features = [{k: f[k] for k in self._KEYS if k in f} for f in features]

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.features[i]
