"""What the analyzer returns: each face's box, score, landmarks and predictions
(:class:`FaceResult`), and an image's faces or its error (:class:`ImageResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facefuse.inference.rows import ROW_COLUMNS, face_row


@dataclass(frozen=True)
class FaceResult:
    """One face: its box and score, landmarks (68 points, image pixels, when the model has a
    landmark head), every task's prediction, and the model's trunk feature vector
    (``features``: what video clip statistics and feature studies use; not in
    :meth:`to_dict`)."""

    index: int
    box: tuple[float, float, float, float]
    score: float
    predictions: dict[str, Any] = field(compare=False)
    landmarks: tuple[tuple[float, float], ...] | None = field(default=None, compare=False)
    found_by: str = "detector"
    features: np.ndarray | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"face": self.index, "box": [round(v, 1) for v in self.box],
                "score": round(self.score, 4), "found_by": self.found_by,
                "landmarks": None if self.landmarks is None else [list(p) for p in
                                                                  self.landmarks],
                **self.predictions}


@dataclass(frozen=True)
class ImageResult:
    """All faces of one image (an empty tuple when there is none), or the error that
    stopped it."""

    source: str
    width: int
    height: int
    faces: tuple[FaceResult, ...]
    error: str | None = None

    def largest_face(self) -> FaceResult | None:
        """The face with the largest box (None when there is none)."""
        return max(self.faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]),
                   default=None)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "width": self.width, "height": self.height,
                "faces": [f.to_dict() for f in self.faces], "error": self.error}

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per face (class labels, age, box), for tables."""
        return [face_row(self.source, f.index, f.box, f.score, f.predictions)
                for f in self.faces]

    def to_dataframe(self):
        """The faces as a pandas DataFrame, one row per face as :meth:`rows` gives them (an
        image without faces: no rows, the same first columns); needs pandas
        (``pip install 'facefuse[dataframe]'``)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("to_dataframe needs pandas: pip install 'facefuse[dataframe]' "
                              "(or pip install pandas)") from exc
        return pd.DataFrame(self.rows(), columns=None if self.faces else ROW_COLUMNS)
