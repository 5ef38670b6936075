"""Raw head outputs decoded into named predictions, in numpy: class labels with their
probabilities, regression values in the task's units (through the model's calibration map),
attributes as booleans (the model's thresholds), landmarks in crop pixels, and the unit
identity embedding. Label names come from the model's metadata; the task registry gives
only each task's kind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from facefuse.runtime.calibration import apply_monotone_map, monotone_knots
from facefuse.tasks import FLIP_68, TaskKind, get_task, regression_scale


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.asarray(x, np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def unit_rows(v: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (a zero row stays zero)."""
    v = np.asarray(v, np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def unflip_output(task: str, output: np.ndarray) -> np.ndarray:
    """A head's output on mirrored crops, put back in the unmirrored crop's terms: 68
    landmarks (normalised 0..1) are mirrored in x and their left/right points swapped;
    every other output is the same quantity either way."""
    if task != "landmarks" or output.shape[1] != 2 * len(FLIP_68):
        return output
    pts = output.reshape(len(output), -1, 2)
    pts = np.stack([1 - pts[..., 0], pts[..., 1]], axis=-1)[:, list(FLIP_68)]
    return pts.reshape(len(output), -1)


class OutputDecoder:
    """Decodes one model's outputs as its metadata says.

    Args:
        meta: the model's JSON metadata (``tasks``: task -> label names; ``thresholds``:
            one per attribute; ``calibration``: task -> monotone map).
        tasks: the model's head names that are registered tasks.

    Raises:
        ValueError: a calibration map that is not one, or for a task the model lacks.
    """

    def __init__(self, meta: Mapping[str, Any], tasks: Sequence[str]) -> None:
        self.tasks = list(tasks)
        stored = meta.get("tasks") if isinstance(meta.get("tasks"), Mapping) else {}
        self.label_names = {t: [str(n) for n in stored[t]] if isinstance(
            stored.get(t), (list, tuple)) and stored[t] else list(get_task(t).label_names or [])
            for t in self.tasks}
        self.thresholds = meta.get("thresholds")
        self.calibration = dict(meta.get("calibration") or {})
        for task, mapping in self.calibration.items():  # a bad map fails here, not mid-batch
            if task not in self.tasks:
                raise ValueError(f"the model calibrates {task!r}, which it has no head for")
            monotone_knots(mapping)

    def _names(self, task: str, width: int) -> list[str]:
        names = self.label_names[task]
        if len(names) != width:
            raise ValueError(f"the {task} head gives {width} outputs; the model's metadata "
                             f"names {len(names)} labels")
        return names

    def regression_values(self, task: str, output: np.ndarray,
                          calibrated: bool = True) -> np.ndarray:
        """A regression head's raw output in the task's units (years for age), one value per
        crop; through the model's calibration map unless ``calibrated`` is False."""
        values = np.asarray(output, np.float64).reshape(len(output), -1)[:, 0] \
            * regression_scale(task)
        if calibrated and task in self.calibration:
            values = apply_monotone_map(values, self.calibration[task])
        return values

    def decode(self, sizes: Sequence[tuple[int, int]], outputs: Mapping[str, np.ndarray],
               embedding: np.ndarray | None) -> list[dict[str, Any]]:
        """One prediction dict per crop (``sizes``: each crop's (height, width), for the
        landmarks' pixels); ``embedding`` is the identity vector, normalised here."""
        out: list[dict[str, Any]] = [{} for _ in sizes]
        for t in self.tasks:
            kind, o = get_task(t).kind, np.asarray(outputs[t], np.float32)
            if kind is TaskKind.CLASSIFICATION:
                names = self._names(t, o.shape[1])
                for i, p in enumerate(softmax(o)):
                    out[i][t] = {"label": names[int(p.argmax())],
                                 "probabilities": {n: round(float(v), 4) for n, v in
                                                   zip(names, p, strict=True)}}
            elif kind is TaskKind.REGRESSION:
                for i, v in enumerate(self.regression_values(t, o)):
                    out[i][t] = round(float(v), 2)
            elif kind is TaskKind.MULTI_LABEL:
                names = self._names(t, o.shape[1])
                thr = np.asarray(self.thresholds or [0.5] * len(names), np.float64)
                if len(thr) != len(names):
                    raise ValueError(f"the model has {len(thr)} thresholds for {len(names)} "
                                     f"{t}")
                for i, p in enumerate(sigmoid(o)):
                    out[i][t] = {n: bool(v >= th) for n, v, th in zip(names, p, thr,
                                                                      strict=True)}
                    out[i][f"{t}_scores"] = {n: round(float(v), 4) for n, v in
                                             zip(names, p, strict=True)}
            elif kind is TaskKind.LANDMARKS:
                pts = o.reshape(len(o), -1, 2)
                for i, (h, w) in enumerate(sizes):
                    out[i][t] = (pts[i] * np.array([w, h])).round(2).tolist()
            elif kind is TaskKind.IDENTITY and embedding is not None:
                for i, e in enumerate(unit_rows(embedding)):
                    out[i]["embedding"] = e.round(6).tolist()
        return out
