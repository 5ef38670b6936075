"""Dynamic per-attribute loss weights from each attribute's validation-loss trend.

The rule (a Dynamic Weight Average over validation losses, per attribute). After epoch
``t >= 2``, with ``L_j(t)`` the validation loss of attribute ``j``::

    r_j = L_j(t) / L_j(t - 1)                      # > 1: the attribute got worse
    w_j = K * exp(r_j / T) / sum_k exp(r_k / T)    # K attributes, temperature T

so weights average 1, and attributes whose validation loss falls slowly or rises get more
weight in the next epoch. Before two validation losses exist, every weight is 1. A lower
``T`` sharpens the weighting; ``T -> inf`` gives static, equal weights.
"""

from __future__ import annotations

import numpy as np


class DynamicAttributeWeights:
    """Holds the current weights and updates them from a validation-loss history."""

    def __init__(self, n_attributes: int, temperature: float = 2.0) -> None:
        if n_attributes < 1:
            raise ValueError("need at least one attribute")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.n = n_attributes
        self.temperature = temperature
        self.history: list[np.ndarray] = []
        self.weights = np.ones(n_attributes, dtype=np.float64)

    def update(self, val_losses: np.ndarray) -> np.ndarray:
        """Record one epoch's per-attribute validation losses; return the new weights."""
        losses = np.asarray(val_losses, dtype=np.float64)
        if losses.shape != (self.n,):
            raise ValueError(f"expected {self.n} validation losses, got shape {losses.shape}")
        if not np.isfinite(losses).all() or (losses <= 0).any():
            raise ValueError("validation losses must be positive and finite")
        self.history.append(losses)
        self.weights = weights_from_trend(self.history, self.temperature)
        return self.weights


def weights_from_trend(history: list[np.ndarray], temperature: float = 2.0) -> np.ndarray:
    """The weights after a history of per-attribute validation losses (module rule)."""
    n = len(history[-1])
    if len(history) < 2:
        return np.ones(n)
    ratio = history[-1] / history[-2]
    z = ratio / temperature
    e = np.exp(z - z.max())
    return n * e / e.sum()
