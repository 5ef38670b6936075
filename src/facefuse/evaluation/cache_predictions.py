"""A model's predictions on the rows of a training cache, as the analyzer makes them (with
the model's test-time flip when it has one) but uncalibrated: what an age map is fitted to
(``facefuse model calibrate``), what its effect is measured on
(``benchmarks/calibration_effect.py``) and what heads are refitted on
(``benchmarks/head_refit.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from facefuse.tasks import TaskKind, get_task

if TYPE_CHECKING:
    from facefuse.data.cache import TrainingCache
    from facefuse.inference.face_model import FaceModel


def labelled_rows(cache: TrainingCache, split: str, tasks: Sequence[str]) -> np.ndarray:
    """The cache's ``split`` rows that carry a label of any of ``tasks``."""
    rows = cache.rows(split)
    return rows[np.any([cache.table.present(t)[rows] for t in tasks], axis=0)]


def cache_predictions(model: FaceModel, cache: TrainingCache, rows: np.ndarray,
                      tasks: Sequence[str], batch: int = 256
                      ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(features, predictions per task) of the cache's ``rows``, ``batch`` images at a time:
    a regression task's value straight from the head (no calibration), a class task's class
    index."""
    features, predictions = [], {t: [] for t in tasks}
    for start in range(0, len(rows), batch):
        f, heads = model.raw([np.asarray(cache.images[i]) for i in rows[start:start + batch]])
        features.append(np.asarray(f, np.float32))
        for t in tasks:
            predictions[t].append(model.regression_values(t, heads[t], calibrated=False)
                                  if get_task(t).kind is TaskKind.REGRESSION
                                  else np.asarray(heads[t]).argmax(1))
    width = features[0].shape[1] if features else 0
    return (np.concatenate(features) if features else np.zeros((0, width), np.float32),
            {t: np.concatenate(v) if v else np.zeros(0) for t, v in predictions.items()})


def raw_predictions(model: FaceModel, cache: TrainingCache, task: str, split: str,
                    batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, true) values of a regression ``task`` on the cache's ``split`` rows that
    carry its label, predicted straight from the head (no calibration).

    Raises:
        ValueError: no such rows.
    """
    rows = labelled_rows(cache, split, [task])
    if len(rows) == 0:
        raise ValueError(f"the cache has no {split} rows labelled with {task!r}")
    _, predicted = cache_predictions(model, cache, rows, [task], batch)
    return predicted[task], cache.table.labels[task][rows].astype(np.float64)
