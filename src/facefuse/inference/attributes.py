"""An attribute + landmark checkpoint (such as DMM-CNN's) used on face crops.

The checkpoint's JSON carries the attribute names, the per-attribute decision thresholds,
the input size and normalisation, so predictions need nothing but the two files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from facefuse.inference.face_model import FaceModel, ModelForward
from facefuse.runtime.decoding import sigmoid


@dataclass(frozen=True)
class AttributePrediction:
    """Predictions for one face crop."""

    attributes: dict[str, bool]
    scores: dict[str, float]
    landmarks: np.ndarray | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, object]:
        return {"attributes": self.attributes, "scores": self.scores,
                "landmarks": None if self.landmarks is None else self.landmarks.tolist()}


class AttributeLandmarkModel(FaceModel):
    """Predicts the attributes (with the checkpoint's thresholds) and, if the checkpoint
    has a landmark head, the 68 landmarks in the crop's pixel coordinates."""

    def __init__(self, meta: dict, forward: ModelForward, flip: bool = False) -> None:
        super().__init__(meta, forward, flip)
        if "attributes" not in self.tasks:
            raise ValueError("this checkpoint has no attribute head")
        self.names: list[str] = list(self.meta["tasks"]["attributes"])
        self.thresholds = np.asarray(self.meta.get("thresholds", [0.5] * len(self.names)),
                                     dtype=np.float32)
        if len(self.thresholds) != len(self.names):
            raise ValueError(f"checkpoint has {len(self.thresholds)} thresholds for "
                             f"{len(self.names)} attributes")
        self.has_landmarks = "landmarks" in self.tasks

    def predict_attributes(self, faces: Sequence[np.ndarray]) -> list[AttributePrediction]:
        """Predict for face crops (HxWx3 uint8 RGB, any size), batched."""
        if len(faces) == 0:
            return []
        _, out = self.raw(faces)
        probs = sigmoid(out["attributes"])
        points = out["landmarks"].reshape(len(faces), -1, 2) if self.has_landmarks else None
        results = []
        for i, face in enumerate(faces):
            h, w = np.asarray(face).shape[:2]
            lm = points[i] * np.array([w, h], dtype=np.float32) if points is not None else None
            results.append(AttributePrediction(
                {n: bool(p >= t)
                 for n, p, t in zip(self.names, probs[i], self.thresholds, strict=True)},
                {n: float(round(p, 4)) for n, p in zip(self.names, probs[i], strict=True)}, lm))
        return results
