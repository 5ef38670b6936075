"""Calibration maps stored in a checkpoint's metadata (``calibration``: task -> map), applied
when a regression head's output is decoded. They are fitted by
:mod:`facefuse.train.calibration`; applying one needs numpy only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def monotone_knots(mapping: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The knots ``(x, y)`` of a map from
    :func:`facefuse.train.calibration.fit_monotone_map`, checked.

    Raises:
        ValueError: when ``mapping`` is not such a map.
    """
    if mapping.get("kind") != "monotone":
        raise ValueError(f"unknown calibration kind {mapping.get('kind')!r}")
    if "x" not in mapping or "y" not in mapping:
        raise ValueError("a monotone calibration needs its knots, x and y")
    x, y = np.asarray(mapping["x"], np.float64), np.asarray(mapping["y"], np.float64)
    if x.ndim != 1 or x.shape != y.shape or len(x) < 1 or (np.diff(x) <= 0).any() \
            or (np.diff(y) < 0).any():
        raise ValueError("a monotone calibration needs increasing x and non-decreasing y "
                         "knots of the same length")
    return x, y


def apply_monotone_map(values: np.ndarray, mapping: Mapping[str, Any]) -> np.ndarray:
    """``values`` through a map from
    :func:`facefuse.train.calibration.fit_monotone_map` (same shape as ``values``).

    Raises:
        ValueError: when ``mapping`` is not such a map.
    """
    x, y = monotone_knots(mapping)
    v = np.asarray(values, dtype=np.float64)
    out = np.interp(v, x, y)
    out = np.where(v < x[0], v + (y[0] - x[0]), out)
    return np.where(v > x[-1], v + (y[-1] - x[-1]), out)
