"""Faces to enrol in bulk from a ``facefuse batch`` output folder (``--embed-only`` or a full
run): one face per photo, the largest or the one at a given index, with its subject taken
from a column of the faces table or from the photo's folder (``PEOPLE/<name>/*.jpg``, as
``--from-folder`` reads it). The embeddings' fingerprint comes from the batch's
``manifest.json``, so the gallery refuses embeddings other weights made. Needs pyarrow
(the batch extra)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facefuse.gallery.enrol import LARGEST
from facefuse.gallery.records import GalleryError, check_name


@dataclass(frozen=True)
class BulkFaces:
    """The faces chosen from a batch output: one per photo with a face, in source order,
    and a note for each photo left out."""

    fingerprint: str
    subjects: list[str]
    embeddings: np.ndarray
    sources: list[str]
    faces: list[int]
    boxes: list[tuple[float, float, float, float]]
    notes: list[str] = field(default_factory=list)


def read_batch_faces(out: str | Path, choice: str | int = LARGEST,
                     subject_column: str | None = None) -> BulkFaces:
    """The faces to enrol from batch output folder ``out``.

    Args:
        choice: ``"largest"`` or a face number, per photo (video frames are left out).
        subject_column: a column of the faces table naming each face's subject (None: the
            name of the photo's folder).

    Raises:
        FileNotFoundError: ``out`` is not a batch output folder.
        ValueError: it has no embeddings, or no such subject column.
    """
    import pyarrow.parquet as pq

    out = Path(out)
    manifest_path, faces_dir = out / "manifest.json", out / "faces"
    if not manifest_path.is_file() or not faces_dir.is_dir():
        raise FileNotFoundError(f"{out} is not a `facefuse batch` output folder (no "
                                f"manifest.json and faces/ in it)")
    fingerprint = (json.loads(manifest_path.read_text()).get("fingerprints") or {}).get(
        "embedding")
    parts = sorted(faces_dir.glob("*.parquet"))
    columns = pq.read_schema(parts[0]).names if parts else []
    if fingerprint is None or (parts and "embedding" not in columns):
        raise ValueError(f"{out} holds no identity embeddings (run `facefuse batch` with "
                         f"--embed-only, or with the embedding among its tasks)")
    if subject_column is not None and parts and subject_column not in columns:
        raise ValueError(f"{out}'s faces have no {subject_column!r} column")
    wanted = ["source", "frame", "face", "x0", "y0", "x1", "y1", "embedding",
              *([subject_column] if subject_column else [])]
    rows = [r for p in parts for r in pq.read_table(p, columns=wanted).to_pylist()
            if r["frame"] is None]
    by_source: dict[str, list[dict]] = {}
    for r in rows:
        by_source.setdefault(r["source"], []).append(r)
    chosen, notes = [], []
    for source in sorted(by_source):
        faces = by_source[source]
        if choice == LARGEST:
            pick = max(faces, key=lambda r: (r["x1"] - r["x0"]) * (r["y1"] - r["y0"]))
        else:
            pick = next((r for r in faces if r["face"] == choice), None)
            if pick is None:
                notes.append(f"{source}: no face {choice}")
                continue
        subject = str(pick[subject_column]) if subject_column else \
            Path(pick["source"]).parent.name
        try:
            pick["subject"] = check_name(subject)
        except GalleryError as exc:
            notes.append(f"{source}: {exc}")
            continue
        chosen.append(pick)
    return BulkFaces(
        fingerprint,
        [r["subject"] for r in chosen],
        np.asarray([r["embedding"] for r in chosen], np.float32).reshape(len(chosen), -1),
        [r["source"] for r in chosen], [r["face"] for r in chosen],
        [(r["x0"], r["y0"], r["x1"], r["y1"]) for r in chosen], notes)
