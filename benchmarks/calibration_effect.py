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
from pathlib import Path

import numpy as np

from facefuse.data.cache import TrainingCache
from facefuse.evaluation.cache_predictions import raw_predictions
from facefuse.inference.face_model import FaceModel
from facefuse.runtime.calibration import apply_monotone_map

GROUPS = {"all": (0, np.inf), "under 18": (0, 18), "60 and over": (60, np.inf)}


def calibration_effect(checkpoint: str | Path, cache_dir: str | Path, task: str = "age",
                       splits: tuple[str, ...] = ("val", "test"), flip: bool = True
                       ) -> list[dict]:
    """One row per split: ``{"split", "rows", GROUP: (mae_before, mae_after), ...}`` for the
    groups of :data:`GROUPS` (true value in [low, high)); a group with no face is left out.

    Raises:
        ValueError: the checkpoint has no head or no stored calibration for ``task``.
    """
    model = FaceModel.from_checkpoint(checkpoint, flip=flip)
    if task not in model.tasks:
        raise ValueError(f"{checkpoint} has no {task!r} head")
    mapping = model.calibration.get(task)
    if mapping is None:
        raise ValueError(f"{checkpoint} carries no {task!r} calibration "
                         "(facefuse model calibrate fits one)")
    cache = TrainingCache.open(cache_dir)
    out = []
    for split in splits:
        predicted, true = raw_predictions(model, cache, task, split)
        calibrated = apply_monotone_map(predicted, mapping)
        row: dict = {"split": split, "rows": len(true)}
        for name, (low, high) in GROUPS.items():
            inside = (true >= low) & (true < high)
            if inside.any():
                row[name] = (float(np.abs(predicted[inside] - true[inside]).mean()),
                             float(np.abs(calibrated[inside] - true[inside]).mean()))
        out.append(row)
    return out


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
