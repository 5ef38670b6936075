"""Face detectors, by name, and square face crops.

Every detector works offline from a fresh install:

* ``haar``: OpenCV's frontal-face Haar cascade, shipped inside ``opencv-python-headless``
  (4.x); a box and a confidence per face, no landmarks.
* ``full_frame``: the whole image is one face (for inputs that are already face crops,
  such as aligned datasets or face-cropped videos).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from facefuse.registry import Registry


@dataclass(frozen=True)
class Detection:
    """One face: box ``(x0, y0, x1, y1)`` in pixels, a confidence, optional 5 points."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = field(default=None, compare=False)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    def to_dict(self) -> dict[str, object]:
        return {"box": [round(v, 1) for v in self.box], "score": round(self.score, 4),
                "landmarks": None if self.landmarks is None else self.landmarks.tolist()}


class FaceDetector(abc.ABC):
    name: str

    @abc.abstractmethod
    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in an HxWx3 uint8 RGB image, most confident first."""


DETECTORS: Registry[type[FaceDetector]] = Registry("face detector")


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    return rgb


@DETECTORS.register("haar")
class HaarDetector(FaceDetector):
    """OpenCV's ``haarcascade_frontalface_default.xml``; the score is the cascade's level
    weight (higher is surer; about 3 and above are reliable)."""

    name = "haar"

    def __init__(self, min_size: int = 24, scale_factor: float = 1.1, min_neighbors: int = 5,
                 min_score: float = 0.0) -> None:
        import cv2

        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise RuntimeError(f"OpenCV could not load its Haar cascade {path}; install "
                               f"opencv-python-headless 4.x")
        self.min_size, self.scale_factor = min_size, scale_factor
        self.min_neighbors, self.min_score = min_neighbors, min_score

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        import cv2

        gray = cv2.cvtColor(_check_rgb(rgb), cv2.COLOR_RGB2GRAY)
        gray = cv2.equalizeHist(gray)
        boxes, _, weights = self.cascade.detectMultiScale3(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size), outputRejectLevels=True)
        found = [Detection((float(x), float(y), float(x + w), float(y + h)), float(s))
                 for (x, y, w, h), s in zip(np.asarray(boxes).reshape(-1, 4),
                                            np.asarray(weights).reshape(-1))]
        return sorted((d for d in found if d.score >= self.min_score), key=lambda d: -d.score)


@DETECTORS.register("full_frame")
class FullFrameDetector(FaceDetector):
    name = "full_frame"

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        h, w = _check_rgb(rgb).shape[:2]
        return [Detection((0.0, 0.0, float(w), float(h)), 1.0)]


def build_detector(name: str, **options: object) -> FaceDetector:
    return DETECTORS.get(name)(**options)  # type: ignore[arg-type]


def square_crop(rgb: np.ndarray, box: tuple[float, float, float, float], margin: float,
                size: int) -> np.ndarray:
    """A square crop centred on ``box``, its side ``max(w, h) * (1 + 2 * margin)``, resized to
    ``size``; parts outside the image repeat the border."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = rgb.shape[:2]
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    side_i = max(int(round(side)), 1)
    pad = max(0, -left, -top, left + side_i - w, top + side_i - h)
    src = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="edge") if pad else rgb
    crop = src[top + pad:top + pad + side_i, left + pad:left + pad + side_i]
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR))


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
