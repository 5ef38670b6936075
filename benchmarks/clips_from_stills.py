"""Labeled video clips assembled from labeled stills, to evaluate the clip classifier.

No labeled video set is in ../shared/data, so each clip here is made from one FER2013
still (48x48 grayscale, so one person, one expression): the still is upscaled to --size
pixels (bicubic) and moved a little in every frame, as a hand-held camera would: a random
walk of shift (up to 4 % of the side), scale (up to 5 %), rotation (up to 6 degrees) and
brightness (up to 10 %), plus mild pixel noise; --frames frames at 10 fps, written as
.mp4 (OpenCV, mp4v). Clips from the FER2013 training images are the clip classifier's
training split, clips from its test images its test split; --per-class clips each.

Then ``facefuse video fit`` trains the clip classifier (a logistic regression on the mean,
std, min and max of the frame embeddings, as in Savchenko's paper) on the training clips
and scores the test clips; beside it, the model's own emotion head on the middle frame of
each test clip and on the still it was made from. The clips show faces only, so the
detector is ``full_frame``.

Usage: python benchmarks/clips_from_stills.py [--per-class 40] [--frames 16] [--size 128]
       [--model CHECKPOINT] [--out reports/clips_from_stills]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def make_clip(still: np.ndarray, path: Path, frames: int, size: int,
              rng: np.random.Generator) -> None:
    import cv2

    base = cv2.resize(still, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (size, size))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    state = np.zeros(5)  # dx, dy, log-scale, angle, brightness
    limits = np.array([0.04 * size, 0.04 * size, 0.05, 6.0, 0.10])
    for _ in range(frames):
        state = np.clip(state + rng.normal(0, limits / 4), -limits, limits)
        m = cv2.getRotationMatrix2D((size / 2, size / 2), state[3], float(np.exp(state[2])))
        m[:, 2] += state[:2]
        frame = cv2.warpAffine(base, m, (size, size), borderMode=cv2.BORDER_REFLECT)
        frame = frame * (1 + state[4]) + rng.normal(0, 3, frame.shape)
        gray = np.clip(frame, 0, 255).astype(np.uint8)
        writer.write(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    writer.release()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--per-class", type=int, default=40, help="clips per emotion and split")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--model", help="checkpoint (default: the shipped model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="reports/clips_from_stills")
    args = p.parse_args()

    from facefuse.data.readers import read_dataset
    from facefuse.tasks import EMOTIONS

    out = Path(args.out)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    t = read_dataset("fer2013", args.data).table
    rng = np.random.default_rng(args.seed)
    rows_out, stills = [], {}
    for split, source in (("train", "train"), ("test", "test")):
        for k, emotion in enumerate(EMOTIONS):
            rows = np.flatnonzero((t.split == source) & (t.labels["emotion"] == k))
            for r in rng.permutation(rows)[:args.per_class]:
                name = f"{split}_{emotion}_{Path(t.image[r]).stem}.mp4"
                with Image.open(t.image[r]) as im:
                    still = np.asarray(im.convert("L"))
                make_clip(still, out / "clips" / name, args.frames, args.size, rng)
                rows_out.append({"video": f"clips/{name}", "label": emotion, "split": split})
                stills[name] = str(t.image[r])
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["video", "label", "split"])
        w.writeheader()
        w.writerows(rows_out)
    print(f"{len(rows_out)} clips of {args.frames} frames ({args.size} px, 10 fps) "
          f"written under {out / 'clips'}; manifest {manifest}")

    cmd = ["facefuse", "video", "fit", str(manifest), "--out", str(out / "clip_classifier.json"),
           "--detector", "full_frame", "--fps", "10", "--quiet"]
    if args.model:
        cmd += ["--model", args.model]
    print("$", " ".join(cmd))
    fit = subprocess.run([sys.executable, "-m", "facefuse.cli", *cmd[1:]], capture_output=True,
                         text=True)
    print(fit.stdout + fit.stderr)
    if fit.returncode:
        sys.exit(fit.returncode)

    import cv2

    from facefuse.inference.analyzer import FaceAnalyzer

    analyzer = FaceAnalyzer(tasks=["emotion"], model=args.model, detector="full_frame")
    test = [r for r in rows_out if r["split"] == "test"]
    hits_frame = hits_still = 0
    for r in test:
        cap = cv2.VideoCapture(str(out / r["video"]))
        cap.set(cv2.CAP_PROP_POS_FRAMES, args.frames // 2)
        ok, frame = cap.read()
        cap.release()
        if ok:
            face = analyzer.analyze(np.ascontiguousarray(frame[:, :, ::-1])).faces[0]
            hits_frame += face.predictions["emotion"]["label"] == r["label"]
        face = analyzer.analyze(stills[Path(r["video"]).name]).faces[0]
        hits_still += face.predictions["emotion"]["label"] == r["label"]
    lines = [f"emotion head on the middle frame of each test clip: "
             f"{100 * hits_frame / len(test):.1f} % ({len(test)} clips)",
             f"emotion head on the still each test clip was made from: "
             f"{100 * hits_still / len(test):.1f} %",
             f"chance (7 balanced classes): {100 / len(EMOTIONS):.1f} %"]
    (out / "report.md").write_text("\n".join([fit.stdout.strip(), *lines]) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
