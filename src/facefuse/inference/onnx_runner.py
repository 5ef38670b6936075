"""Running a loaded multi-task model through ONNX Runtime on the CPU, for speed.

The model is exported in memory (the graph of :mod:`facefuse.inference.onnx_export`:
``images`` in, ``features`` and one output per head out), so nothing is written or
downloaded; the export takes about a second when the runner is made. On the development
CPU, ONNX Runtime ran one face of the shipped architecture 4 to 7 times faster than eager
PyTorch (``docs/SPEED.md`` has both figures). Needs onnx and onnxruntime (dependencies of facefuse).
"""

from __future__ import annotations

import io

import numpy as np
import torch

from facefuse.inference.onnx_export import export_graph
from facefuse.models.multitask import MultiTaskModel


class OnnxRunner:
    """``run(images)`` gives the trunk features and each head's raw output, as
    ``model.forward_features`` and the heads would, computed by ONNX Runtime."""

    def __init__(self, model: MultiTaskModel, size: int, threads: int | None = None) -> None:
        try:
            import onnx  # noqa: F401  (torch's exporter needs it)
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError(f"backend 'onnxruntime' needs onnx and onnxruntime ({exc}): "
                              f"pip install onnx onnxruntime") from exc
        buffer = io.BytesIO()
        self.names = export_graph(model, size, buffer)[1:]  # after "features"
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(buffer.getvalue(), options,
                                            providers=["CPUExecutionProvider"])

    def run(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        arrays = self.session.run(None, {"images": np.ascontiguousarray(
            images.detach().cpu().numpy(), dtype=np.float32)})
        features, *heads = (torch.from_numpy(a) for a in arrays)
        return features, dict(zip(self.names, heads, strict=True))
