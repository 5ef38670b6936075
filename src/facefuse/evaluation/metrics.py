"""Metrics by name, on numpy arrays of predictions and labels.

Each metric takes ``(prediction, target)`` for labelled rows only (the caller masks) and
returns a float. Classification predictions are class indices; multi-label predictions are
0/1 decisions; regression predictions are values; landmarks are ``(N, K, 2)`` arrays.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from facefuse.registry import Registry
from facefuse.tasks import OUTER_EYE_CORNERS_68

MetricFn = Callable[[np.ndarray, np.ndarray], float]
METRICS: Registry[MetricFn] = Registry("metric")

#: NME above which a face counts as a landmark failure (the common 300-W convention).
FAILURE_THRESHOLD = 0.08


def _nonempty(target: np.ndarray, name: str) -> None:
    if len(target) == 0:
        raise ValueError(f"{name}: no labelled samples to evaluate")


@METRICS.register("accuracy")
def accuracy(prediction: np.ndarray, target: np.ndarray) -> float:
    """Share of exact matches."""
    _nonempty(target, "accuracy")
    return float(np.mean(np.asarray(prediction) == np.asarray(target)))


@METRICS.register("balanced_accuracy")
def balanced_accuracy(prediction: np.ndarray, target: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``target``."""
    _nonempty(target, "balanced_accuracy")
    target, prediction = np.asarray(target), np.asarray(prediction)
    return float(np.mean([np.mean(prediction[target == c] == c) for c in np.unique(target)]))


@METRICS.register("mae")
def mae(prediction: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute error."""
    _nonempty(target, "mae")
    return float(np.mean(np.abs(np.asarray(prediction, float) - np.asarray(target, float))))


def _attribute_masks(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {prediction.shape} != target shape {target.shape}")
    return target >= 0


def per_attribute_accuracy(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Accuracy per attribute column over its labelled entries (NaN where none)."""
    known = _attribute_masks(prediction, target)
    hits = (prediction == target) & known
    with np.errstate(invalid="ignore", divide="ignore"):
        return hits.sum(0) / known.sum(0)


def per_attribute_balanced_accuracy(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Mean of true-positive and true-negative rates per attribute (NaN where undefined)."""
    known = _attribute_masks(prediction, target)
    pos, neg = known & (target == 1), known & (target == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = ((prediction == 1) & pos).sum(0) / pos.sum(0)
        tnr = ((prediction == 0) & neg).sum(0) / neg.sum(0)
    return (tpr + tnr) / 2


@METRICS.register("mean_attribute_accuracy")
def mean_attribute_accuracy(prediction: np.ndarray, target: np.ndarray) -> float:
    """Mean over attributes of per-attribute accuracy."""
    _nonempty(target, "mean_attribute_accuracy")
    return float(np.nanmean(per_attribute_accuracy(prediction, target)))


@METRICS.register("mean_balanced_accuracy")
def mean_balanced_accuracy(prediction: np.ndarray, target: np.ndarray) -> float:
    """Mean over attributes of per-attribute balanced accuracy."""
    _nonempty(target, "mean_balanced_accuracy")
    return float(np.nanmean(per_attribute_balanced_accuracy(prediction, target)))


def nme_per_face(prediction: np.ndarray, target: np.ndarray,
                 eye_corners: tuple[int, int] = OUTER_EYE_CORNERS_68) -> np.ndarray:
    """Mean point-to-point error per face divided by the outer-eye-corner distance."""
    prediction = np.asarray(prediction, float).reshape(len(target), -1, 2)
    target = np.asarray(target, float).reshape(len(target), -1, 2)
    iod = np.linalg.norm(target[:, eye_corners[0]] - target[:, eye_corners[1]], axis=1)
    if (iod <= 0).any():
        raise ValueError("inter-ocular distance is zero for some face; cannot normalise")
    return np.linalg.norm(prediction - target, axis=2).mean(axis=1) / iod


@METRICS.register("nme_inter_ocular")
def nme_inter_ocular(prediction: np.ndarray, target: np.ndarray) -> float:
    """Mean NME over faces, normalised by the inter-ocular (outer eye corner) distance."""
    _nonempty(target, "nme_inter_ocular")
    return float(nme_per_face(prediction, target).mean())


@METRICS.register("failure_rate")
def failure_rate(prediction: np.ndarray, target: np.ndarray) -> float:
    """Share of faces whose NME exceeds :data:`FAILURE_THRESHOLD`."""
    _nonempty(target, "failure_rate")
    return float((nme_per_face(prediction, target) > FAILURE_THRESHOLD).mean())


#: metrics where a lower value is better; every other metric is better higher
LOWER_IS_BETTER = frozenset({"mae", "nme_inter_ocular", "failure_rate"})


def primary_metric(task) -> tuple[str, bool]:
    """A task's primary metric (its first), which selects the best epoch, and whether
    higher is better."""
    metric = task.metrics[0]
    return metric, metric not in LOWER_IS_BETTER
