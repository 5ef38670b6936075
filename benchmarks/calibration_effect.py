"""What a checkpoint's stored age calibration does, on its training cache's validation split
(where it was fitted) and test split: MAE before and after, over everyone and by age group.
Prints the Markdown table of the model card's "Age calibration" section.

The model runs as the analyzer runs it (test-time flip unless --no-flip); "before" is the
head's raw output, "after" the same output through the map the checkpoint carries
(``facefuse model calibrate`` fits it).

Usage: python benchmarks/calibration_effect.py CHECKPOINT --cache CACHE_DIR [--no-flip]
       python benchmarks/calibration_effect.py src/facefuse/weights/facefuse-mtl-small \
           --cache .facefuse-cache/mtl-...   (the shipped model)
"""

from __future__ import annotations

import argparse

from facefuse.lifecycle.calibrate import GROUPS, calibration_effect


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="checkpoint path without suffix")
    p.add_argument("--cache", required=True, help="the run's training cache folder")
    p.add_argument("--no-flip", action="store_true", help="predict without test-time flip")
    args = p.parse_args()
    try:
        rows = calibration_effect(args.checkpoint, args.cache, flip=not args.no_flip)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"calibration_effect: {exc}") from None
    names = list(GROUPS)
    print("| split | faces | " + " | ".join(f"MAE {n}, before to after" for n in names)
          + " |\n|---|---|" + "---|" * len(names))
    for r in rows:
        cells = [f"{r[n][0]:.2f} to {r[n][1]:.2f}" if n in r else "no face" for n in names]
        print(f"| {r['split']} | {r['rows']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
