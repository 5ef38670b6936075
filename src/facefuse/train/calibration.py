"""Post-hoc calibration of a regression head (age), fitted on validation data.

A regressor's estimate is not the best guess of the true value given that estimate: on the
validation faces the shipped model's age head estimates between 25 and 29 years, the median
true age is 26 throughout. A monotone map from predicted to true values, fitted on the
validation split, replaces each estimate by the median true value of validation faces with
similar estimates (the median is what minimises absolute error), without touching the model:

* the validation predictions are cut into ``knots`` bins of equal count (quantiles of the
  prediction); each bin gives one knot, (median prediction, median true value);
* the knots' values are made non-decreasing by pooling adjacent violators (each run of knots
  whose medians fall is replaced by its mean), so the map never reverses the order of two
  faces;
* between knots the map interpolates linearly; beyond the first and last knot it keeps the
  slope 1 (the prediction shifted by that end knot's offset), so no value is clipped.

It lowers the mean absolute error over the whole population; it does not correct an error
that depends on the true value (a group whose ages are under-estimated, as people over 60
are by the shipped model, can even get a larger error: docs/MODEL_CARD.md has the figures).

The map is stored in the checkpoint's JSON metadata under ``calibration`` (task -> map) and
applied by :mod:`facefuse.runtime.calibration` when a model's outputs are decoded, so
the analyzer, the CLI and the peer comparison all see calibrated values.
``facefuse model calibrate`` fits it for a checkpoint from its training run's cache, on
the predictions :func:`facefuse.evaluation.cache_predictions.raw_predictions` gives.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MIN_ROWS_PER_KNOT = 10


def fit_monotone_map(predicted: np.ndarray, target: np.ndarray,
                     knots: int = 24) -> dict[str, Any]:
    """The module's monotone map from ``predicted`` to ``target`` values.

    Args:
        predicted: (N,) the head's predictions on validation rows (in the task's units).
        target: (N,) the true values of the same rows.
        knots: number of bins (and knots); each needs at least 10 rows.

    Returns:
        ``{"kind": "monotone", "x": [...], "y": [...], "rows": N}``, JSON-ready.

    Raises:
        ValueError: on mismatched or non-finite inputs, or too few rows for ``knots``.
    """
    predicted = np.asarray(predicted, dtype=np.float64).ravel()
    target = np.asarray(target, dtype=np.float64).ravel()
    if predicted.shape != target.shape:
        raise ValueError(f"predicted ({len(predicted)}) and target ({len(target)}) must have "
                         f"one value per row each")
    if not (np.isfinite(predicted).all() and np.isfinite(target).all()):
        raise ValueError("predicted and target values must be finite")
    if knots < 2:
        raise ValueError(f"knots must be at least 2, got {knots}")
    if len(predicted) < knots * MIN_ROWS_PER_KNOT:
        raise ValueError(f"{len(predicted)} rows are too few for {knots} knots (at least "
                         f"{MIN_ROWS_PER_KNOT} a knot)")
    order = np.argsort(predicted, kind="stable")
    bins = np.array_split(order, knots)
    x = np.array([np.median(predicted[b]) for b in bins])
    y = pool_adjacent_violators(np.array([np.median(target[b]) for b in bins]))
    keep = np.concatenate([[True], np.diff(x) > 0])  # ties in x: keep the first knot
    return {"kind": "monotone", "x": np.round(x[keep], 4).tolist(),
            "y": np.round(y[keep], 4).tolist(), "rows": int(len(predicted))}


def pool_adjacent_violators(values: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence nearest ``values`` in squared error (equal weights):
    every run that falls is replaced by its mean."""
    blocks: list[list[float]] = []  # [sum, count] per pooled block
    for v in np.asarray(values, dtype=np.float64):
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    return np.concatenate([np.full(int(c), t / c) for t, c in blocks])

