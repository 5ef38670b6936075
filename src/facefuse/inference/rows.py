"""Faces as flat table rows (CSV), for photos and video frames alike."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import Any, TextIO

# the first columns of ImageResult.rows(), before each task's
ROW_COLUMNS = ("source", "face", "x0", "y0", "x1", "y1", "score")


def face_row(source: str, index: int, box: Sequence[float], score: float,
             predictions: dict[str, Any]) -> dict[str, Any]:
    """One face as a flat table row: :data:`ROW_COLUMNS`, then each task's label and its
    confidence, or its value (age), and the attributes present as one space-separated cell
    (the embedding and the landmarks are left out)."""
    row: dict[str, Any] = dict(zip(ROW_COLUMNS, (source, index, *box, score), strict=True))
    for task, value in predictions.items():
        if isinstance(value, dict) and "label" in value:
            row[task] = value["label"]
            row[f"{task}_confidence"] = max(value["probabilities"].values())
        elif isinstance(value, (int, float)):
            row[task] = value
        elif task == "attributes":
            row[task] = " ".join(k for k, v in value.items() if v)
    return row


class FaceRowWriter:
    """CSV rows of photos' faces and videos' frame faces under one header: the columns of the
    first row with a face, with a video's ``frame``, ``time_s`` and ``track`` after
    ``source`` when videos are among the inputs (empty for photos), and ``error`` last.
    Rows without a face (a failed or face-free photo) that come first wait for that header;
    :meth:`close` writes them if no face ever comes."""

    VIDEO_COLUMNS = ("frame", "time_s", "track")

    def __init__(self, out: TextIO, with_video: bool) -> None:
        self.out, self.with_video = out, with_video
        self.writer: csv.DictWriter | None = None
        self.waiting: list[dict] = []

    def write(self, row: dict) -> None:
        if self.writer is None and row.get("face") is None:
            self.waiting.append(row)
            return
        if self.writer is None:
            self._start(row)
        self.writer.writerow(row)

    def close(self) -> None:
        if self.writer is None and self.waiting:
            self._start(self.waiting[0])

    def _start(self, row: dict) -> None:
        names = [c for c in row if c not in (*self.VIDEO_COLUMNS, "error")]
        if self.with_video:
            names[1:1] = self.VIDEO_COLUMNS
        self.writer = csv.DictWriter(self.out, fieldnames=[*names, "error"],
                                     extrasaction="ignore")
        self.writer.writeheader()
        self.writer.writerows(self.waiting)
        self.waiting = []
