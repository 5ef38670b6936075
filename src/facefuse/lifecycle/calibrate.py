"""Fit a checkpoint's age calibration on its training run's validation split, and store it in
the checkpoint's JSON metadata (:mod:`facefuse.train.calibration` says what the map is).

The model runs on the cache's validation rows that carry an age label, as the analyzer runs
it (test-time flip unless ``flip=False``), ignoring any calibration the checkpoint already
has; the map from those predictions to the true ages replaces it. Validation rows only: the
test split stays unseen, so test figures after calibration remain test figures.
:func:`calibration_effect` measures a stored map on the validation and test splits
(``benchmarks/calibration_effect.py`` prints it as the model card's table).
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


#: the age groups of :func:`calibration_effect` (true age in [low, high))
GROUPS = {"all": (0, np.inf), "under 18": (0, 18), "60 and over": (60, np.inf)}


def calibration_effect(checkpoint: str | Path, cache_dir: str | Path, task: str = "age",
                       splits: tuple[str, ...] = ("val", "test"), flip: bool = True
                       ) -> list[dict]:
    """One row per split: ``{"split", "rows", GROUP: (mae_before, mae_after), ...}`` for the
    groups of :data:`GROUPS` (true value in [low, high)); a group with no face is left out.

    Raises:
        ValueError: the checkpoint has no head or no stored calibration for ``task``.
    """
    model = FaceModel.from_checkpoint(checkpoint, flip=flip)
    if task not in model.tasks:
        raise ValueError(f"{checkpoint} has no {task!r} head")
    mapping = model.calibration.get(task)
    if mapping is None:
        raise ValueError(f"{checkpoint} carries no {task!r} calibration "
                         "(facefuse model calibrate fits one)")
    cache = TrainingCache.open(cache_dir)
    out = []
    for split in splits:
        predicted, true = raw_predictions(model, cache, task, split)
        calibrated = apply_monotone_map(predicted, mapping)
        row: dict = {"split": split, "rows": len(true)}
        for name, (low, high) in GROUPS.items():
            inside = (true >= low) & (true < high)
            if inside.any():
                row[name] = (float(np.abs(predicted[inside] - true[inside]).mean()),
                             float(np.abs(calibrated[inside] - true[inside]).mean()))
        out.append(row)
    return out
