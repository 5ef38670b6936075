"""Copy a trained checkpoint into the package as the shipped model, adding the metadata the
analyzer and the model card rely on (verification threshold, licence terms, provenance).

Usage: python tools/ship_model.py RUN_FOLDER --threshold T [--checkpoint final]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from facefuse.weights import SHIPPED_MODEL

LICENCE = ("Research and non-commercial use only: trained on UTKFace, FER2013, CelebA, LFW "
           "and 300-W, whose terms are non-commercial; the model inherits them.")
MAX_MB = 20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--threshold", type=float, required=True,
                   help="cosine threshold for verify/search (from LFW View-2 training folds)")
    p.add_argument("--checkpoint", default="final")
    args = p.parse_args()
    src = Path(args.run) / args.checkpoint
    dst = Path(__file__).resolve().parents[1] / "src" / "facefuse" / "weights" / SHIPPED_MODEL
    size_mb = src.with_suffix(".safetensors").stat().st_size / 2**20
    if size_mb > MAX_MB:
        raise SystemExit(f"{src}.safetensors is {size_mb:.1f} MB, above {MAX_MB} MB")
    meta = json.loads(src.with_suffix(".json").read_text())
    meta.update(verification_threshold=args.threshold, licence=LICENCE,
                model_card="docs/MODEL_CARD.md", trained_from=str(Path(args.run).name))
    shutil.copy(src.with_suffix(".safetensors"), dst.with_suffix(".safetensors"))
    dst.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    print(f"shipped {dst}.safetensors ({size_mb:.1f} MB)")


if __name__ == "__main__":
    main()
