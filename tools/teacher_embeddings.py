"""Identity-teacher embeddings for a training cache: dlib's 128-d face descriptor per row.

The shipped model's identity head learns from 238 identities only (the CelebA subset and the
few LFW people outside View 2), far too few for a face embedding. A teacher that was trained
on millions of faces can pass on what it knows through any face image, labelled or not:
``facefuse train`` with ``identity_teacher: FILE`` adds a loss that pulls the identity
embedding of every training image towards the teacher's descriptor of the same image
(:mod:`facefuse.train.distill`).

The teacher here is dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1``,
released by Davis King into the public domain, CC0) with dlib's 5-point shape predictor,
both shipped in the ``face_recognition_models`` registry package; nothing is downloaded.
dlib is not a facefuse dependency, so this script runs in an environment of its own, with
facefuse installed there without its dependencies (reading a cache needs numpy and Pillow
only)::

    python3 -m venv teacher && teacher/bin/pip install dlib-bin face-recognition-models \
        'setuptools<81' numpy pillow && teacher/bin/pip install --no-deps -e .
    teacher/bin/python tools/teacher_embeddings.py .facefuse-cache/mtl-XXXX \
        --out .facefuse-cache/teacher-dlib.npz --split train

Per row, the teacher sees the *source* image (the file the cache row was cut from) with the
face rectangle inside the row's crop box (the box less its margin), as dlib's own detector
would frame it; the 5-point predictor places the points and dlib aligns its own 150x150
chip. ``--flip`` also describes the mirror image and averages the two. Rows of other splits
are skipped with ``--split``, so no test image's descriptor is ever written unless asked
(``--split test`` is meant for checking the teacher's own LFW figure).

Output (``.npz``, no pickles): ``sample_id`` (JSON bytes, the cache's sample ids),
``embedding`` (float32, N x 128, unit length) and ``meta`` (JSON bytes: the teacher, its
licence, the cache key, the split, flip, timing).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from facefuse.data.cache import TrainingCache
from facefuse.data.teacher_file import write_teacher_file

TEACHER = "dlib_face_recognition_resnet_model_v1"
LICENCE = "CC0 1.0 (public domain), dlib / face_recognition_models"
_models = None


def _load_models():
    global _models
    if _models is None:
        import dlib
        import face_recognition_models as frm

        _models = (dlib, dlib.shape_predictor(frm.pose_predictor_five_point_model_location()),
                   dlib.face_recognition_model_v1(frm.face_recognition_model_location()))
    return _models


def require_teacher() -> str | None:
    """None when dlib and face_recognition_models import, else what to install."""
    try:
        import dlib  # noqa: F401
        import face_recognition_models  # noqa: F401
    except ImportError as e:
        return (f"the teacher needs dlib and face_recognition_models ({e}); run this script "
                f"in their environment (see its docstring)")
    return None


def face_rectangle(box: np.ndarray, margin: float, width: int, height: int
                   ) -> tuple[int, int, int, int]:
    """The face rectangle inside a cache crop box ``(x0, y0, x1, y1)`` that was widened by
    ``margin`` of the face's side on each side, clipped to the image."""
    x0, y0, x1, y1 = (float(v) for v in box)
    shrink_x = (x1 - x0) * margin / (1 + 2 * margin)
    shrink_y = (y1 - y0) * margin / (1 + 2 * margin)
    left, top = max(0, round(x0 + shrink_x)), max(0, round(y0 + shrink_y))
    right, bottom = min(width - 1, round(x1 - shrink_x)), min(height - 1, round(y1 - shrink_y))
    if right - left < 8 or bottom - top < 8:  # a degenerate box: the whole image
        return 0, 0, width - 1, height - 1
    return left, top, right, bottom


def describe(job: tuple[str, np.ndarray, float, bool]) -> np.ndarray | str:
    """One row's unit-length descriptor, or the reason it has none."""
    path, box, margin, flip = job
    dlib, shape_predictor, net = _load_models()
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as e:
        return f"unreadable: {e}"
    h, w = rgb.shape[:2]
    left, top, right, bottom = face_rectangle(box, margin, w, h)
    vectors = []
    for image, (x0, x1) in ((rgb, (left, right)),
                            (rgb[:, ::-1], (w - 1 - right, w - 1 - left))):
        image = np.ascontiguousarray(image)
        shape = shape_predictor(image, dlib.rectangle(x0, top, x1, bottom))
        vectors.append(np.asarray(net.compute_face_descriptor(image, shape), np.float32))
        if not flip:
            break
    v = np.mean(vectors, axis=0)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cache", type=Path, help="a built training cache folder")
    p.add_argument("--out", type=Path, required=True, help="the .npz to write")
    p.add_argument("--split", action="append", default=None,
                   help="only rows of this split (repeatable; default: train and val)")
    p.add_argument("--dataset", action="append", default=None,
                   help="only rows of this dataset (repeatable; default: all)")
    p.add_argument("--flip", action="store_true", help="average with the mirror image")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes (1: in this process)")
    p.add_argument("--limit", type=int, default=None, help="first N rows only (a quick look)")
    args = p.parse_args(argv)
    if not (args.cache / "meta.json").is_file():
        p.error(f"{args.cache} is not a built training cache (no meta.json)")
    missing = require_teacher()
    if missing:
        p.error(missing)
    cache = TrainingCache.open(args.cache)
    table = cache.table
    splits = set(args.split or ["train", "val"])
    datasets = set(args.dataset) if args.dataset else None
    keep = cache.valid & np.isin(table.split, list(splits))
    if datasets is not None:
        keep &= np.isin(table.dataset, list(datasets))
    rows = np.flatnonzero(keep)[:args.limit]
    if not len(rows):
        p.error("no cache rows match the split and dataset filters")
    margin = cache.spec.landmark_margin
    jobs = [(table.image[i], cache.boxes[i], margin, args.flip) for i in rows]
    start = time.perf_counter()
    ids, vectors, failed = [], [], []
    pool = ProcessPoolExecutor(max_workers=args.workers) if args.workers > 1 else None
    results = pool.map(describe, jobs, chunksize=32) if pool else map(describe, jobs)
    try:
        for k, (row, result) in enumerate(zip(rows, results, strict=False)):
            if isinstance(result, str):
                failed.append({"path": table.image[row], "reason": result})
            else:
                ids.append(table.sample_id[row])
                vectors.append(result)
            if (k + 1) % 2000 == 0 or k + 1 == len(rows):
                rate = (k + 1) / (time.perf_counter() - start)
                print(f"{k + 1}/{len(rows)} rows, {rate:.1f} rows/s", file=sys.stderr,
                      flush=True)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if not vectors:
        p.error(f"the teacher described none of the {len(rows)} rows: {failed[:3]}")
    seconds = time.perf_counter() - start
    info = {"teacher": TEACHER, "licence": LICENCE, "cache": str(args.cache),
            "cache_key": cache.meta["key"], "splits": sorted(splits),
            "datasets": sorted(datasets) if datasets else "all", "flip": args.flip,
            "rows": len(ids), "failed": failed, "seconds": round(seconds, 1)}
    write_teacher_file(args.out, ids, np.stack(vectors), info)
    print(f"wrote {len(ids)} descriptors to {args.out} in {seconds:.0f} s "
          f"({len(failed)} rows failed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
