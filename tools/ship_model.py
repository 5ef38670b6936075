"""Ship a trained checkpoint as the package's multi-task model: its ONNX graph (weights stored
as float16) and JSON metadata in ``src/facefuse/weights/``, with the metadata the analyzer
and the model card rely on (verification threshold, crop margin, licence, provenance) and
the graph's measured parity with PyTorch. The core install runs the graph with ONNX Runtime
alone; nothing is exported at start-up.

Usage: python tools/ship_model.py CHECKPOINT [--threshold T] [--margin 0.2]
       [--compression float16] [--tolerance 0.02]

CHECKPOINT is a ``.safetensors`` checkpoint (``runs/NAME/final``); it is also copied to
``checkpoints/`` (the PyTorch weights the shipped graph came from, to fine-tune from). The
new model's predictions on the embedded demo photo are then written to
``tests/data/shipped_expected.json``, which the stable-prediction test checks. Needs the
training extra.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from facefuse.models.onnx_export import export_onnx, onnx_parity
from facefuse.runtime.model_files import checkpoint_paths, read_model_meta
from facefuse.weights import SHIPPED_MODEL

ROOT = Path(__file__).resolve().parents[1]
LICENCE = ("Research and non-commercial use only: trained on UTKFace, FER2013, CelebA, LFW "
           "and 300-W, whose terms are non-commercial; the model inherits them.")
MAX_MB = 20
EXPECTED = ROOT / "tests" / "data" / "shipped_expected.json"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--threshold", type=float, default=None,
                   help="cosine threshold for verify/search (default: the checkpoint's)")
    p.add_argument("--margin", type=float, default=0.2,
                   help="crop margin the model was trained with (share of the face box)")
    p.add_argument("--compression", default="float16", choices=("none", "float16"))
    p.add_argument("--tolerance", type=float, default=0.02,
                   help="largest |onnxruntime - torch| accepted on any output")
    args = p.parse_args()
    src_weights, src_json = checkpoint_paths(args.checkpoint)
    if not src_weights.is_file():
        raise SystemExit(f"no checkpoint {src_weights}")
    meta = read_model_meta(args.checkpoint)
    kept = ROOT / "checkpoints" / SHIPPED_MODEL
    if src_weights.resolve() != kept.with_suffix(".safetensors").resolve():
        kept.parent.mkdir(exist_ok=True)
        shutil.copy(src_weights, kept.with_suffix(".safetensors"))
        shutil.copy(src_json, kept.with_suffix(".json"))
    threshold = args.threshold if args.threshold is not None else \
        meta.get("verification_threshold")
    if threshold is None:
        raise SystemExit("the checkpoint has no verification_threshold; pass --threshold")
    dst = ROOT / "src" / "facefuse" / "weights" / SHIPPED_MODEL
    out = export_onnx(args.checkpoint, dst, compression=args.compression,
                      verification_threshold=threshold, crop_margin=args.margin,
                      licence=meta.get("licence", LICENCE),
                      model_card="docs/MODEL_CARD.md",
                      exported_from=f"checkpoints/{SHIPPED_MODEL}.safetensors")
    parity = onnx_parity(args.checkpoint, out)
    worst = max(parity.values())
    size_mb = out.stat().st_size / 2**20
    print(f"shipped {out} ({size_mb:.1f} MB, weights {args.compression}); max |onnxruntime "
          f"- torch| {worst:.2e} ({', '.join(f'{k} {v:.1e}' for k, v in parity.items())})")
    if worst >= args.tolerance or size_mb > MAX_MB:
        out.unlink()
        raise SystemExit(f"refused: parity {worst:.2e} (tolerance {args.tolerance}) or size "
                         f"{size_mb:.1f} MB (limit {MAX_MB})")
    from facefuse.identity_format import write_json_atomic

    doc = read_model_meta(out)
    doc["onnx_parity_max_abs"] = {k: float(f"{v:.3g}") for k, v in parity.items()}
    write_json_atomic(out.with_suffix(".json"), doc)
    write_expected_predictions()


def write_expected_predictions() -> None:
    """Record the shipped model's predictions on the embedded photo, which
    tests/test_shipped_model.py then holds it to."""
    import json

    from facefuse.assets import demo_image_path
    from facefuse.inference.analyzer import FaceAnalyzer

    face = FaceAnalyzer(device="cpu").analyze(demo_image_path()).faces[0]
    own = FaceAnalyzer(device="cpu", identity=None,
                       identity_heads=None).analyze(demo_image_path()).faces[0]
    p, q = face.predictions, own.predictions
    expected = {"box": [round(v, 2) for v in face.box], "age": p["age"],
                **{t: p[t]["label"] for t in ("gender", "race", "emotion")},
                "model_heads": {"age": q["age"],
                                **{t: q[t]["label"] for t in ("gender", "race", "emotion")}},
                "model_embedding_head": q["embedding"][:8],
                "embedding_head": p["embedding"][:8], "embedding_dim": len(p["embedding"])}
    EXPECTED.write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {EXPECTED}: {expected}")


if __name__ == "__main__":
    main()
