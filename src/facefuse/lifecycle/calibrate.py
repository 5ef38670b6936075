"""Fit a checkpoint's age calibration on its training run's validation split, and store it in
the checkpoint's JSON metadata (:mod:`facefuse.train.calibration` says what the map is).

The model runs on the cache's validation rows that carry an age label, as the analyzer runs
it (test-time flip unless ``flip=False``), ignoring any calibration the checkpoint already
has; the map from those predictions to the true ages replaces it. Validation rows only: the
test split stays unseen, so test figures after calibration remain test figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facefuse.data.cache import TrainingCache
from facefuse.evaluation.cache_predictions import raw_predictions
from facefuse.inference.face_model import FaceModel
from facefuse.runtime.calibration import apply_monotone_map
from facefuse.runtime.model_files import read_model_meta, update_model_meta
from facefuse.train.calibration import fit_monotone_map


def calibrate(checkpoint: str | Path, cache_dir: str | Path, task: str = "age",
              split: str = "val", knots: int = 24, flip: bool = True,
              force: bool = False) -> dict:
    """Fit the map and return it with the split's MAE before and after; write it into
    ``checkpoint``'s JSON only when it lowers that MAE (or with ``force``), so a map that
    does not help is never shipped by accident (``written`` in the result says which).

    Raises:
        FileNotFoundError: no checkpoint or no cache at the paths.
        ValueError: the checkpoint has no ``task`` head, or too few rows to fit.
    """
    checkpoint = Path(checkpoint)
    model = FaceModel.from_checkpoint(checkpoint, flip=flip)
    if task not in model.tasks:
        raise ValueError(f"{checkpoint} has no {task!r} head")
    predicted, true = raw_predictions(model, TrainingCache.open(cache_dir), task, split)
    mapping = fit_monotone_map(predicted, true, knots)
    mapping.update(split=split, flip=flip, cache=Path(cache_dir).name)
    before = float(np.abs(predicted - true).mean())
    after = float(np.abs(apply_monotone_map(predicted, mapping) - true).mean())
    result = {"task": task, "rows": len(true), "mae_before": before, "mae_after": after,
              "map": mapping, "written": force or after < before}
    if result["written"]:
        calibration = {**read_model_meta(checkpoint).get("calibration", {}), task: mapping}
        update_model_meta(checkpoint, {"calibration": calibration})
    return result
