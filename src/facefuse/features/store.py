"""Feature extraction and the feature store.

A feature file is safetensors with one tensor ``features`` of shape ``(N, D)``; its
metadata holds the sample ids (JSON) and the source model, so features are reused by id
whatever order a later table has.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from facefuse.data.cache import TrainingCache
from facefuse.data.loader import CacheLoader
from facefuse.files import atomic_path


@dataclass(frozen=True)
class FeatureSet:
    """Features of some samples, indexed by sample id."""

    sample_ids: np.ndarray
    features: np.ndarray
    source: str

    def __post_init__(self) -> None:
        if len(self.sample_ids) != len(self.features):
            raise ValueError(f"{len(self.sample_ids)} ids for {len(self.features)} feature rows")

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def rows_for(self, sample_ids: Sequence[str]) -> np.ndarray:
        """Feature rows for ``sample_ids`` in that order; an unknown id is an error."""
        index = {s: i for i, s in enumerate(self.sample_ids.tolist())}
        try:
            return self.features[[index[s] for s in sample_ids]]
        except KeyError as exc:
            raise KeyError(f"no {self.source} features for sample {exc.args[0]!r}") from None

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            save_file({"features": torch.from_numpy(np.ascontiguousarray(self.features))},
                      str(tmp), metadata={"sample_ids": json.dumps(self.sample_ids.tolist()),
                                          "source": self.source})

    @classmethod
    def load(cls, path: str | Path) -> FeatureSet:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            features = f.get_tensor("features").numpy()
        if "sample_ids" not in meta:
            raise ValueError(f"{path}: not a facefuse feature file (no sample_ids metadata)")
        return cls(np.asarray(json.loads(meta["sample_ids"]), dtype=object), features,
                   meta.get("source", ""))


@torch.no_grad()
def extract_features(model: torch.nn.Module, cache: TrainingCache, rows: np.ndarray,
                     source: str, batch_size: int = 512,
                     device: str | torch.device = "cpu") -> FeatureSet:
    """Run ``model.forward_features`` over cached rows (no augmentation, model in eval)."""
    model.eval().to(device)
    loader = CacheLoader(cache, rows, batch_size=batch_size, shuffle=False, device=device,
                         labels={})
    parts, order = [], []
    for batch in loader:
        parts.append(model.forward_features(batch.images).float().cpu().numpy())
        order.append(batch.index)
    index = np.concatenate(order)
    return FeatureSet(cache.table.sample_id[index], np.concatenate(parts), source)
