"""A PyTorch checkpoint as a :class:`~facefuse.inference.face_model.FaceModel` runs it: on a
torch device, or exported in memory to ONNX Runtime. Needs the training extra (torch); the
face model imports this module only for a ``.safetensors`` checkpoint, never for a shipped
or exported ``.onnx`` graph.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import torch

from facefuse.models.checkpoint import Checkpoint
from facefuse.models.onnx_export import export_graph, input_size
from facefuse.runtime.model_graph import ModelGraph

log = logging.getLogger(__name__)


class TorchForward:
    """``forward(images)`` as :class:`ModelGraph` gives it, computed by PyTorch."""

    backend = "torch"

    def __init__(self, checkpoint: Checkpoint, device: str | torch.device) -> None:
        self.device = torch.device(device)
        self.model = checkpoint.model.to(self.device).eval()
        self.head_names = list(self.model.heads)
        self.feature_dim = self.model.feature_dim

    @torch.no_grad()
    def __call__(self, images: np.ndarray
                 ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
        x = torch.from_numpy(np.ascontiguousarray(images, np.float32)).to(self.device)
        features = self.model.forward_features(x)
        heads = {t: h(features).float().cpu().numpy() for t, h in self.model.heads.items()}
        embedding = self.model.identity_vector(features).float().cpu().numpy()
        return features.float().cpu().numpy(), heads, embedding


def checkpoint_forward(checkpoint: Checkpoint, device: str, backend: str
                       ) -> TorchForward | ModelGraph:
    """How a loaded checkpoint runs: ``torch`` on ``device``; ``onnxruntime`` exported in
    memory (CPU); ``auto``: ONNX Runtime on the CPU, falling back to PyTorch (with a
    warning) when the export fails, and PyTorch on a GPU."""
    from facefuse.devices import resolve_device

    dev = resolve_device("cpu" if backend == "onnxruntime" and device == "auto" else device)
    if backend == "onnxruntime" and dev.type != "cpu":
        raise ValueError("backend 'onnxruntime' runs a PyTorch checkpoint on the CPU; use "
                         "device='cpu'")
    if backend == "torch" or dev.type != "cpu":
        return TorchForward(checkpoint, dev)
    try:
        buffer = io.BytesIO()
        export_graph(checkpoint.model.eval(), input_size(checkpoint.meta, checkpoint.model),
                     buffer)
        return ModelGraph(buffer.getvalue(), "cpu", threads=torch.get_num_threads())
    except Exception as exc:  # auto: any export or session failure falls back
        if backend == "onnxruntime":
            raise
        log.warning("ONNX Runtime cannot run this model (%s: %s); running it in PyTorch",
                    type(exc).__name__, exc)
        return TorchForward(checkpoint, dev)
