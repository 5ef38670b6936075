"""Running a loaded multi-task model through ONNX Runtime on the CPU, for speed.

The model is exported in memory (the graph of :mod:`facefuse.inference.onnx_export`:
``images`` in, ``features`` and one output per head out), so nothing is written or
downloaded; the export takes a few seconds when the runner is made. On the development CPU,
ONNX Runtime ran one face of the shipped architecture 4 to 7 times faster than eager
PyTorch (``docs/SPEED.md``). Needs ``pip install 'facefuse[onnx]'``.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch

from facefuse.inference.onnx_export import _TupleOutputs
from facefuse.models.multitask import MultiTaskModel

BACKENDS = ("torch", "onnxruntime")


class OnnxRunner:
    """``run(images)`` gives the trunk features and each head's raw output, as
    ``model.forward_features`` and the heads would, computed by ONNX Runtime."""

    def __init__(self, model: MultiTaskModel, size: int, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError("backend 'onnxruntime' needs onnxruntime: pip install "
                              "'facefuse[onnx]'") from exc
        wrapper = _TupleOutputs(model).eval()
        self.names = list(wrapper.names)
        buffer = io.BytesIO()
        outputs = ["features", *self.names]
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (torch.zeros(2, 3, size, size),), buffer,
                              input_names=["images"], output_names=outputs, opset_version=17,
                              dynamic_axes={"images": {0: "batch"},
                                            **{n: {0: "batch"} for n in outputs}},
                              dynamo=False)
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
