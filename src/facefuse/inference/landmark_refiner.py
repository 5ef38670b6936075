"""Cascaded refinement of 68 landmarks at the image's own resolution.

The multi-task model predicts landmarks from a 96-pixel crop; each pixel there is a few
pixels of the photo, and the head regresses all 68 points from one pooled feature vector.
The refiner takes those points as its start and moves them in a few stages, each a linear
regression (ridge) from local appearance to a shape update, in the manner of the supervised
descent method (Xiong and De la Torre, CVPR 2013):

1. a similarity transform takes the current points onto the mean shape, and the image is
   warped with it into a canonical frame (``frame`` pixels, outer eye corners
   ``eye_distance`` apart), so every face is seen at one scale and roll;
2. around each point, gradient-orientation histograms (``bins`` orientations, soft-binned by
   magnitude) are pooled over a ``grid`` x ``grid`` block of square cells of the stage's side
   and normalised per point as SIFT does (L2, clip at 0.2, L2 again);
3. the stage's regression maps the 68 concatenated descriptors to the move of every point in
   the frame, which is mapped back to the image.

Cells shrink from stage to stage (coarse to fine). The stages are fitted by
:func:`facefuse.train.landmark_refiner.fit_refiner`; weights live in safetensors with a JSON
file beside them that names the configuration, the training data and the measured errors.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facefuse.config import from_dict
from facefuse.runtime.model_files import checkpoint_paths, write_weights_and_json

FORMAT = "facefuse-landmark-refiner-1"
N_POINTS = 68
EYE_CORNERS = (36, 45)


@dataclass(frozen=True)
class RefinerConfig:
    """How the refiner looks at a face and how it is fitted.

    Args:
        cells: cell side of each stage, in canonical-frame pixels (one stage per entry).
        grid: cells per side of the block pooled around each point.
        bins: gradient orientations (over the full circle).
        frame: side of the canonical frame in pixels.
        eye_distance: outer-eye-corner distance of the mean shape in the frame.
        ridge: ridge penalty per training sample (the normal equations get ``ridge`` times
            the number of samples on their diagonal; each point's descriptor has unit norm).
        perturbations: starting shapes per training image and per mirror image (the model's
            own prediction, then shapes displaced by the model's errors on other faces).
        error_scale: the model's training-set errors are scaled by a random factor around this
            when they displace a start (training-set errors are smaller than on new faces).
        seed: seed of the perturbations.
    """

    cells: tuple[int, ...] = (10, 8, 6, 4)
    grid: int = 3
    bins: int = 8
    frame: int = 160
    eye_distance: float = 52.0
    ridge: float = 0.01
    perturbations: int = 6
    error_scale: float = 1.2
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.cells or any(int(c) < 1 for c in self.cells):
            raise ValueError(f"cells must be one positive side per stage, got {self.cells}")
        for name in ("grid", "bins", "frame", "perturbations"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.eye_distance < self.frame:
            raise ValueError(f"eye_distance must be within (0, frame={self.frame}), got "
                             f"{self.eye_distance}")
        if self.ridge < 0 or self.error_scale < 0:
            raise ValueError("ridge and error_scale must not be negative")
        object.__setattr__(self, "cells", tuple(int(c) for c in self.cells))

    @property
    def descriptor_size(self) -> int:
        """Length of one face's descriptor (68 points x grid^2 cells x bins)."""
        return N_POINTS * self.grid * self.grid * self.bins

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RefinerConfig:
        """The settings a refiner's JSON stores; unknown or ill-typed ones are a
        :class:`facefuse.config.ConfigError` (a ValueError) naming the key."""
        return from_dict(cls, d, where="refiner settings")


def similarity_to(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) taking ``src`` points onto
    ``dst``, as a 2x3 matrix."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    energy = float((a ** 2).sum())
    if energy <= 1e-9:
        raise ValueError("the points coincide; no similarity transform fits them")
    c = float((a * b).sum()) / energy
    s = float((a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]).sum()) / energy
    rot = np.array([[c, -s], [s, c]])
    return np.hstack([rot, (md - rot @ ms)[:, None]])


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (N x 2) through a 2x3 affine matrix."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine matrix."""
    inv = np.linalg.inv(matrix[:, :2])
    return np.hstack([inv, (-inv @ matrix[:, 2])[:, None]])


def _grey(image: np.ndarray) -> np.ndarray:
    import cv2

    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
    raise ValueError(f"expected an HxW or HxWx3 image, got shape {image.shape}")


def shape_descriptor(image: np.ndarray, points: np.ndarray, mean_shape: np.ndarray,
                     cell: int, config: RefinerConfig) -> tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]:
    """One face's descriptor at ``points`` (68 x 2, image pixels) with cells of side ``cell``.

    Returns the descriptor (``config.descriptor_size``), the image-to-frame transform and the
    points in the frame."""
    import cv2  # imported here: the CLI builds its parser from this module's config

    to_frame = similarity_to(points, mean_shape)
    side = config.frame
    frame = cv2.warpAffine(_grey(image), to_frame, (side, side), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    gx = cv2.Sobel(frame, cv2.CV_32F, 1, 0, ksize=1)
    gy = cv2.Sobel(frame, cv2.CV_32F, 0, 1, ksize=1)
    magnitude, angle = cv2.cartToPolar(gx, gy)  # radians in [0, 2 pi)
    magnitude = magnitude.ravel()
    angle = angle.ravel() * np.float32(config.bins / (2 * np.pi))
    low = angle.astype(np.int32)  # floor: the angles are not negative
    upper_share = magnitude * (angle - low)
    low %= config.bins
    pixel = np.arange(side * side)
    maps = np.zeros((config.bins, side * side), np.float32)  # soft-binned by magnitude
    maps[low, pixel] = magnitude - upper_share
    maps[(low + 1) % config.bins, pixel] += upper_share
    maps = maps.reshape(config.bins, side, side)
    pooled = np.stack([cv2.blur(m, (cell, cell)) for m in maps])  # bins x side x side
    in_frame = apply_affine(to_frame, points)
    offsets = (np.arange(config.grid) - (config.grid - 1) / 2) * cell
    ox, oy = np.meshgrid(offsets, offsets)
    xs = np.rint(in_frame[:, :1] + ox.ravel()).astype(np.int64).clip(0, side - 1)
    ys = np.rint(in_frame[:, 1:] + oy.ravel()).astype(np.int64).clip(0, side - 1)
    desc = pooled[:, ys, xs].transpose(1, 2, 0).reshape(len(points), -1)  # point, cell, bin
    desc /= np.linalg.norm(desc, axis=1, keepdims=True) + 1e-6
    np.minimum(desc, 0.2, out=desc)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True) + 1e-6
    return desc.ravel(), to_frame, in_frame


@dataclass
class RefinerStage:
    """One stage: cell side and the linear map from descriptor to point moves (frame
    pixels, x then y per point)."""

    cell: int
    weight: np.ndarray  # descriptor_size x 136
    bias: np.ndarray  # 136

    def move(self, descriptor: np.ndarray) -> np.ndarray:
        return (descriptor @ self.weight + self.bias).reshape(N_POINTS, 2)


@dataclass
class LandmarkRefiner:
    """A fitted cascade: the mean shape in the canonical frame and one stage per cell size.

    ``meta`` carries what the JSON file says about training (data, split, errors)."""

    mean_shape: np.ndarray
    stages: list[RefinerStage]
    config: RefinerConfig
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mean_shape = np.asarray(self.mean_shape, np.float64)
        if self.mean_shape.shape != (N_POINTS, 2):
            raise ValueError(f"mean shape must be 68 x 2, got {self.mean_shape.shape}")
        for s in self.stages:
            if s.weight.shape != (self.config.descriptor_size, 2 * N_POINTS) or \
                    s.bias.shape != (2 * N_POINTS,):
                raise ValueError(f"a stage's weights are {s.weight.shape} / {s.bias.shape}; "
                                 f"the config needs ({self.config.descriptor_size}, 136) / (136,)")

    def step(self, image: np.ndarray, points: np.ndarray, stage: RefinerStage) -> np.ndarray:
        """One stage applied to ``points`` (image pixels)."""
        desc, to_frame, in_frame = shape_descriptor(image, points, self.mean_shape, stage.cell,
                                                    self.config)
        return apply_affine(invert_affine(to_frame), in_frame + stage.move(desc))

    @staticmethod
    def usable_start(points: np.ndarray) -> bool:
        """Whether ``points`` (68 x 2 image pixels) can start a refinement: finite and
        spread over at least a pixel (a collapsed prediction gives no frame to warp)."""
        pts = np.asarray(points, np.float64)
        return bool(np.isfinite(pts).all() and pts.std(0).max() >= 1.0)

    def refine(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Refined 68 points (image pixels) of the face whose first estimate is ``points``.

        ``image`` is the whole photo (HxW grey or HxWx3 RGB); points whose spread is under a
        pixel (no usable start) come back unchanged."""
        pts = np.asarray(points, np.float64)
        if pts.shape != (N_POINTS, 2):
            raise ValueError(f"expected 68 x 2 landmarks, got shape {pts.shape}")
        if not self.usable_start(pts):
            return pts
        grey = _grey(image)
        for stage in self.stages:
            pts = self.step(grey, pts, stage)
        return pts

    # -- files ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``path.safetensors`` (stage weights as float16, the rest float32) and
        ``path.json``; returns the weights file."""
        from safetensors.numpy import save_file

        tensors = {"mean_shape": self.mean_shape.astype(np.float32)}
        for k, s in enumerate(self.stages):
            tensors[f"stage{k}.weight"] = s.weight.astype(np.float16)
            tensors[f"stage{k}.bias"] = s.bias.astype(np.float32)
        doc = {"format": FORMAT, "config": asdict(self.config), **self.meta}
        return write_weights_and_json(path, lambda f: save_file(tensors, f), doc)

    @classmethod
    def load(cls, path: str | Path) -> LandmarkRefiner:
        """Read a refiner written by :meth:`save` (``path`` with or without suffix)."""
        from safetensors.numpy import load_file

        weights, info = checkpoint_paths(path)
        for f in (weights, info):
            if not f.is_file():
                raise FileNotFoundError(f"landmark refiner file {f} does not exist")
        try:
            doc = json.loads(info.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{info}: not valid JSON ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"{info}: not a facefuse landmark refiner (format "
                             f"{doc.get('format') if isinstance(doc, dict) else None!r})")
        config = RefinerConfig.from_dict(doc.get("config", {}))
        tensors = load_file(str(weights))
        try:
            stages = [RefinerStage(c, tensors[f"stage{k}.weight"].astype(np.float32),
                                   tensors[f"stage{k}.bias"].astype(np.float32))
                      for k, c in enumerate(config.cells)]
            mean_shape = tensors["mean_shape"]
        except KeyError as exc:
            raise ValueError(f"{weights}: missing tensor {exc} for the {len(config.cells)} "
                             f"stages its JSON names") from exc
        meta = {k: v for k, v in doc.items() if k not in ("format", "config")}
        return cls(mean_shape, stages, config, meta)

