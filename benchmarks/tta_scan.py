"""Test-time augmentation scan: which extra crops of a face, averaged, help age, gender, race?

Every UTKFace photo of one split goes through the analyzer's detector (the largest face; the
whole image where none is found, as compare_peers.py does); the face is cut in several
views, each predicted with the analyzer's test-time flip, and the raw outputs (age in years,
gender and race logits) are stored per view. Each combination of views is then scored by
averaging its views' outputs: age MAE raw and through the checkpoint's age calibration
(fitted on single-view outputs), gender and race accuracy.

Views: the crop margin (share of the face box on each side; the analyzer's is 0.2) at 0.1
to 0.3, the 0.2 crop shifted by 4 % of its side left/right/up/down, and rotated by +-6
degrees about its centre (the image's border repeated outside it, as training's
augmentation does); at each input size of --sizes (default: the model's).

Choose on the validation split (--split val); the test split is for confirming. Usage:
    python benchmarks/tta_scan.py --split val [--model CHECKPOINT] [--sizes 96 112]
        [--limit N] [--out reports/tta_scan]
Writes OUT/views-SPLIT.npz (the per-view outputs) and OUT/scan-SPLIT.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

#: (name, margin, shift x, shift y as shares of the crop side, rotation in degrees)
VIEWS = [("m0.20", 0.2, 0, 0, 0), ("m0.10", 0.1, 0, 0, 0), ("m0.15", 0.15, 0, 0, 0),
         ("m0.25", 0.25, 0, 0, 0), ("m0.30", 0.3, 0, 0, 0), ("right", 0.2, 0.04, 0, 0),
         ("left", 0.2, -0.04, 0, 0), ("down", 0.2, 0, 0.04, 0), ("up", 0.2, 0, -0.04, 0),
         ("rot+6", 0.2, 0, 0, 6), ("rot-6", 0.2, 0, 0, -6)]
#: combinations scored (view names; the first is the analyzer's own crop)
COMBOS = [["m0.20"]] + [[v[0]] for v in VIEWS[1:]] + [
    ["m0.20", "m0.15", "m0.25"],
    ["m0.20", "m0.10", "m0.15", "m0.25", "m0.30"],
    ["m0.20", "right", "left", "down", "up"],
    ["m0.20", "rot+6", "rot-6"],
    ["m0.20", "m0.15", "m0.25", "right", "left", "down", "up"],
    [v[0] for v in VIEWS]]


def view_crop(rgb: np.ndarray, box, margin: float, dx: float, dy: float, rotation: float,
              size: int) -> np.ndarray:
    """The square ``margin`` crop around ``box`` (as the analyzer cuts it), moved by
    ``dx, dy`` of its side and rotated by ``rotation`` degrees about its centre."""
    from facefuse.detection.detectors import square_around, square_crop

    side = square_around(box, margin)[2]
    x0, y0, x1, y1 = box
    box = (x0 + dx * side, y0 + dy * side, x1 + dx * side, y1 + dy * side)
    if rotation:  # pad with the border first, then rotate, so no black corner enters
        pad = int(side) + 2  # the crop (training's augmentation repeats the border too)
        cx, cy, _ = square_around(box, margin)
        rgb = np.asarray(Image.fromarray(np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)),
                                                mode="edge"))
                         .rotate(rotation, resample=Image.BILINEAR, center=(cx + pad, cy + pad)))
        box = tuple(v + pad for v in box)
    return square_crop(rgb, box, margin, size)


def collect(split: str, data: str, analyzer, sizes: list[int] | None,
            limit: int | None) -> dict[str, np.ndarray]:
    """Raw outputs per image, size and view through ``analyzer`` (a FaceAnalyzer): age
    (N, S, V), gender and race (N, S, V, C)."""
    from facefuse.data.readers import read_dataset
    from facefuse.inference.analyzer import FaceAnalyzer

    t = read_dataset("utkface", data).table
    rows = np.flatnonzero(t.split == split)
    if limit is not None:
        rows = np.sort(np.random.default_rng(0).permutation(rows)[:limit])
    whole = FaceAnalyzer(model=analyzer.model, detector="full_frame", device="cpu")
    fm = analyzer.model
    sizes = sizes or [fm.size]
    own_size = fm.size
    out: dict[str, list] = {"age": [], "gender": [], "race": []}
    start = time.perf_counter()
    try:
        for j, i in enumerate(rows):
            rgb = analyzer.read_image(str(t.image[i]))
            dets = analyzer.detect(rgb)
            if dets:
                det = max(dets, key=lambda d: d.width * d.height)
                box = analyzer.detector.face_box(det)
            else:
                det = whole.detect(rgb)[0]
                box = whole.detector.face_box(det)
            per: dict[str, list] = {k: [] for k in out}
            for size in sizes:
                fm.size = size
                _, o = fm.raw([view_crop(rgb, box, m, dx, dy, r, size)
                               for _, m, dx, dy, r in VIEWS])
                per["age"].append(fm.regression_values("age", o["age"], calibrated=False))
                per["gender"].append(np.asarray(o["gender"], np.float32))
                per["race"].append(np.asarray(o["race"], np.float32))
            for k in out:
                out[k].append(np.stack(per[k]))
            if (j + 1) % 200 == 0:
                print(f"{split}: {j + 1}/{len(rows)} ({time.perf_counter() - start:.0f} s)",
                      file=sys.stderr, flush=True)
    finally:
        fm.size = own_size
    return {"rows": rows, "sizes": np.asarray(sizes), **{k: np.stack(v) for k, v in out.items()},
            **{f"{k}_true": t.labels[k][rows] for k in ("age", "gender", "race")},
            "seconds": np.asarray(time.perf_counter() - start)}


def score(views: dict[str, np.ndarray], combo: list[str], size_index: int,
          calibration: dict | None) -> dict[str, float]:
    """Age MAE (raw, calibrated), gender and race accuracy of the mean over ``combo``."""
    from facefuse.runtime.calibration import apply_monotone_map

    names = [v[0] for v in VIEWS]
    idx = [names.index(c) for c in combo]
    age = views["age"][:, size_index, idx].mean(1)
    gender = views["gender"][:, size_index, idx].mean(1)
    race = views["race"][:, size_index, idx].mean(1)
    out = {"age_mae": float(np.abs(age - views["age_true"]).mean()),
           "gender_acc": float((gender.argmax(1) == views["gender_true"]).mean()),
           "race_acc": float((race.argmax(1) == views["race_true"]).mean())}
    if calibration is not None:
        out["age_mae_calibrated"] = float(np.abs(apply_monotone_map(age, calibration)
                                                 - views["age_true"]).mean())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="model input sizes (default: the model's own)")
    p.add_argument("--limit", type=int, default=None, help="photos of the split (a look)")
    p.add_argument("--out", default="reports/tta_scan")
    args = p.parse_args(argv)
    import torch

    from facefuse.inference.analyzer import FaceAnalyzer

    torch.set_num_threads(1)
    analyzer = FaceAnalyzer(model=args.model, device="cpu", flip=True)
    views = collect(args.split, args.data, analyzer, args.sizes, args.limit)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / f"views-{args.split}.npz", **views)
    calibration = analyzer.model.calibration.get("age")
    lines = [f"# Test-time augmentation scan, UTKFace {args.split} ({len(views['rows'])} photos)",
             "", f"Model: {args.model or 'the shipped model'}, with flip; "
             f"{platform.machine()} CPU, one thread, {float(views['seconds']):.0f} s. Command: "
             f"`python benchmarks/tta_scan.py --split {args.split}"
             + (f" --sizes {' '.join(map(str, args.sizes))}" if args.sizes else "")
             + (f" --limit {args.limit}" if args.limit else "") + "`.", "",
             "| size | views averaged | age MAE | age MAE, calibrated | gender % | race % |",
             "|---|---|---|---|---|---|"]
    for k, size in enumerate(views["sizes"]):
        for combo in COMBOS:
            s = score(views, combo, k, calibration)
            cal = f"{s['age_mae_calibrated']:.3f}" if "age_mae_calibrated" in s else "-"
            lines.append(f"| {size} | {' + '.join(combo)} | {s['age_mae']:.3f} | {cal} | "
                         f"{100 * s['gender_acc']:.2f} | {100 * s['race_acc']:.2f} |")
    (out / f"scan-{args.split}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
