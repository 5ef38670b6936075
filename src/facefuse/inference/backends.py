"""What runs a model's forward pass (:meth:`facefuse.inference.face_model.FaceModel.load`):

* ``onnxruntime``: ONNX Runtime; a model's ``.onnx`` graph as it is (the shipped model is
  one; no torch needed), or a PyTorch checkpoint exported in memory (CPU only).
* ``torch``: PyTorch, on the CPU or a GPU (a ``.safetensors`` checkpoint; the training
  extra).
* ``auto``: the ``.onnx`` graph when there is one, else a checkpoint exported to ONNX
  Runtime on the CPU, or run by PyTorch on a GPU or where the export fails (a warning says
  why).

Kept free of heavy imports so the command line can offer the choices cheaply.
"""

from __future__ import annotations

BACKENDS = ("auto", "torch", "onnxruntime")

