"""What runs a model's forward pass (:class:`facefuse.inference.face_model.FaceModel`):

* ``torch``: PyTorch, on the CPU or a GPU.
* ``onnxruntime``: ONNX Runtime on the CPU; the model is exported in memory
  (:mod:`facefuse.inference.onnx_runner`). About twice PyTorch's speed a face on the
  development CPU (``docs/SPEED.md``).
* ``auto``: ONNX Runtime when the model runs on the CPU and onnx and onnxruntime are
  installed, else PyTorch (also when the export fails: a warning says why).

Kept free of heavy imports so the command line can offer the choices cheaply.
"""

from __future__ import annotations

import importlib.util

BACKENDS = ("auto", "torch", "onnxruntime")


def onnxruntime_installed() -> bool:
    """Whether the packages the ``onnxruntime`` backend needs (onnx to export the graph,
    onnxruntime to run it) can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))
