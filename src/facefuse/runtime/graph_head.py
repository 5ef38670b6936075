"""A head that is an ONNX graph on a named feature block: a fine-tuned copy of an identity
network's last blocks (a *tail*, fitted by :mod:`facefuse.train.identity_tail`) reading the
map the network gives at the cut, and giving one value per face (an age in years). The
identity heads (:mod:`facefuse.inference.identity_heads`) fuse its value with the prediction
made before it. numpy and ONNX Runtime only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facefuse.runtime.graph import OnnxGraph


@dataclass
class GraphHead:
    """One task's value from an ONNX graph that reads one feature block.

    Args:
        task: the task it predicts (a regression: ``age``).
        feature: the block it reads (``<network>:<block>``, as
            :meth:`facefuse.inference.identity.FusedIdentity.describe` names them).
        graph: the ``.onnx`` file: input (N, width) float32, first output (N,) or (N, 1),
            in the task's units.
        fusion_weight: its share in the weighted mean with the prediction before it.
        value_range: the values are clipped to it (None: not clipped).
    """

    task: str
    feature: str
    graph: Path
    fusion_weight: float
    value_range: tuple[float, float] | None = None
    _session: OnnxGraph | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.fusion_weight <= 1.0:
            raise ValueError(f"{self.task}: fusion_weight must be within [0, 1], got "
                             f"{self.fusion_weight}")
        if not Path(self.graph).is_file():
            raise FileNotFoundError(f"the {self.task} tail's graph {self.graph} is missing")

    def values(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """The value (N,) of each face whose features are given by name.

        Raises:
            KeyError: the block it reads is missing.
            ValueError: the graph cannot be loaded, or the block's width is not the graph's.
        """
        if self.feature not in features:
            raise KeyError(f"the {self.task} tail reads {self.feature!r}, which the identity "
                           f"networks did not give (valid: {sorted(features)})")
        x = np.asarray(features[self.feature], np.float32)
        if not len(x):
            return np.zeros(0, np.float64)
        x = x.reshape(len(x), -1)
        if self._session is None:
            self._session = OnnxGraph(self.graph)
        shape = self._session.session.get_inputs()[0].shape
        if isinstance(shape[-1], int) and shape[-1] != x.shape[1]:
            raise ValueError(f"the {self.task} tail takes {shape[-1]} features, "
                             f"{self.feature!r} has {x.shape[1]}")
        out = next(iter(self._session.run(x).values()))
        values = np.asarray(out, np.float64).reshape(len(x), -1)[:, 0]
        return values if self.value_range is None else np.clip(values, *self.value_range)
