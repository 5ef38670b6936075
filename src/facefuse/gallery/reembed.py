"""Re-embedding a gallery that keeps its faces' photos: every face embedded again by the
analyzer at hand (other weights, another fusion), then committed at once with the new
fingerprint, width and threshold (:meth:`FaceGallery.replace_embeddings`).

Each photo is analysed again and the face that was enrolled is found in it by its stored
box: the detected face whose box overlaps it most (intersection over union at least
:data:`MIN_OVERLAP`), or the largest face when no box was stored. Nothing changes unless
every face is found: a face that is not is named in the error, to be removed or enrolled
again first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from facefuse.data.images import ImageError, decode_rgb
from facefuse.gallery.embedding_space import EmbeddingSpace
from facefuse.gallery.enrol import choose_face
from facefuse.gallery.records import GalleryError
from facefuse.gallery.store import FaceGallery
from facefuse.inference.analyzer import FaceAnalyzer, FaceResult, ImageResult

#: the least intersection over union between a stored box and the face found again
MIN_OVERLAP = 0.3
#: faces named at most in the error when some cannot be re-embedded
NAMED = 5


@dataclass(frozen=True)
class Reembedded:
    """What a re-embedding did: the faces it embedded again, the fingerprint and width
    before and after."""

    faces: int
    old_fingerprint: str
    new_fingerprint: str
    old_dim: int
    new_dim: int
    threshold: float

    def to_dict(self) -> dict[str, object]:
        return {"faces": self.faces, "fingerprint": {"old": self.old_fingerprint,
                                                     "new": self.new_fingerprint},
                "dim": {"old": self.old_dim, "new": self.new_dim},
                "threshold": round(self.threshold, 6)}


def overlap(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes (x1, y1, x2, y2)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def same_face(result: ImageResult, box: Sequence[float] | None) -> FaceResult:
    """The face of ``result`` that was enrolled with ``box`` (None: the largest).

    Raises:
        ValueError: no face, or none overlapping ``box`` enough (one line).
    """
    if box is None:
        return choose_face(result)
    if not result.faces:
        raise ValueError("no face found in its photo")
    best = max(result.faces, key=lambda f: overlap(f.box, box))
    if overlap(best.box, box) < MIN_OVERLAP:
        raise ValueError(f"no face found where it was enrolled (box "
                         f"{' '.join(f'{v:.0f}' for v in box)})")
    return best


def reembed(gallery: FaceGallery, analyzer: FaceAnalyzer, space: EmbeddingSpace,
            threshold: float | None = None, batch_images: int = 32,
            progress: Callable[[int, int], None] | None = None) -> Reembedded:
    """Embed every face of ``gallery`` (open for writing, keeping its photos) again with
    ``analyzer``, whose embeddings ``space`` describes (:func:`embedding_space`), and commit
    them with its fingerprint and width in one transaction; the index is rebuilt.
    ``threshold``: the gallery's new one (None: the new embeddings' own). ``progress(done,
    total)`` after each batch of photos.

    Raises:
        GalleryError: the gallery keeps no photos, is read-only, or some faces could not
            be found again (nothing changed; the first few named with the reason).
    """
    if not gallery.keeps_images:
        raise GalleryError(f"gallery {gallery.folder} did not keep its photos (made without "
                           f"--keep-images), so it cannot be re-embedded: enrol the photos "
                           f"again into a new gallery")
    if gallery.readonly:
        raise GalleryError(f"gallery {gallery.folder} is open read-only")
    before = gallery.info()
    ids = gallery.face_ids()
    vectors = np.zeros((len(ids), space.dim), np.float32)
    failed: list[str] = []
    for start in range(0, len(ids), batch_images):
        rows = gallery.source_images(ids[start:start + batch_images])
        for offset, face in enumerate(_embed(analyzer, rows)):
            if isinstance(face, str):
                failed.append(face)
            else:
                vectors[start + offset] = face
        if progress is not None:
            progress(min(start + batch_images, len(ids)), len(ids))
    if failed:
        more = f" and {len(failed) - NAMED} more" if len(failed) > NAMED else ""
        raise GalleryError(f"{len(failed)} of {len(ids)} face(s) could not be re-embedded, "
                           f"nothing changed: {'; '.join(failed[:NAMED])}{more} (remove them "
                           f"with `facefuse gallery remove {gallery.folder} --face ID`, then "
                           f"run again)")
    new_threshold = space.threshold if threshold is None else threshold
    gallery.replace_embeddings(ids, vectors, space.dim, space.fingerprint, new_threshold)
    return Reembedded(len(ids), before.fingerprint, space.fingerprint, before.dim, space.dim,
                      float(new_threshold))


def _embed(analyzer: FaceAnalyzer,
           rows: list[tuple[int, tuple[float, ...] | None, bytes | None]]
           ) -> list[np.ndarray | str]:
    """Per row, the embedding of its face, or why there is none ("face N: ...")."""
    out: list[np.ndarray | str | None] = [None] * len(rows)
    images, where = [], []
    for i, (face_id, _, data) in enumerate(rows):
        if data is None:
            out[i] = f"face {face_id}: its photo is not kept"
            continue
        try:
            images.append(decode_rgb(data, "its photo", analyzer.max_pixels))
            where.append(i)
        except ImageError as exc:
            out[i] = f"face {face_id}: {exc}"
    results = analyzer.analyze_many(images, batch_images=max(1, len(images))) if images \
        else []
    for i, result in zip(where, results, strict=True):
        face_id, box = rows[i][0], rows[i][1]
        if result.error:
            out[i] = f"face {face_id}: {result.error}"
            continue
        try:
            out[i] = np.asarray(same_face(result, box).predictions["embedding"], np.float32)
        except (ValueError, KeyError) as exc:
            out[i] = f"face {face_id}: {exc}"
    return out  # type: ignore[return-value]
