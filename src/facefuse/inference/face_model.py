"""Any facefuse model used on face crops: preprocessing from its metadata, every head decoded
into named predictions, the trunk vector and the identity embedding.

A model is ``BASE.json`` beside ``BASE.onnx`` (a shipped or exported graph: ONNX Runtime
runs it, no torch needed) and/or ``BASE.safetensors`` (a PyTorch checkpoint: needs the
training extra; it is exported to ONNX Runtime in memory on the CPU, or run by PyTorch).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from facefuse.extras import MissingExtra, has_training_extra
from facefuse.inference.backends import BACKENDS
from facefuse.runtime.decoding import OutputDecoder, unflip_output, unit_rows
from facefuse.runtime.graph import check_device_name
from facefuse.runtime.model_files import checkpoint_paths, graph_path, read_model_meta
from facefuse.runtime.model_graph import ModelGraph
from facefuse.tasks import TASK_ORDER

IMAGENET_NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
#: the crop margin a model was trained with when its metadata does not say
DEFAULT_CROP_MARGIN = 0.2
log = logging.getLogger(__name__)

Raw = tuple[np.ndarray, dict[str, np.ndarray]]


class ModelForward(Protocol):
    """What runs a model: ``(features, head outputs, identity vector or None)`` for a
    normalised float32 batch (N, 3, S, S)."""

    backend: str
    head_names: list[str]
    feature_dim: int | None

    def __call__(self, images: np.ndarray
                 ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]: ...


class FaceModel:
    """Runs a multi-task model on HxWx3 uint8 RGB face crops of any size.

    Args:
        meta: the model's JSON metadata (input size, normalisation, label names, calibration,
            thresholds, crop margin).
        forward: what computes the outputs (:class:`ModelGraph` for ONNX Runtime, or
            :class:`facefuse.inference.torch_forward.TorchForward`).
        flip: test-time flip: run every crop and its mirror image in one batch and average
            the two (logits, age, attribute scores, trunk features, identity vector; the
            mirror's landmarks are mirrored back and their left/right points swapped first).
            About twice the model's cost; ``docs/MODEL_CARD.md`` says what it gains.

    Use :meth:`load` to open a model from its files. ``backend`` says what runs it
    (``onnxruntime`` or ``torch``); raw outputs are numpy arrays.
    """

    def __init__(self, meta: dict, forward: ModelForward, flip: bool = False) -> None:
        self.flip = flip
        self.meta = meta
        self.forward = forward
        self.backend = forward.backend
        size = meta.get("input_size") or (meta.get("spec") or {}).get(
            "trunk_options", {}).get("image_size")
        if not size:
            raise ValueError("the model's metadata gives no input_size")
        self.size = int(size)
        norm = meta.get("normalisation") or IMAGENET_NORM
        self.mean = np.asarray(norm["mean"], np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(norm["std"], np.float32).reshape(1, 3, 1, 1)
        self.tasks = [t for t in forward.head_names if t in TASK_ORDER]
        self.decoder = OutputDecoder(meta, self.tasks)
        self.crop_margin = float(meta.get("crop_margin", DEFAULT_CROP_MARGIN))

    # -- opening a model --------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, device: str = "auto", flip: bool = False,
             backend: str = "auto") -> FaceModel:
        """Open the model at ``path`` (``BASE`` or any of its files).

        Args:
            device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
            backend: ``auto``: the ``.onnx`` graph in ONNX Runtime when there is one (CUDA
                when this onnxruntime has it and ``device`` allows), else the ``.safetensors``
                checkpoint exported in memory to ONNX Runtime on the CPU, or run by PyTorch
                on a GPU; ``onnxruntime`` or ``torch`` to choose.

        Raises:
            FileNotFoundError: neither a graph nor a checkpoint at ``path``.
            MissingExtra: only a PyTorch checkpoint, and torch is not installed.
            ValueError: an unknown backend or device, or unreadable metadata.
        """
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        check_device_name(device)
        weights, graph = checkpoint_paths(path)[0], graph_path(path)
        if not weights.is_file() and not graph.is_file():
            raise FileNotFoundError(f"no model at {path}: neither {graph.name} nor "
                                    f"{weights.name} exists there")
        meta = read_model_meta(path)
        use_graph = graph.is_file() and (backend == "onnxruntime" or (
            backend == "auto" and not (device.startswith("cuda") and weights.is_file()
                                       and has_training_extra())))
        if use_graph:
            return cls(meta, ModelGraph(graph, device), flip)
        if not weights.is_file():
            raise ValueError(f"{path} is an ONNX graph only; backend 'torch' needs its "
                             f"PyTorch checkpoint {weights.name}")
        if not has_training_extra():
            raise MissingExtra(f"{weights} is a PyTorch checkpoint: running it needs the "
                               f"training extra (pip install 'facefuse[train]'), or export "
                               f"it first with `facefuse export-onnx`")
        from facefuse.models.checkpoint import load_checkpoint

        return cls.from_loaded(load_checkpoint(path), device, flip, backend)

    from_checkpoint = load

    @classmethod
    def from_loaded(cls, checkpoint: Any, device: str = "cpu", flip: bool = False,
                    backend: str = "torch") -> FaceModel:
        """A model from a loaded PyTorch :class:`~facefuse.models.checkpoint.Checkpoint`
        (needs the training extra); ``backend`` as in :meth:`load`."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        from facefuse.inference.torch_forward import checkpoint_forward

        meta = dict(checkpoint.meta)
        meta.setdefault("input_size", getattr(checkpoint.model.trunk, "image_size", None))
        return cls(meta, checkpoint_forward(checkpoint, str(device), backend), flip)

    # -- running it -------------------------------------------------------------------------
    @property
    def feature_dim(self) -> int | None:
        return self.forward.feature_dim

    @property
    def calibration(self) -> dict[str, dict]:
        """Task -> the calibration map its decoded values go through."""
        return self.decoder.calibration

    def preprocess(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """Crops as the model's normalised float32 batch (N, 3, S, S)."""
        arrays = []
        for i, face in enumerate(faces):
            face = np.asarray(face)
            if face.ndim != 3 or face.shape[2] != 3 or face.dtype != np.uint8:
                raise ValueError(f"face {i}: expected an HxWx3 uint8 RGB array, got "
                                 f"{face.shape} {face.dtype}")
            if face.shape[:2] != (self.size, self.size):
                face = np.asarray(Image.fromarray(face).resize((self.size, self.size),
                                                               Image.BILINEAR))
            arrays.append(face)
        x = np.stack(arrays).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        return (x - self.mean) / self.std

    def _run(self, faces: Sequence[np.ndarray]
             ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
        x = self.preprocess(faces)
        if not self.flip:
            return self.forward(x)
        n = len(x)
        both, raw, emb = self.forward(np.concatenate([x, x[..., ::-1]]))
        outputs = {t: (o[:n] + unflip_output(t, o[n:])) / 2 for t, o in raw.items()}
        return (both[:n] + both[n:]) / 2, outputs, \
            None if emb is None else (emb[:n] + emb[n:]) / 2

    def raw(self, faces: Sequence[np.ndarray]) -> Raw:
        """Trunk features and raw head outputs (numpy) for a batch of crops."""
        features, outputs, _ = self._run(faces)
        return features, outputs

    def _run_views(self, views: Sequence[Sequence[np.ndarray]]
                   ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
        if not views or len({len(v) for v in views}) != 1:
            raise ValueError(f"views must be one or more equally long lists of crops, got "
                             f"lengths {[len(v) for v in views]}")
        n, k = len(views[0]), len(views)
        if k == 1:  # one view: nothing to average
            return self._run(views[0])
        features, outputs, emb = self._run([face for view in views for face in view])

        def mean(a: np.ndarray) -> np.ndarray:
            return a.reshape(k, n, *a.shape[1:]).mean(0)

        return mean(features), {t: o[:n] if t == "landmarks" else mean(o)
                                for t, o in outputs.items()}, None if emb is None else mean(emb)

    def raw_views(self, views: Sequence[Sequence[np.ndarray]]) -> Raw:
        """:meth:`raw` over several crops of each face, averaged: ``views[k][i]`` is view
        ``k`` of face ``i`` (view 0 the main crop; others, say, wider or tighter). Every
        output and the trunk features are the mean over views, except landmarks, which come
        from view 0 alone (each view's points are in its own crop's frame)."""
        features, outputs, _ = self._run_views(views)
        return features, outputs

    def predict_views(self, views: Sequence[Sequence[np.ndarray]]) -> list[dict[str, Any]]:
        """:meth:`predict` over :meth:`raw_views`: one decoded prediction per face,
        landmarks in view 0's crop pixels."""
        return self.predict_views_and_features(views)[0]

    def predict_views_and_features(self, views: Sequence[Sequence[np.ndarray]]
                                   ) -> tuple[list[dict[str, Any]], np.ndarray,
                                              dict[str, np.ndarray]]:
        """:meth:`predict_views`, and the trunk features (N, feature_dim) and raw head
        outputs of the same pass (what plug-ins that fuse with the heads read)."""
        if len(views) and len(views[0]) == 0:
            return [], np.zeros((0, self.feature_dim or 0), np.float32), {}
        features, outputs, emb = self._run_views(views)
        return (self._decode(views[0], features, outputs, emb), features.astype(np.float32),
                outputs)

    def features(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """The trunk's feature vector per crop, (N, feature_dim)."""
        if len(faces) == 0:
            return np.zeros((0, self.feature_dim or 0), np.float32)
        return self.raw(faces)[0].astype(np.float32)

    def predict(self, faces: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        """Every head decoded per crop: class label and probabilities, age in years
        (through the model's calibration map when it has one), attributes as booleans (the
        model's thresholds, else 0.5), landmarks in the crop's pixels, the identity
        embedding (unit length)."""
        if len(faces) == 0:
            return []
        return self._decode(faces, *self._run(faces))

    def _decode(self, faces: Sequence[np.ndarray], features: np.ndarray,
                outputs: dict[str, np.ndarray], emb: np.ndarray | None
                ) -> list[dict[str, Any]]:
        sizes = [tuple(np.asarray(f).shape[:2]) for f in faces]
        return self.decoder.decode(sizes, outputs, features if emb is None else emb)

    def regression_values(self, task: str, output: np.ndarray,
                          calibrated: bool = True) -> np.ndarray:
        """A regression head's :meth:`raw` output in the task's units (years for age), one
        value per crop; through the model's calibration map unless ``calibrated`` is False
        (``facefuse model calibrate`` fits the map on the uncalibrated values)."""
        return self.decoder.regression_values(task, output, calibrated)

    def embeddings(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """Unit-length identity embeddings, (N, D)."""
        if len(faces) == 0:
            return np.zeros((0, 0), np.float32)
        features, _, emb = self._run(faces)
        return unit_rows(features if emb is None else emb)
