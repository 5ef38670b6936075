"""A multi-task model's ONNX graph, run without torch: ``images`` (N, 3, S, S, normalised as
the metadata says) in; ``features`` (the trunk's vector), ``embedding`` (the identity vector
before normalisation) and one raw output per task head out, named by task. Written by
:func:`facefuse.models.onnx_export.export_onnx` (the ship step) or exported in memory from a
PyTorch checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facefuse.runtime.graph import OnnxGraph

FEATURES = "features"
EMBEDDING = "embedding"


class ModelGraph:
    """Calls an :class:`OnnxGraph` that follows the contract above.

    ``model(images)`` gives ``(features, outputs, embedding)``: numpy arrays, ``outputs``
    a dict task -> raw head output; ``embedding`` is None for a graph exported without it.

    Raises:
        ValueError: the graph has no ``features`` output.
    """

    backend = "onnxruntime"

    def __init__(self, model: str | Path | bytes, device: str = "cpu",
                 threads: int | None = None) -> None:
        self.graph = OnnxGraph(model, device, threads)
        names = self.graph.output_names
        if FEATURES not in names:
            where = "the graph" if isinstance(model, bytes) else model
            raise ValueError(f"{where}: not a facefuse model graph (outputs {names}, no "
                             f"{FEATURES!r})")
        self.head_names = [n for n in names if n not in (FEATURES, EMBEDDING)]
        self.device = "cuda" if self.graph.on_gpu else "cpu"
        shape = self.graph.session.get_outputs()[names.index(FEATURES)].shape
        self.feature_dim = int(shape[-1]) if isinstance(shape[-1], int) else None

    def __call__(self, images: np.ndarray
                 ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
        out = self.graph.run(images)
        return (out[FEATURES], {n: out[n] for n in self.head_names}, out.get(EMBEDDING))
