"""Copy a trained checkpoint into the package as the shipped model, adding the metadata the
analyzer and the model card rely on (verification threshold, licence terms, provenance).

Usage: python tools/ship_model.py RUN_FOLDER --threshold T [--checkpoint final] [--half]

It then writes the new model's predictions on the embedded demo photo to
tests/data/shipped_expected.json, which the stable-prediction test checks.
``--half`` stores the weights as float16 (half the size); loading casts them back to the
model's float32, so only the last bits of each weight change.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from facefuse.weights import SHIPPED_MODEL

LICENCE = ("Research and non-commercial use only: trained on UTKFace, FER2013, CelebA, LFW "
           "and 300-W, whose terms are non-commercial; the model inherits them.")
MAX_MB = 20
EXPECTED = Path(__file__).resolve().parents[1] / "tests" / "data" / "shipped_expected.json"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--threshold", type=float, required=True,
                   help="cosine threshold for verify/search (from LFW View-2 training folds)")
    p.add_argument("--checkpoint", default="final")
    p.add_argument("--half", action="store_true", help="store float weights as float16")
    args = p.parse_args()
    src = Path(args.run) / args.checkpoint
    dst = Path(__file__).resolve().parents[1] / "src" / "facefuse" / "weights" / SHIPPED_MODEL
    if not src.with_suffix(".safetensors").is_file():
        raise SystemExit(f"no checkpoint {src}.safetensors")
    meta = json.loads(src.with_suffix(".json").read_text())
    meta.update(verification_threshold=args.threshold, licence=LICENCE,
                model_card="docs/MODEL_CARD.md", trained_from=str(Path(args.run).name),
                weights_dtype="float16" if args.half else "float32")
    tmp = dst.with_suffix(".safetensors.tmp")
    if args.half:
        state = {k: v.half() if v.is_floating_point() else v
                 for k, v in load_file(str(src.with_suffix(".safetensors"))).items()}
        save_file(state, str(tmp))
    else:
        shutil.copy(src.with_suffix(".safetensors"), tmp)
    size_mb = tmp.stat().st_size / 2**20
    if size_mb > MAX_MB:
        tmp.unlink()
        raise SystemExit(f"{src}.safetensors is {size_mb:.1f} MB shipped, above {MAX_MB} MB; "
                         f"try --half")
    tmp.replace(dst.with_suffix(".safetensors"))
    dst.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    print(f"shipped {dst}.safetensors ({size_mb:.1f} MB)")
    write_expected_predictions()


def write_expected_predictions() -> None:
    """Record the shipped model's predictions on the embedded photo, which
    tests/test_shipped_model.py then holds it to."""
    from facefuse.assets import demo_image_path
    from facefuse.inference.analyzer import FaceAnalyzer

    face = FaceAnalyzer(device="cpu").analyze(demo_image_path()).faces[0]
    p = face.predictions
    expected = {"box": [round(v, 2) for v in face.box], "age": p["age"],
                **{t: p[t]["label"] for t in ("gender", "race", "emotion")},
                "embedding_head": p["embedding"][:8]}
    EXPECTED.write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {EXPECTED}: {expected}")


if __name__ == "__main__":
    main()
