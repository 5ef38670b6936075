"""Ship a trained checkpoint as a model the core install runs: its ONNX graph (weights stored
as float16 by default) and JSON metadata, with what the analyzer and the model card rely on
(verification threshold, crop margin, licence, provenance) and the graph's measured parity
with PyTorch. Nothing is exported at start-up: ONNX Runtime runs the graph alone.

The graph is exported and measured in a staging folder first; only a graph within the
parity tolerance and the size limit replaces the one in place (through the one atomic
writer), so a refused ship leaves the shipped model as it was.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from facefuse.files import atomic_path, write_text_atomic
from facefuse.models.onnx_export import export_onnx, onnx_parity
from facefuse.runtime.model_files import (
    checkpoint_paths,
    graph_path,
    read_model_meta,
    write_weights_and_json,
)

#: the licence of a model trained on this project's datasets, when the checkpoint names none
DEFAULT_LICENCE = ("Research and non-commercial use only: trained on UTKFace, FER2013, CelebA, "
                   "LFW and 300-W, whose terms are non-commercial; the model inherits them.")
COMPRESSIONS = ("float16", "none")


class ShipRefused(ValueError):
    """The exported graph differs from PyTorch by more than the tolerance, or is too large."""


@dataclass(frozen=True)
class Shipped:
    """What :func:`ship_model` wrote."""

    graph: Path
    size_mb: float
    parity: dict[str, float]
    kept: Path | None  # the copy of the PyTorch checkpoint, when one was asked for


def keep_checkpoint(checkpoint: str | Path, folder: str | Path, name: str) -> Path:
    """Copy a checkpoint's .safetensors and .json to ``folder/name.*`` (each atomically;
    nothing when they are already those files); returns ``folder/name.safetensors``."""
    target = Path(folder) / name
    for src, dst in zip(checkpoint_paths(checkpoint), checkpoint_paths(target), strict=True):
        if src.resolve() != dst.resolve():
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
    return checkpoint_paths(target)[0]


def ship_model(checkpoint: str | Path, out_dir: str | Path, name: str,
               threshold: float | None = None, margin: float = 0.2,
               compression: str = "float16", tolerance: float = 0.02, max_mb: float = 20.0,
               licence: str | None = None, card: str = "docs/MODEL_CARD.md",
               keep_dir: str | Path | None = None) -> Shipped:
    """Export ``checkpoint`` to ``out_dir/name.onnx`` and ``.json``.

    Args:
        threshold: the cosine threshold for verify and search (default: the checkpoint's
            ``verification_threshold``).
        margin: the crop margin the model was trained with (share of the face box).
        compression: how the graph stores its weights, ``float16`` or ``none``.
        tolerance: the largest accepted |onnxruntime - torch| on any output.
        max_mb: the largest accepted graph, in MiB.
        licence: the model's licence (default: the checkpoint's, else
            :data:`DEFAULT_LICENCE`).
        card: where the model card is, recorded as ``model_card``.
        keep_dir: also copy the PyTorch checkpoint there (to fine-tune from), recorded as
            ``exported_from``.

    Raises:
        FileNotFoundError: no checkpoint at ``checkpoint``.
        ValueError: no threshold anywhere, or an unknown compression.
        ShipRefused: the graph fails the parity or size check (nothing was replaced).
    """
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    weights = checkpoint_paths(checkpoint)[0]
    if not weights.is_file():
        raise FileNotFoundError(f"no checkpoint {weights}")
    meta = read_model_meta(checkpoint)
    threshold = threshold if threshold is not None else meta.get("verification_threshold")
    if threshold is None:
        raise ValueError(f"{checkpoint} has no verification_threshold; pass one (--threshold)")
    target = Path(out_dir) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".ship-") as staging:
        staged = export_onnx(checkpoint, Path(staging) / name, compression=compression,
                             verification_threshold=threshold, crop_margin=margin,
                             licence=licence or meta.get("licence", DEFAULT_LICENCE),
                             model_card=card, exported_from=str(weights))
        parity = onnx_parity(checkpoint, staged)
        worst, size_mb = max(parity.values()), staged.stat().st_size / 2**20
        if worst >= tolerance or size_mb > max_mb:
            raise ShipRefused(f"refused: parity {worst:.2e} (tolerance {tolerance:g}) or size "
                              f"{size_mb:.1f} MB (limit {max_mb:g}); {target}.onnx is unchanged")
        kept = keep_checkpoint(checkpoint, keep_dir, name) if keep_dir is not None else None
        doc = {**read_model_meta(staged), "onnx_parity_max_abs": {
            k: float(f"{v:.3g}") for k, v in parity.items()}}
        if kept is not None:
            doc["exported_from"] = str(kept)
        graph = write_weights_and_json(target, lambda f: shutil.copyfile(staged, f), doc,
                                       suffix=".onnx")
    return Shipped(graph_path(graph), size_mb, parity, kept)


def expected_predictions(model: str | Path) -> dict:
    """The analyzer's predictions with ``model`` (and the shipped identity networks and
    heads, as the default analyzer runs) on the embedded demo photo: what
    ``tests/test_shipped_model.py`` holds the shipped model to."""
    from facefuse.assets import demo_image_path
    from facefuse.inference.analyzer import FaceAnalyzer

    face = FaceAnalyzer(model=model, device="cpu", identity="shipped",
                        identity_heads="shipped").analyze(demo_image_path()).faces[0]
    own = FaceAnalyzer(model=model, device="cpu", identity=None,
                       identity_heads=None).analyze(demo_image_path()).faces[0]
    p, q = face.predictions, own.predictions
    return {"box": [round(v, 2) for v in face.box], "age": p["age"],
            **{t: p[t]["label"] for t in ("gender", "race", "emotion")},
            "model_heads": {"age": q["age"],
                            **{t: q[t]["label"] for t in ("gender", "race", "emotion")}},
            "model_embedding_head": q["embedding"][:8],
            "embedding_head": p["embedding"][:8], "embedding_dim": len(p["embedding"])}


def write_expected_predictions(model: str | Path, path: str | Path) -> dict:
    """:func:`expected_predictions` written to ``path`` (JSON, atomically)."""
    import json

    expected = expected_predictions(model)
    write_text_atomic(path, json.dumps(expected, indent=1) + "\n")
    return expected
