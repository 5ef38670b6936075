"""Average the weights of checkpoints of one architecture into a new checkpoint (a model
soup; ``facefuse.models.averaging`` says when it works and what the result carries).

Usage: python tools/average_checkpoints.py A B [C ...] --out PATH [--weights 0.5 0.5] [--force]
       (checkpoint paths without suffix, e.g. runs/shipped_gpu/final runs/shipped_finetune/final)

The result has no age calibration (its sources' maps were fitted to other outputs): run
tools/calibrate_model.py on it before shipping. An existing PATH is kept unless --force.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from facefuse.models.averaging import average_weights
from facefuse.models.checkpoint import save_checkpoint
from facefuse.runtime.model_files import checkpoint_paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+", help="two or more checkpoint paths")
    p.add_argument("--out", required=True, help="where to write PATH.safetensors/.json")
    p.add_argument("--weights", nargs="+", type=float,
                   help="one positive weight per checkpoint (default: equal)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    args = p.parse_args()
    if any(f.exists() for f in checkpoint_paths(args.out)) and not args.force:
        raise SystemExit(f"average_checkpoints: {args.out} exists; --force overwrites it")
    try:
        averaged = average_weights(args.checkpoints, args.weights)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"average_checkpoints: {exc}") from None
    written = save_checkpoint(averaged.model, args.out, **averaged.meta)
    parts = ", ".join(f"{a['checkpoint']} x {a['weight']:.3f}"
                      for a in averaged.meta["averaged_from"])
    print(f"wrote {written} and {Path(written).with_suffix('.json')}: {parts}")


if __name__ == "__main__":
    main()
