"""Any facefuse checkpoint used on face crops: preprocessing from its metadata, every head
decoded into named predictions, the trunk vector and the identity embedding."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from facefuse.data.augment import FLIP_68
from facefuse.inference.backends import BACKENDS, onnxruntime_installed
from facefuse.models.checkpoint import Checkpoint, load_checkpoint
from facefuse.tasks import TASK_ORDER, TaskKind, get_task
from facefuse.train.calibration import apply_monotone_map, monotone_knots
from facefuse.train.loop import regression_scale

IMAGENET_NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
log = logging.getLogger(__name__)


def unflip_output(task: str, output: torch.Tensor) -> torch.Tensor:
    """A head's output on mirrored crops, put back in the unmirrored crop's terms: 68
    landmarks (normalised 0..1) are mirrored in x and their left/right points swapped;
    every other output is the same quantity either way."""
    if task != "landmarks" or output.shape[1] != 2 * len(FLIP_68):
        return output
    pts = output.reshape(len(output), -1, 2)
    pts = torch.stack([1 - pts[..., 0], pts[..., 1]], dim=-1)[:, list(FLIP_68)]
    return pts.reshape(len(output), -1)


class FaceModel:
    """Runs a multi-task checkpoint on HxWx3 uint8 RGB face crops of any size.

    Args:
        checkpoint: a loaded checkpoint.
        device: where the model runs.
        flip: test-time flip: run every crop and its mirror image in one batch and average
            the two (logits, age, attribute scores, trunk features; the mirror's landmarks
            are mirrored back and their left/right points swapped first). About twice the
            model's cost; see ``docs/MODEL_CARD.md`` for what it gains.
        backend: ``torch``, ``onnxruntime`` (CPU only; the model is exported in memory
            when the FaceModel is made, :mod:`facefuse.inference.onnx_runner`, and runs on
            as many threads as torch is set to use), or ``auto``: ONNX Runtime on the CPU
            when onnx and onnxruntime are installed and the model exports, else PyTorch.
            ``backend`` after construction says which one runs.
    """

    def __init__(self, checkpoint: Checkpoint, device: str | torch.device = "cpu",
                 flip: bool = False, backend: str = "torch") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        if backend == "onnxruntime" and torch.device(device).type != "cpu":
            raise ValueError("backend 'onnxruntime' runs on the CPU; use device='cpu'")
        self.flip = flip
        self.meta = checkpoint.meta
        self.model = checkpoint.model.to(device).eval()
        self.device = torch.device(device)
        self.size = int(self.meta.get("input_size") or self.model.trunk.image_size)
        norm = self.meta.get("normalisation") or IMAGENET_NORM
        self.mean = torch.tensor(norm["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(norm["std"], dtype=torch.float32).view(1, 3, 1, 1)
        self.tasks = [t for t in self.model.heads if t in TASK_ORDER]
        self.calibration = dict(self.meta.get("calibration") or {})
        for task, mapping in self.calibration.items():  # a bad map fails here, not mid-batch
            if task not in self.tasks:
                raise ValueError(f"checkpoint calibrates {task!r}, which it has no head for")
            monotone_knots(mapping)
        self.runner = None
        self.backend = "torch"
        if backend == "onnxruntime" or (backend == "auto" and self.device.type == "cpu"
                                        and onnxruntime_installed()):
            from facefuse.inference.onnx_runner import OnnxRunner

            try:
                self.runner = OnnxRunner(self.model, self.size,
                                         threads=torch.get_num_threads())
                self.backend = "onnxruntime"
            except Exception as exc:  # auto: any export or session failure falls back
                if backend == "onnxruntime":
                    raise
                log.warning("ONNX Runtime cannot run this model (%s: %s); running it in "
                            "PyTorch", type(exc).__name__, exc)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu",
                        flip: bool = False, backend: str = "torch") -> FaceModel:
        return cls(load_checkpoint(path, device), device, flip, backend)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Trunk features and every head's output for a preprocessed batch."""
        if self.runner is not None:
            return self.runner.run(x)
        features = self.model.forward_features(x)
        return features, {t: head(features) for t, head in self.model.heads.items()}

    @property
    def feature_dim(self) -> int:
        return self.model.feature_dim

    def preprocess(self, faces: Sequence[np.ndarray]) -> torch.Tensor:
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
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
        return ((x - self.mean) / self.std).to(self.device)

    @torch.no_grad()
    def raw(self, faces: Sequence[np.ndarray]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Trunk features and raw head outputs for a batch of crops."""
        x = self.preprocess(faces)
        if not self.flip:
            return self._forward(x)
        n = len(x)
        both, raw = self._forward(torch.cat([x, x.flip(3)]))
        outputs = {t: (o[:n] + unflip_output(t, o[n:])) / 2 for t, o in raw.items()}
        return (both[:n] + both[n:]) / 2, outputs

    @torch.no_grad()
    def raw_views(self, views: Sequence[Sequence[np.ndarray]]
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`raw` over several crops of each face, averaged: ``views[k][i]`` is view
        ``k`` of face ``i`` (view 0 the main crop; others, say, wider or tighter). Every
        output and the trunk features are the mean over views, except landmarks, which come
        from view 0 alone (each view's points are in its own crop's frame)."""
        if not views or len({len(v) for v in views}) != 1:
            raise ValueError(f"views must be one or more equally long lists of crops, got "
                             f"lengths {[len(v) for v in views]}")
        n, k = len(views[0]), len(views)
        if k == 1:  # one view: plain raw, nothing to average
            return self.raw(views[0])
        features, outputs = self.raw([face for view in views for face in view])
        mean = {t: o[:n] if t == "landmarks" else o.reshape(k, n, *o.shape[1:]).mean(0)
                for t, o in outputs.items()}
        return features.reshape(k, n, *features.shape[1:]).mean(0), mean

    def predict_views(self, views: Sequence[Sequence[np.ndarray]]) -> list[dict[str, Any]]:
        """:meth:`predict` of :meth:`raw_views`: one decoded prediction per face, landmarks
        in view 0's crop pixels."""
        if len(views) and len(views[0]) == 0:
            return []
        return self.decode(views[0], *self.raw_views(views))

    def features(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """The trunk's feature vector per crop, (N, feature_dim)."""
        if len(faces) == 0:
            return np.zeros((0, self.feature_dim), np.float32)
        return self.raw(faces)[0].float().cpu().numpy()

    def predict(self, faces: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        """Every head decoded per crop: class label and probabilities, age in years
        (through the checkpoint's calibration map when it has one), attributes as
        booleans (the checkpoint's thresholds, else 0.5), landmarks in the
        crop's pixels, the identity embedding (unit length)."""
        if len(faces) == 0:
            return []
        return self.decode(faces, *self.raw(faces))

    def decode(self, faces: Sequence[np.ndarray], features: torch.Tensor,
               outputs: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """:meth:`predict`'s decoding of one :meth:`raw` pass (reuse it when the features
        are needed too, instead of running the model twice)."""
        out: list[dict[str, Any]] = [{} for _ in faces]
        for t in self.tasks:
            task = get_task(t)
            o = outputs[t].float().cpu()
            if task.kind is TaskKind.CLASSIFICATION:
                probs = torch.softmax(o, dim=1).numpy()
                for i, p in enumerate(probs):
                    out[i][t] = {"label": task.label_names[int(p.argmax())],
                                 "probabilities": {n: round(float(v), 4) for n, v in
                                                   zip(task.label_names, p, strict=True)}}
            elif task.kind is TaskKind.REGRESSION:
                for i, v in enumerate(self.regression_values(t, o)):
                    out[i][t] = round(float(v), 2)
            elif task.kind is TaskKind.MULTI_LABEL:
                probs = torch.sigmoid(o).numpy()
                thr = np.asarray(self.meta.get("thresholds") or [0.5] * probs.shape[1])
                for i, p in enumerate(probs):
                    out[i][t] = {n: bool(v >= th) for n, v, th in
                                 zip(task.label_names, p, thr, strict=True)}
                    out[i][f"{t}_scores"] = {n: round(float(v), 4) for n, v in
                                             zip(task.label_names, p, strict=True)}
            elif task.kind is TaskKind.LANDMARKS:
                pts = o.numpy().reshape(len(o), -1, 2)
                for i, face in enumerate(faces):
                    h, w = np.asarray(face).shape[:2]
                    out[i][t] = (pts[i] * np.array([w, h])).round(2).tolist()
            elif task.kind is TaskKind.IDENTITY:
                emb = self.embedding_from(features)
                for i in range(len(faces)):
                    out[i]["embedding"] = emb[i].round(6).tolist()
        return out

    def regression_values(self, task: str, output: torch.Tensor,
                          calibrated: bool = True) -> np.ndarray:
        """A regression head's :meth:`raw` output in the task's units (years for age), one
        value per crop; through the checkpoint's calibration map unless ``calibrated`` is
        False (``tools/calibrate_model.py`` fits the map on the uncalibrated values)."""
        values = output.float().cpu().reshape(len(output), -1)[:, 0].numpy() \
            * regression_scale(get_task(task))
        if calibrated and task in self.calibration:
            values = apply_monotone_map(values, self.calibration[task])
        return values

    @torch.no_grad()
    def embedding_from(self, features: torch.Tensor) -> np.ndarray:
        """Unit-length identity embedding (the identity head's, else the trunk vector)."""
        head = self.model.heads["identity"] if "identity" in self.model.heads else None
        if head is not None and hasattr(head, "embedding"):
            v = head.embedding(features)
        elif head is not None and len(head.net) > 1:
            v = head.net[:-1](features)
        else:
            v = features
        return torch.nn.functional.normalize(v.float(), dim=1).cpu().numpy()

    def embeddings(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        if len(faces) == 0:
            return np.zeros((0, 0), np.float32)
        return self.embedding_from(self.raw(faces)[0])
