"""Derive, from measurements, the five-point template that makes dlib-like 150x150 chips
from MTCNN's five points, and check it on LFW View 2.

dlib's face descriptor (``dlib_face_recognition_resnet_model_v1``) expects the chip that
``dlib.get_face_chip(img, shape5, size=150, padding=0.25)`` cuts around the points of dlib's
own 5-point predictor (eye corners and the bottom of the nose). facefuse's detector (MTCNN)
gives other points (eye centres, nose tip, mouth corners). This tool measures where MTCNN's
points fall inside dlib's chips, so that at run time a similarity transform of MTCNN's points
onto that template (``facefuse.inference.alignment.similarity_transform`` + a bilinear warp)
cuts nearly the same chip without dlib. Nothing of dlib's source was read: the chip geometry
is measured through dlib's Python API only.

It runs in two Python environments, sharing ``.npz`` files (no pickles) under a work folder
(default ``/tmp/chipwork``):

* the project venv (facefuse, MTCNN):  ``mtcnn-train``, ``mtcnn-lfw``, ``lfw-eval``;
* a dlib venv (``dlib-bin``, numpy, opencv, pillow, and the CC0 models of the
  ``face_recognition_models`` 0.3.0 sdist, ``--models DIR``):  ``dlib-train``,
  ``lfw-descriptors``.

How it was run (2-core CPU, other work running beside it)::

    V=/work/main/.venv/bin/python; D=/tmp/dlibenv/bin/python; T=tools/derive_dlib_chip_template.py
    $V $T mtcnn-train                          # step A: MTCNN points on 3,000 + 1,207 photos
    $D $T dlib-train                           # steps B, C: map into dlib chips, template
    $V $T mtcnn-lfw                            # MTCNN on LFW crops, raw and padded/upscaled
    $D $T lfw-descriptors --shard 0/2 & $D $T lfw-descriptors --shard 1/2; wait
    $V $T lfw-eval

The chip geometry (measured by ``dlib-train``): for ``d = dlib.get_face_chip_details(shape,
150, 0.25)``, chip pixel ``p`` (pixel centres at integers, as in OpenCV) samples the image at
``c + s R(d.angle) (p - 74.5)``, where ``c`` is the centre of ``d.rect`` ((left + right) / 2,
(top + bottom) / 2), ``s = (right - left) / 149`` and ``R`` the rotation by ``d.angle``. It
was found by feeding ``get_face_chip`` ramp images (pixel value = its own x or y), whose chips
give the sampled coordinates directly (fit residual 0.29 grey levels, the 8-bit step); the
ramps read 0.5 low everywhere, which is dlib truncating interpolated values to uint8, not a
half-pixel shift: ``cv2.warpAffine`` (bilinear) of real images with this mapping matches
``dlib.get_face_chip`` to about 0.5 grey levels, and with the 0.5 shift to about 5.

What the run found (2-core CPU shared with other work; dlib-bin 20.0.1, OpenCV 4.14/5.1):

* Mapping check (300 images): the formula above agrees with the ramp measurement to 0.036
  in any coefficient; ``cv2.warpAffine`` chips match ``dlib.get_face_chip`` to 0.49 grey
  levels on average (worst image 0.51).
* Template (step C): 4,207 photos (1,500 CelebA, 1,500 UTKFace, all 1,207 300-W); MTCNN
  found 4,134, dlib's HOG detector (upsample 1) 4,043, both 4,011, the same face (box IoU >
  0.3) 4,010 (CelebA 1,444, UTKFace 1,414, 300-W 1,152). The median of MTCNN's points in
  dlib's 150-px chips (eye, eye, nose tip, mouth corner, mouth corner; image left first)::

      DLIB_TEMPLATE_150 = [[46.0417, 44.0105], [100.2363, 43.9975], [72.8911, 76.8388],
                           [49.0244, 100.4310], [96.9368, 100.3758]]

  (10-90 % trimmed mean within 0.2 px of it). Spread (robust sd, 1.4826 MAD, x / y, chip
  px): eyes 1.5 / 1.7, nose 4.6 / 3.8, mouth corners 4.2-4.6 / 5.4-5.6; median distance to
  the template: eyes 1.9, nose 5.1, mouth 5.5-5.7 (90th percentile 4.0, 11.6, 11.0). dlib's
  own 5 points in its chips spread 1.2-3.2 px (median), so much of it is the two landmark
  sets disagreeing from face to face, not noise in the mapping.
* LFW View 2 (90x90 crops; 7,701 images, 6,000 pairs; 10 folds, Euclidean, threshold from
  the other nine folds): dlib's own chips 95.07 +- 1.03 (its HOG detector at upsample 2
  finds 7,434; on a 50 %-black-padded crop at upsample 1 119 more; the other 148 use the
  whole crop as the face rectangle); template chips from MTCNN 95.52 +- 1.07, with raw
  MTCNN on the crop (6,575 found) and, for the 1,126 misses, the template warp of the median
  LFW point set (a fixed chip). Fallbacks for the misses: pad 50 % edge-replicate finds 1,039
  of them (7,597 / 7,701 overall) but scores 95.32; pad 25 % edge 1,063 / 95.28; pad 50 %
  black 831 / 95.33; pad 50 % edge + 2x 1,032 / 95.22; 2x upscale 145 / 95.42;
  pad 50 % edge on every image 95.07. On the 4,422 pairs where raw MTCNN finds both faces:
  dlib chips 95.32, template chips 95.43. The differences are within a fold's sd (about 1).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path("/work/shared/data")
MODELS = Path("/tmp/pk/face_recognition_models-0.3.0/face_recognition_models/models")
CHIP, PADDING = 150, 0.25

# --------------------------------------------------------------------------- helpers

def load_rgb(path: str | Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB")))


def pad_image(img: np.ndarray, share: float, mode: str) -> tuple[np.ndarray, int]:
    """``img`` with a border of ``share`` of its height on every side; the border width."""
    import cv2

    k = int(round(img.shape[0] * share))
    border = cv2.BORDER_REPLICATE if mode == "edge" else cv2.BORDER_CONSTANT
    return cv2.copyMakeBorder(img, k, k, k, k, border, value=(0, 0, 0)), k


def upscale(img: np.ndarray, factor: float) -> np.ndarray:
    import cv2

    return cv2.resize(img, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)


#: LFW fallbacks for MTCNN: name -> (pad share, pad mode, upscale factor). Points are mapped
#: back to the original image as (p / factor) - pad.
VARIANTS: dict[str, tuple[float, str, float]] = {
    "raw": (0.0, "", 1.0),
    "up2": (0.0, "", 2.0),
    "pad25edge": (0.25, "edge", 1.0),
    "pad50edge": (0.5, "edge", 1.0),
    "pad50black": (0.5, "black", 1.0),
    "pad50edge_up2": (0.5, "edge", 2.0),
}


def variant_image(img: np.ndarray, name: str) -> tuple[np.ndarray, float, float]:
    share, mode, factor = VARIANTS[name]
    k = 0
    if share:
        img, k = pad_image(img, share, mode)
    if factor != 1.0:
        img = upscale(img, factor)
    return img, float(k), factor


def largest(dets: list) -> object | None:
    return max(dets, key=lambda d: d.width * d.height) if dets else None


def chip_to_image(details) -> np.ndarray:
    """2x3 affine taking chip pixel coordinates to the image coordinates that
    ``dlib.get_face_chip`` samples there (measured; see the module doc)."""
    r = details.rect
    s = (r.right() - r.left()) / (details.cols - 1)
    a = details.angle
    rot = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    centre = np.array([(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2])
    t = centre - rot @ np.array([(details.cols - 1) / 2, (details.rows - 1) / 2])
    return np.c_[rot, t]


def invert(m: np.ndarray) -> np.ndarray:
    return np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return np.asarray(pts, float) @ m[:, :2].T + m[:, 2]


def ramp_chip_to_image(dlib, shape, h: int, w: int) -> tuple[np.ndarray, float]:
    """The chip -> image affine measured from dlib's chip of a coordinate ramp (h, w <= 256),
    and the rms residual of the fit in grey levels. dlib truncates interpolated values to
    uint8 (found here: the ramp reads 0.5 low, and real chips agree with an OpenCV warp to
    0.5 grey levels only without that shift), so 0.5 is added back."""
    ys, xs = np.mgrid[0:h, 0:w]
    ramp = np.zeros((h, w, 3), np.uint8)
    ramp[..., 0], ramp[..., 1] = xs, ys
    chip = dlib.get_face_chip(ramp, shape, CHIP, PADDING).astype(float)
    cy, cx = np.mgrid[0:CHIP, 0:CHIP]
    ok = (chip[..., 0] > 2) & (chip[..., 0] < min(w, 256) - 3) & (chip[..., 1] > 2) \
        & (chip[..., 1] < min(h, 256) - 3)
    a = np.c_[cx[ok], cy[ok], np.ones(ok.sum())]
    b = np.c_[chip[..., 0][ok], chip[..., 1][ok]]
    sol = np.linalg.lstsq(a, b, rcond=None)[0]
    sol[2] += 0.5  # undo the truncation bias
    return sol.T, float(np.sqrt(((a @ sol - b) ** 2).mean()))


def warp_chip(img: np.ndarray, image_to_chip: np.ndarray) -> np.ndarray:
    """The 150x150 chip by OpenCV's bilinear warp (black outside the image)."""
    import cv2

    return cv2.warpAffine(img, image_to_chip, (CHIP, CHIP), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Umeyama least-squares similarity, as ``facefuse.inference.alignment`` (copied here so
    the dlib venv does not need facefuse)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / ((s ** 2).sum() / len(src))
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def progress(i: int, n: int, t0: float, every: int = 500) -> None:
    if i % every == 0 or i == n:
        print(f"  {i}/{n}  {time.time() - t0:.0f}s", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- step A

def train_images(per_set: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    celeba = sorted((DATA / "celeba/img_celeba").glob("*.jpg"))
    utk = sorted((DATA / "utkface/UTKFace").glob("*.jpg"))
    w300 = sorted((DATA / "300w").rglob("*.jpg"))
    return [str(p) for p in rng.sample(celeba, min(per_set, len(celeba)))
            + rng.sample(utk, min(per_set, len(utk))) + w300]


def cmd_mtcnn_train(args) -> None:
    from facefuse.detection.detectors import build_detector

    det = build_detector("mtcnn")
    paths = train_images(args.per_set, args.seed)
    n = len(paths)
    found = np.zeros(n, bool)
    boxes, points = np.full((n, 4), np.nan), np.full((n, 5, 2), np.nan)
    t0 = time.time()
    for i, p in enumerate(paths):
        d = largest(det.detect(load_rgb(p)))
        if d is not None:
            found[i], boxes[i], points[i] = True, d.box, d.landmarks
        progress(i + 1, n, t0)
    out = Path(args.work) / "train_mtcnn.npz"
    np.savez(out, paths=np.array(paths), found=found, boxes=boxes, points=points)
    print(f"MTCNN found a face in {found.sum()}/{n} images ({time.time() - t0:.0f}s) -> {out}")


# --------------------------------------------------------------------------- steps B, C

def cmd_dlib_train(args) -> None:
    import dlib

    d = np.load(Path(args.work) / "train_mtcnn.npz")
    paths, found, boxes, points = d["paths"], d["found"], d["boxes"], d["points"]
    detector = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(Path(args.models) / "shape_predictor_5_face_landmarks.dat"))
    n = len(paths)
    dfound = np.zeros(n, bool)
    drect = np.full((n, 4), np.nan)
    mt_chip, sp_chip = np.full((n, 5, 2), np.nan), np.full((n, 5, 2), np.nan)
    ramp_err, pix_err = [], []
    t0 = time.time()
    for i, p in enumerate(paths):
        img = load_rgb(p)
        rects = detector(img, 1)
        if len(rects):
            r = max(rects, key=lambda r: r.width() * r.height())
            shape = sp(img, r)
            m = chip_to_image(dlib.get_face_chip_details(shape, CHIP, PADDING))
            inv = invert(m)
            dfound[i] = True
            drect[i] = (r.left(), r.top(), r.right() + 1, r.bottom() + 1)
            sp_chip[i] = apply(inv, [(q.x, q.y) for q in shape.parts()])
            if found[i]:
                mt_chip[i] = apply(inv, points[i])
            if len(ramp_err) < args.checks and max(img.shape[:2]) <= 256:
                # the mapping against dlib itself: ramp coordinates and real pixels
                measured, _ = ramp_chip_to_image(dlib, shape, *img.shape[:2])
                ramp_err.append(np.abs(measured - m).max())
                ref = dlib.get_face_chip(img, shape, CHIP, PADDING).astype(float)
                mine = warp_chip(img, inv).astype(float)
                inside = warp_chip(np.full(img.shape[:2], 255, np.uint8), inv) == 255
                pix_err.append(np.abs(ref - mine)[inside].mean())
        progress(i + 1, n, t0)

    both = found & dfound
    same = np.array([both[i] and iou(boxes[i], drect[i]) > 0.3 for i in range(n)])
    inside = np.all((mt_chip > -CHIP / 2) & (mt_chip < CHIP * 1.5), axis=(1, 2))
    keep = same & inside
    pts = mt_chip[keep]
    median = np.median(pts, axis=0)
    lo, hi = np.percentile(pts, [10, 90], axis=0)
    trimmed = np.array([[pts[(pts[:, k, j] >= lo[k, j]) & (pts[:, k, j] <= hi[k, j]), k, j]
                         .mean() for j in range(2)] for k in range(5)])
    mad = 1.4826 * np.median(np.abs(pts - median), axis=0)
    dist = np.linalg.norm(pts - median, axis=2)
    # the template's own consistency: residual of each image's MTCNN points after the best
    # similarity onto the template (what a run-time warp cannot remove)
    resid = np.array([np.linalg.norm(apply(similarity_transform(q, median), q) - median,
                                     axis=1) for q in pts])
    spm = np.median(sp_chip[dfound], axis=0)
    sp_spread = np.linalg.norm(sp_chip[dfound] - spm, axis=2)
    src = np.array([Path(p).parts[4] for p in paths])
    report = {
        "images": int(n), "mtcnn_found": int(found.sum()), "dlib_found": int(dfound.sum()),
        "both_found": int(both.sum()), "same_face_iou_gt_0.3": int(same.sum()),
        "used": int(keep.sum()),
        "used_by_dataset": {s: int((keep & (src == s)).sum()) for s in np.unique(src)},
        "template_median": np.round(median, 4).tolist(),
        "template_trimmed_mean_10_90": np.round(trimmed, 4).tolist(),
        "spread_std_xy": np.round(pts.std(0), 3).tolist(),
        "spread_mad_xy": np.round(mad, 3).tolist(),
        "dist_to_template_median_p90": [np.round(np.median(dist, 0), 3).tolist(),
                                        np.round(np.percentile(dist, 90, 0), 3).tolist()],
        "similarity_residual_median_p90": [np.round(np.median(resid, 0), 3).tolist(),
                                           np.round(np.percentile(resid, 90, 0), 3).tolist()],
        "dlib_sp5_points_in_chip_median": np.round(spm, 3).tolist(),
        "dlib_sp5_dist_to_median_median_p90": [
            np.round(np.median(sp_spread, 0), 3).tolist(),
            np.round(np.percentile(sp_spread, 90, 0), 3).tolist()],
        "mapping_check_images": len(ramp_err),
        "mapping_vs_ramp_max_abs_coeff_diff": float(np.max(ramp_err)) if ramp_err else None,
        "warp_vs_dlib_chip_mean_abs_grey_mean_max": [float(np.mean(pix_err)),
                                                      float(np.max(pix_err))]
        if pix_err else None,
        "seconds": round(time.time() - t0),
    }
    np.savez(Path(args.work) / "template.npz", template=median, trimmed=trimmed,
             mt_chip=mt_chip, sp_chip=sp_chip, keep=keep, paths=paths)
    print(json.dumps(report, indent=1))


# --------------------------------------------------------------------------- LFW

def lfw_images() -> tuple[list, list[str]]:
    from facefuse.data.readers.lfw import read_pairs

    pairs = read_pairs(DATA / "lfw/pairs.txt", DATA / "lfw/lfw")
    return pairs, sorted({str(p.image_a) for p in pairs} | {str(p.image_b) for p in pairs})


def cmd_mtcnn_lfw(args) -> None:
    """MTCNN on every View-2 image, raw and padded (``pad50edge``); the other variants only
    where the raw crop gave no face."""
    from facefuse.detection.detectors import build_detector

    det = build_detector("mtcnn")
    pairs, paths = lfw_images()
    names = list(VARIANTS)
    n = len(paths)
    pts = np.full((len(names), n, 5, 2), np.nan)
    tried = np.zeros((len(names), n), bool)
    t0 = time.time()
    for i, p in enumerate(paths):
        img = load_rgb(p)
        for v, name in enumerate(names):
            if name not in ("raw", "pad50edge") and not np.isnan(pts[0, i, 0, 0]):
                continue
            big, k, f = variant_image(img, name)
            tried[v, i] = True
            d = largest(det.detect(big))
            if d is not None:
                pts[v, i] = d.landmarks / f - k
        progress(i + 1, n, t0)
    found = ~np.isnan(pts[:, :, 0, 0])
    default = np.median(pts[0][found[0]], axis=0)  # for images no variant finds a face in
    np.savez(Path(args.work) / "lfw_mtcnn.npz", paths=np.array(paths), variants=np.array(names),
             points=pts, tried=tried, default=default)
    for v, name in enumerate(names):
        print(f"{name:15s} tried {tried[v].sum():5d}  found {found[v].sum():5d}")
    print(f"{n} images, {len(pairs)} pairs, {time.time() - t0:.0f}s")


def cmd_lfw_descriptors(args) -> None:
    """dlib descriptors of (i) dlib's own chips and (ii) template chips from MTCNN points
    (every variant that found a face, plus a default-position chip where one did not)."""
    import dlib

    d = np.load(Path(args.work) / "lfw_mtcnn.npz")
    paths, names, pts, default = d["paths"], list(d["variants"]), d["points"], d["default"]
    template = np.load(Path(args.work) / "template.npz")["template"]
    detector = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(Path(args.models) / "shape_predictor_5_face_landmarks.dat"))
    net = dlib.face_recognition_model_v1(
        str(Path(args.models) / "dlib_face_recognition_resnet_model_v1.dat"))
    k, nshard = (int(x) for x in args.shard.split("/"))
    idx = np.arange(len(paths))[k::nshard]
    sets = ["dlib"] + names + ["default"]
    desc = {s: np.full((len(paths), 128), np.nan, np.float32) for s in sets}
    dlib_how = np.zeros(len(paths), np.int8)  # 1 up2-HOG, 2 padded HOG, 3 whole-crop rect
    pix = np.full(len(paths), np.nan)  # mean |template chip - dlib chip| (raw points)
    done = np.zeros(len(paths), bool)
    out_file = Path(args.work) / f"lfw_desc_{k}of{nshard}.npz"
    part_file = out_file.with_suffix(".part.npz")

    def save(path: Path) -> None:
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, paths=paths, shard=idx, done=done, dlib_how=dlib_how, pix=pix,
                 sets=np.array(sets), **{f"d_{s}": desc[s] for s in sets})
        tmp.replace(path)

    if part_file.exists():  # resume a run that was stopped
        z = np.load(part_file)
        done, dlib_how, pix = z["done"], z["dlib_how"], z["pix"]
        desc = {s: z[f"d_{s}"] for s in sets}
        print(f"resuming: {done.sum()} images already done", file=sys.stderr)
    t0 = time.time()
    for j, i in enumerate(idx):
        if done[i]:
            continue
        img = load_rgb(paths[i])
        h, w = img.shape[:2]
        rects = detector(img, 2)
        if len(rects):
            rect, how = max(rects, key=lambda r: r.width() * r.height()), 1
        else:
            big, b = pad_image(img, 0.5, "black")
            rects = detector(big, 1)
            if len(rects):
                r = max(rects, key=lambda r: r.width() * r.height())
                rect = dlib.rectangle(r.left() - b, r.top() - b, r.right() - b, r.bottom() - b)
                how = 2
            else:
                rect, how = dlib.rectangle(0, 0, w - 1, h - 1), 3
        dlib_how[i] = how
        ref = dlib.get_face_chip(img, sp(img, rect), CHIP, PADDING)
        chips, keys = [ref], ["dlib"]
        for v, name in enumerate(names):
            if not np.isnan(pts[v, i, 0, 0]):
                chips.append(warp_chip(img, similarity_transform(pts[v, i], template)))
                keys.append(name)
        if np.isnan(pts[[0, names.index("pad50edge")], i, 0, 0]).any():  # a set lacks it
            chips.append(warp_chip(img, similarity_transform(default, template)))
            keys.append("default")
        if "raw" in keys:
            pix[i] = np.abs(chips[keys.index("raw")].astype(float) - ref.astype(float)).mean()
        out = net.compute_face_descriptor(chips)
        for key, vec in zip(keys, out, strict=True):
            desc[key][i] = np.asarray(vec, np.float32)
        done[i] = True
        progress(j + 1, len(idx), t0, every=100)
        if (j + 1) % 100 == 0:
            save(part_file)
    save(out_file)
    part_file.unlink(missing_ok=True)
    print(f"shard {args.shard}: {len(idx)} images, {time.time() - t0:.0f}s")


def cmd_lfw_eval(args) -> None:
    from facefuse.evaluation.verification import verification_accuracy

    pairs, paths = lfw_images()
    shards = sorted(p for p in Path(args.work).glob("lfw_desc_*of*.npz")
                    if p.name.count(".") == 1)  # not the .part / .tmp files
    first = np.load(shards[0])
    sets = list(first["sets"])
    desc = {s: np.full((len(paths), 128), np.nan, np.float32) for s in sets}
    how, pix = np.zeros(len(paths), np.int8), np.full(len(paths), np.nan)
    for f in shards:
        z = np.load(f)
        assert list(z["paths"]) == paths
        idx = z["shard"]
        for s in sets:
            desc[s][idx] = z[f"d_{s}"][idx]
        how[idx], pix[idx] = z["dlib_how"][idx], z["pix"][idx]
    m = np.load(Path(args.work) / "lfw_mtcnn.npz")
    names = list(m["variants"])
    found = ~np.isnan(m["points"][:, :, 0, 0])
    pos = {p: i for i, p in enumerate(paths)}
    a = np.array([pos[str(p.image_a)] for p in pairs])
    b = np.array([pos[str(p.image_b)] for p in pairs])
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    missing = np.isnan(desc["dlib"][:, 0]).sum()
    print(f"{len(paths)} images in {len(pairs)} pairs; {len(shards)} shards; "
          f"images without a dlib descriptor: {missing}")
    n1, n2, n3 = (int((how == c).sum()) for c in (1, 2, 3))
    print(f"dlib chips: HOG (upsample 2) on the crop {n1}, HOG (upsample 1) on a 50%-black-"
          f"padded crop {n2}, whole crop as the face rectangle {n3}")
    print("MTCNN finds a face: " + ", ".join(
        f"{n} {found[v].sum()}/{m['tried'][v].sum()}" for v, n in enumerate(names)))
    print(f"mean |template chip - dlib chip| (raw MTCNN points, grey levels): "
          f"{np.nanmean(pix):.1f} (median {np.nanmedian(pix):.1f})")

    def report(label: str, emb: np.ndarray) -> None:
        dist = np.linalg.norm(emb[a] - emb[b], axis=1)
        r = verification_accuracy(-dist, same, folds)
        print(f"  {label:44s} {100 * r.accuracy:6.2f} +- {100 * r.std:.2f}  "
              f"(threshold {-np.mean(r.thresholds):.3f})")

    print("LFW View 2, 10 folds, Euclidean distance, threshold from the other nine folds:")
    report("dlib chips (dlib's detector + 5-point predictor)", desc["dlib"])
    for label, order in [("template chips: raw MTCNN only", ["raw"]),
                         ("template chips: pad50edge for all", ["pad50edge"])] + [
            (f"template chips: raw, else {v}", ["raw", v]) for v in names
            if v not in ("raw",)]:
        emb = np.full_like(desc["dlib"], np.nan)
        for v in reversed(order):
            ok = ~np.isnan(desc[v][:, 0])
            emb[ok] = desc[v][ok]
        rest = np.isnan(emb[:, 0])
        emb[rest] = desc["default"][rest]
        label += f" [default chip {rest.sum()}]"
        report(label, emb)
    # the pairs whose two crops raw MTCNN finds a face in: no fallback involved
    ok = found[0][a] & found[0][b]
    print(f"  the {ok.sum()} pairs where raw MTCNN finds both faces (10 folds within them):")
    for label, emb in [("dlib chips", desc["dlib"]), ("template chips (raw)", desc["raw"])]:
        dist = np.linalg.norm(emb[a[ok]] - emb[b[ok]], axis=1)
        r = verification_accuracy(-dist, same[ok], folds[ok])
        print(f"    {label:42s} {100 * r.accuracy:6.2f} +- {100 * r.std:.2f}; at dlib's fixed "
              f"0.6: {100 * np.mean((dist < 0.6) == same[ok]):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/chipwork")
    ap.add_argument("--models", default=str(MODELS))
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("mtcnn-train")
    a.add_argument("--per-set", type=int, default=1500)
    a.add_argument("--seed", type=int, default=0)
    b = sub.add_parser("dlib-train")
    b.add_argument("--checks", type=int, default=300, help="images for the mapping check")
    sub.add_parser("mtcnn-lfw")
    c = sub.add_parser("lfw-descriptors")
    c.add_argument("--shard", default="0/1")
    sub.add_parser("lfw-eval")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    {"mtcnn-train": cmd_mtcnn_train, "dlib-train": cmd_dlib_train, "mtcnn-lfw": cmd_mtcnn_lfw,
     "lfw-descriptors": cmd_lfw_descriptors, "lfw-eval": cmd_lfw_eval}[args.cmd](args)


if __name__ == "__main__":
    main()
