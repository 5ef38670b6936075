"""An attribute + landmark checkpoint (such as DMM-CNN's) used on face crops.

The checkpoint's JSON carries the attribute names, the per-attribute decision thresholds,
the input size and normalisation, so predictions need nothing but the two files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facefuse.models.checkpoint import Checkpoint, load_checkpoint


@dataclass(frozen=True)
class AttributePrediction:
    """Predictions for one face crop."""

    attributes: dict[str, bool]
    scores: dict[str, float]
    landmarks: np.ndarray | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, object]:
        return {"attributes": self.attributes, "scores": self.scores,
                "landmarks": None if self.landmarks is None else self.landmarks.tolist()}


class AttributeLandmarkModel:
    """Predicts the attributes (with the checkpoint's thresholds) and, if the checkpoint
    has a landmark head, the 68 landmarks in the crop's pixel coordinates."""

    def __init__(self, checkpoint: Checkpoint, device: str | torch.device = "cpu") -> None:
        meta = checkpoint.meta
        if "attributes" not in checkpoint.model.heads:
            raise ValueError("this checkpoint has no attribute head")
        self.model = checkpoint.model.to(device).eval()
        self.device = torch.device(device)
        self.names: list[str] = list(meta["tasks"]["attributes"])
        self.thresholds = np.asarray(meta.get("thresholds", [0.5] * len(self.names)),
                                     dtype=np.float32)
        if len(self.thresholds) != len(self.names):
            raise ValueError(f"checkpoint has {len(self.thresholds)} thresholds for "
                             f"{len(self.names)} attributes")
        self.size = int(meta["input_size"])
        norm = meta.get("normalisation", {"mean": [0.485, 0.456, 0.406],
                                          "std": [0.229, 0.224, 0.225]})
        self.mean = torch.tensor(norm["mean"]).view(1, 3, 1, 1)
        self.std = torch.tensor(norm["std"]).view(1, 3, 1, 1)
        self.has_landmarks = "landmarks" in self.model.heads

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu"
                        ) -> AttributeLandmarkModel:
        return cls(load_checkpoint(path, device), device)

    def _batch(self, faces: Sequence[np.ndarray]) -> torch.Tensor:
        arrays = []
        for i, face in enumerate(faces):
            face = np.asarray(face)
            if face.ndim != 3 or face.shape[2] != 3 or face.dtype != np.uint8:
                raise ValueError(f"face {i}: expected an HxWx3 uint8 RGB array, got "
                                 f"{face.shape} {face.dtype}")
            arrays.append(np.asarray(Image.fromarray(face).resize((self.size, self.size),
                                                                  Image.BILINEAR)))
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
        return ((x - self.mean) / self.std).to(self.device)

    @torch.no_grad()
    def predict(self, faces: Sequence[np.ndarray]) -> list[AttributePrediction]:
        """Predict for face crops (HxWx3 uint8 RGB, any size), batched."""
        if len(faces) == 0:
            return []
        out = self.model(self._batch(faces))
        probs = torch.sigmoid(out["attributes"].float()).cpu().numpy()
        points = out["landmarks"].float().cpu().numpy().reshape(len(faces), -1, 2) \
            if self.has_landmarks else None
        results = []
        for i, face in enumerate(faces):
            h, w = np.asarray(face).shape[:2]
            lm = points[i] * np.array([w, h], dtype=np.float32) if points is not None else None
            results.append(AttributePrediction(
                {n: bool(p >= t) for n, p, t in zip(self.names, probs[i], self.thresholds)},
                {n: float(round(p, 4)) for n, p in zip(self.names, probs[i])}, lm))
        return results
