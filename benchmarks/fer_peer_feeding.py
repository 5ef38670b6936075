"""Why the ``fer`` package scored 43 % on FER2013 in compare_peers.py: the same network fed
the test crops two ways. Runs in the peers' environment (benchmarks/peers_worker.py's
docstring says how to make it).

Usage: PEERS_VENV/bin/python benchmarks/fer_peer_feeding.py [--data ../shared/data] [--limit N]

* ``offsets (10, 10)``: the whole 48x48 crop as the face box with fer's default offsets (as
  compare_peers.py fed it until 2026-12-07): fer pads the image with 40 px of the bottom
  rows' mean grey and widens the box by 10 px into that border.
* ``offsets (0, 0)``: the crop as it is, the box of the crops the network was trained on.

Measured (fer 25.10.3, all 3,589 test crops): 43.0 % and 58.3 %.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

EMOTIONS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def main() -> None:
    import cv2
    from fer.fer import FER

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" /
                                         "data"))
    p.add_argument("--limit", type=int, default=None)
    args = p.parse_args()
    files = [(f, c) for c in EMOTIONS
             for f in sorted((Path(args.data) / "fer2013" / "test" / c).glob("*.jpg"))]
    files = [files[i] for i in np.random.default_rng(0).permutation(len(files))[:args.limit]]
    variants = {"offsets (10, 10)": FER(), "offsets (0, 0)": FER(offsets=(0, 0))}
    hits = {k: 0 for k in variants}
    for f, label in files:
        bgr = cv2.imread(str(f))
        h, w = bgr.shape[:2]
        for name, fer in variants.items():
            found = fer.detect_emotions(bgr, face_rectangles=[(0, 0, w, h)])
            top = max(found[0]["emotions"], key=found[0]["emotions"].get) if found else None
            hits[name] += top == label
    for name, n in hits.items():
        print(f"{name}: {100 * n / len(files):.1f} % of {len(files)} FER2013 test crops")


if __name__ == "__main__":
    main()
