"""Fit a checkpoint's age calibration on its training run's validation split, and store it in
the checkpoint's JSON metadata (``facefuse.train.calibration`` says what the map is).

The model runs on the cache's validation rows that carry an age label, as the analyzer runs
it (test-time flip unless --no-flip), ignoring any calibration the checkpoint already has;
the map from those predictions to the true ages replaces it. Validation rows only: the test
split stays unseen, so test figures after calibration remain test figures.

Usage: python tools/calibrate_model.py CHECKPOINT --cache CACHE_DIR [--knots 24] [--no-flip]
       (CHECKPOINT without suffix, e.g. runs/shipped_finetune/final; CACHE_DIR the run's
       training cache, e.g. .facefuse-cache/mtl-...)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from facefuse.data.cache import TrainingCache
from facefuse.inference.face_model import FaceModel
from facefuse.runtime.calibration import apply_monotone_map
from facefuse.train.calibration import fit_monotone_map, raw_predictions


def calibrate(checkpoint: str | Path, cache_dir: str | Path, task: str = "age",
              split: str = "val", knots: int = 24, flip: bool = True,
              force: bool = False) -> dict:
    """Fit the map and return it with the split's MAE before and after; write it into
    ``checkpoint``'s JSON only when it lowers that MAE (or with ``force``), so a map that
    does not help is never shipped by accident (``written`` in the result says which)."""
    checkpoint = Path(checkpoint)
    info = checkpoint.with_suffix(".json")
    model = FaceModel.from_checkpoint(checkpoint, flip=flip)
    if task not in model.tasks:
        raise ValueError(f"{checkpoint} has no {task!r} head")
    predicted, true = raw_predictions(model, TrainingCache.open(cache_dir), task, split)
    mapping = fit_monotone_map(predicted, true, knots)
    mapping.update(split=split, flip=flip, cache=Path(cache_dir).name)
    before = float(np.abs(predicted - true).mean())
    after = float(np.abs(apply_monotone_map(predicted, mapping) - true).mean())
    result = {"task": task, "rows": len(true), "mae_before": before, "mae_after": after,
              "map": mapping, "written": force or after < before}
    if not result["written"]:
        return result
    meta = json.loads(info.read_text())
    meta.setdefault("calibration", {})[task] = mapping
    tmp = info.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(info)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="checkpoint path without suffix")
    p.add_argument("--cache", required=True, help="the run's training cache folder")
    p.add_argument("--knots", type=int, default=24)
    p.add_argument("--no-flip", action="store_true", help="fit on predictions without flip")
    p.add_argument("--force", action="store_true",
                   help="write the map even when it does not lower the validation MAE")
    args = p.parse_args()
    try:
        r = calibrate(args.checkpoint, args.cache, knots=args.knots, flip=not args.no_flip,
                      force=args.force)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"calibrate_model: {exc}") from None
    where = Path(args.checkpoint).with_suffix(".json")
    print(f"{r['task']}: {r['rows']} validation rows, MAE {r['mae_before']:.3f} before, "
          f"{r['mae_after']:.3f} after; "
          + (f"written to {where}" if r["written"] else f"NOT written to {where} (no gain; "
             "--force writes it)"))
    if not r["written"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
