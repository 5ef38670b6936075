"""Adaptive per-attribute decision thresholds, chosen on validation data.

The rule: for each attribute, every threshold on the predicted probability from 0.02 to
0.98 in steps of 0.01 is tried on the validation rows that carry the label, and the one with
the best objective (accuracy by default, or balanced accuracy, the mean of the true-positive
and true-negative rates) is kept; ties go to the threshold nearest 0.5. An attribute whose
validation labels are all one class keeps 0.5. A rare attribute then gets a threshold that
matches its base rate instead of the 0.5 that a model trained on imbalanced data misses.
"""

from __future__ import annotations

import numpy as np

GRID = np.round(np.arange(0.02, 0.985, 0.01), 2)
OBJECTIVES = ("accuracy", "balanced_accuracy")


def _objective(pred: np.ndarray, target: np.ndarray, objective: str) -> np.ndarray:
    """Objective per candidate: pred (G, N) bool, target (N,) 0/1."""
    if objective == "accuracy":
        return (pred == target[None].astype(bool)).mean(1)
    pos, neg = target == 1, target == 0
    tpr = pred[:, pos].mean(1)
    tnr = (~pred[:, neg]).mean(1)
    return (tpr + tnr) / 2


def select_thresholds(probabilities: np.ndarray, targets: np.ndarray,
                      objective: str = "accuracy") -> np.ndarray:
    """Per-attribute thresholds (module rule).

    Args:
        probabilities: (N, K) predicted probabilities.
        targets: (N, K) labels, 1 / 0, or -1 where missing.
        objective: ``accuracy`` or ``balanced_accuracy``.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    probabilities, targets = np.asarray(probabilities), np.asarray(targets)
    if probabilities.shape != targets.shape or probabilities.ndim != 2:
        raise ValueError(f"probabilities {probabilities.shape} and targets {targets.shape} "
                         f"must be the same (N, K) shape")
    out = np.full(targets.shape[1], 0.5)
    for j in range(targets.shape[1]):
        known = targets[:, j] >= 0
        t = targets[known, j]
        if len(t) == 0 or t.min() == t.max():
            continue
        pred = probabilities[known, j][None, :] >= GRID[:, None]
        value = _objective(pred, t, objective)
        best = np.flatnonzero(np.isclose(value, value.max()))
        out[j] = GRID[best[np.argmin(np.abs(GRID[best] - 0.5))]]
    return out


def apply_thresholds(probabilities: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """0/1 decisions per attribute."""
    return (np.asarray(probabilities) >= np.asarray(thresholds)[None, :]).astype(np.int8)
