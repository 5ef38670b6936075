"""Linear heads on named feature blocks, in numpy: standardise, a linear map, then softmax,
sigmoid or a clipped value; and the late fusion of their scores with another model's. The
identity heads (:mod:`facefuse.inference.identity_heads`) are built of them and
:mod:`facefuse.train.identity_heads` fits them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from facefuse.runtime.decoding import sigmoid, softmax

HEADS_FORMAT = "facefuse-identity-heads-1"
OUTPUTS = ("softmax", "sigmoid", "linear")


@dataclass(frozen=True)
class LinearHead:
    """One task's head: standardise the named features, then a linear map."""

    task: str
    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray  # (outputs, dim)
    bias: np.ndarray  # (outputs,)
    output: str
    labels: tuple[str, ...]
    fusion_weight: float
    value_range: tuple[float, float] | None = None
    threshold: float = 0.5

    def __post_init__(self) -> None:
        dim = self.mean.shape[0]
        if self.output not in OUTPUTS:
            raise ValueError(f"{self.task}: unknown output {self.output!r}; valid: "
                             f"{', '.join(OUTPUTS)}")
        if self.scale.shape != (dim,) or self.weight.ndim != 2 or self.weight.shape[1] != dim \
                or self.bias.shape != (self.weight.shape[0],):
            raise ValueError(f"{self.task}: inconsistent shapes (mean {self.mean.shape}, scale "
                             f"{self.scale.shape}, weight {self.weight.shape}, bias "
                             f"{self.bias.shape})")
        if self.output != "linear" and len(self.labels) != self.weight.shape[0]:
            raise ValueError(f"{self.task}: {self.weight.shape[0]} outputs for "
                             f"{len(self.labels)} labels")
        if not 0.0 <= self.fusion_weight <= 1.0:
            raise ValueError(f"{self.task}: fusion_weight must be within [0, 1], got "
                             f"{self.fusion_weight}")

    def scores(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """Class or attribute probabilities (N, outputs), or values (N,), of the faces whose
        features are given by name.

        Raises:
            KeyError: a feature the head reads is missing.
            ValueError: the features' widths do not add up to the head's.
        """
        missing = [f for f in self.features if f not in features]
        if missing:
            raise KeyError(f"the {self.task} head reads {missing}, which the identity "
                           f"networks did not give (valid: {sorted(features)})")
        x = np.concatenate([np.asarray(features[f], np.float64).reshape(
            len(features[f]), -1) for f in self.features], axis=1)
        if x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"the {self.task} head takes {self.mean.shape[0]} features, got "
                             f"{x.shape[1]}")
        z = ((x - self.mean) / self.scale) @ self.weight.T + self.bias
        if self.output == "softmax":
            return softmax(z)
        if self.output == "sigmoid":
            return sigmoid(z)
        values = z[:, 0]
        return values if self.value_range is None else np.clip(values, *self.value_range)


def fuse_scores(output: str, ident: np.ndarray, own: np.ndarray, w: float) -> np.ndarray:
    """Late fusion: the weighted mean of values or attribute probabilities, the weighted
    geometric mean of class probabilities (normalised)."""
    if output != "softmax":
        return w * ident + (1 - w) * own
    logp = w * np.log(np.maximum(ident, 1e-12)) + (1 - w) * np.log(np.maximum(own, 1e-12))
    return softmax(logp)
