"""Face detectors, by name, and square face crops.

Every detector works offline from a fresh install:

* ``haar``: OpenCV's frontal-face Haar cascade, shipped inside ``opencv-python-headless``
  (4.x); a box and a confidence per face, no landmarks.
* ``mtcnn`` (default): the MTCNN cascade (:mod:`facefuse.detection.mtcnn`), its 2 MB of
  MIT-licensed weights shipped in the package and run by OpenCV's DNN module; a box, a
  confidence and five landmarks per face, so faces can be aligned.
* ``dlib_hog``: dlib's HOG + linear SVM frontal detector; needs ``pip install dlib-bin``
  (no model file); a box and a score per face, no landmarks.
* ``full_frame``: the whole image is one face (for inputs that are already face crops,
  such as aligned datasets or face-cropped videos).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from facefuse.registry import Registry

#: how a face was found: by the detector (on the image, or on an enlarged copy of a small
#: one); a small image that is a tight face crop, taken whole with the detector's points
#: (``face_crop``); or taken as the whole image when the detector found none in a small image
FOUND_BY = ("detector", "face_crop", "whole_image")


@dataclass(frozen=True)
class Detection:
    """One face: box ``(x0, y0, x1, y1)`` in pixels, a confidence, optional 5 points, and how
    it was found (:data:`FOUND_BY`)."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = field(default=None, compare=False)
    found_by: str = "detector"

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    def to_dict(self) -> dict[str, object]:
        return {"box": [round(v, 1) for v in self.box], "score": round(self.score, 4),
                "landmarks": None if self.landmarks is None else self.landmarks.tolist(),
                "found_by": self.found_by}


def landmark_box(box: tuple[float, float, float, float],
                 calibration: tuple[float, float, float, float]
                 ) -> tuple[float, float, float, float]:
    """The box of a face's 68 landmarks estimated from a detector's box, given the
    detector's calibration ``(width ratio, height ratio, centre dx, centre dy)``: its box
    over the landmark box, offsets as shares of the landmark box's sides."""
    rw, rh, dx, dy = calibration
    x0, y0, x1, y1 = box
    w, h = (x1 - x0) / rw, (y1 - y0) / rh
    cx, cy = (x0 + x1) / 2 - dx * w, (y0 + y1) / 2 - dy * h
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


class FaceDetector(abc.ABC):
    """A detector: ``detect(rgb)`` gives every face, most confident first.

    ``box_calibration`` says where a detector's boxes sit on a face: the median width and
    height of its box over the box of the face's 68 landmarks, and the offset of its centre
    (shares of the landmark box's sides), measured on 300-W by
    ``benchmarks/compare_detectors.py``. The analyzer uses it to cut the crop that training
    cut (the landmark box widened by the margin), whichever detector found the face.
    """

    name: str
    box_calibration: tuple[float, float, float, float] = (1.0, 1.0, 0.0, 0.0)
    #: whether every Detection carries five points (eyes, nose tip, mouth corners)
    gives_five_points: bool = False

    def face_box(self, det: Detection) -> tuple[float, float, float, float]:
        """The 68-landmark box this detector's ``det`` stands for (see the class doc)."""
        return landmark_box(det.box, self.box_calibration)

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
    box_calibration = (1.121, 1.149, -0.008, -0.166)  # benchmarks/compare_detectors.py

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
                                            np.asarray(weights).reshape(-1), strict=True)]
        return sorted((d for d in found if d.score >= self.min_score), key=lambda d: -d.score)


@DETECTORS.register("mtcnn")
class MTCNNDetector(FaceDetector):
    """MTCNN boxes, O-Net probabilities as scores, and five points per face (left eye,
    right eye, nose, left and right mouth corner, in image coordinates)."""

    name = "mtcnn"
    box_calibration = (0.962, 1.285, -0.023, -0.176)  # benchmarks/compare_detectors.py
    gives_five_points = True

    def __init__(self, min_size: int = 20, min_score: float = 0.9,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 scale_factor: float = 0.709) -> None:
        from facefuse.detection.mtcnn import MTCNN

        self.cascade = MTCNN(min_size=max(int(min_size), 12), thresholds=tuple(thresholds),
                             scale_factor=scale_factor)
        self.min_score = min_score

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        boxes, scores, points = self.cascade.detect(_check_rgb(rgb))
        found = [Detection(tuple(float(v) for v in b), float(s), p.astype(np.float32))
                 for b, s, p in zip(boxes, scores, points, strict=True) if s >= self.min_score]
        return sorted(found, key=lambda d: -d.score)


@DETECTORS.register("dlib_hog")
class DlibHogDetector(FaceDetector):
    """dlib's ``get_frontal_face_detector`` (HOG features, linear SVM); the score is the
    SVM margin (0 and above count as faces). An optional extra: ``pip install dlib-bin``."""

    name = "dlib_hog"
    box_calibration = (1.083, 1.084, 0.016, -0.071)  # benchmarks/compare_detectors.py

    def __init__(self, upsample: int = 1, min_score: float = 0.0, min_size: int = 0) -> None:
        try:
            import dlib
        except ImportError as e:
            raise ImportError("the dlib_hog detector needs dlib: pip install dlib-bin") from e
        self.detector = dlib.get_frontal_face_detector()
        self.upsample, self.min_score, self.min_size = upsample, min_score, min_size

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        rects, scores, _ = self.detector.run(np.ascontiguousarray(_check_rgb(rgb)),
                                             self.upsample, self.min_score)
        found = [Detection((float(r.left()), float(r.top()), float(r.right() + 1),
                            float(r.bottom() + 1)), float(s))
                 for r, s in zip(rects, scores, strict=True)]
        return sorted((d for d in found if d.width >= self.min_size), key=lambda d: -d.score)


@DETECTORS.register("full_frame")
class FullFrameDetector(FaceDetector):
    """The whole image is the face. Its calibration makes the crop at the training margin
    (0.2) the whole image: a face crop is used as it is."""

    name = "full_frame"
    box_calibration = (1.4, 1.4, 0.0, 0.0)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        h, w = _check_rgb(rgb).shape[:2]
        return [Detection((0.0, 0.0, float(w), float(h)), 1.0)]


def build_detector(name: str, **options: object) -> FaceDetector:
    return DETECTORS.get(name)(**options)  # type: ignore[arg-type]


def square_around(box: tuple[float, float, float, float], margin: float
                  ) -> tuple[float, float, float]:
    """Centre ``(cx, cy)`` and side of the square crop around ``box``: its side is
    ``max(w, h) * (1 + 2 * margin)``."""
    x0, y0, x1, y1 = box
    return (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * (1 + 2 * margin)


def square_crop(rgb: np.ndarray, box: tuple[float, float, float, float], margin: float,
                size: int) -> np.ndarray:
    """The square around ``box`` (:func:`square_around`), resized to ``size``; parts outside
    the image repeat the border."""
    cx, cy, side = square_around(box, margin)
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
