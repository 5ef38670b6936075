"""What a face gallery holds and answers, as plain frozen dataclasses, the errors it raises,
and the checks of what callers give it (names, ids, embeddings)."""

from __future__ import annotations

import numbers
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: a subject's name: 1 to 128 characters, no control character, no slash or backslash, no
#: space at either end (it travels in URLs and file listings)
NAME_PATTERN = re.compile(r"[^\x00-\x1f\x7f/\\]{1,128}")
Box = tuple[float, float, float, float]


class GalleryError(ValueError):
    """A request the gallery refuses: bad input, an unknown subject or face, a gallery that
    is empty, busy or made with other embeddings. The message is one line for a user."""


class UnknownSubject(GalleryError):
    """No subject of that name in the gallery."""


class UnknownFace(GalleryError):
    """No face with that id in the gallery."""


class EmptyGallery(GalleryError):
    """A search in a gallery that holds no face."""


class FingerprintMismatch(GalleryError):
    """The gallery's embeddings were made by other weights than the caller's."""


class GalleryBusy(GalleryError):
    """Another process has the gallery open for writing."""


@dataclass(frozen=True)
class GalleryInfo:
    """A gallery's settings and size: its embeddings' width and fingerprint (which weights
    made them), the decision threshold on the cosine, when it was made (UTC, ISO 8601),
    whether it keeps its faces' photos (and so can be re-embedded)."""

    dim: int
    fingerprint: str
    threshold: float
    created: str
    subjects: int
    faces: int
    keeps_images: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Subject:
    """A person of the gallery and how many faces they have."""

    name: str
    faces: int
    created: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Face:
    """One enrolled face: its id (never reused), its subject, where it came from (a photo's
    path or name, optional) and its box in that photo (x1, y1, x2, y2; optional)."""

    id: int
    subject: str
    source: str | None
    box: Box | None
    created: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "box": None if self.box is None else list(self.box)}


@dataclass(frozen=True)
class Hit:
    """A subject found for a query: their best cosine over their faces, the face that gave
    it, and whether it reaches the gallery's threshold (``score >= threshold``)."""

    subject: str
    score: float
    face_id: int
    match: bool

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "score": round(self.score, 4),
                "face_id": self.face_id, "match": self.match}


def check_name(name: object) -> str:
    """``name`` if it is a valid subject name (:data:`NAME_PATTERN`), else GalleryError."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) \
            or name != name.strip():
        raise GalleryError(f"invalid subject name {name!r}: 1 to 128 characters, no control "
                           f"character, slash or backslash, no space at either end")
    return name


def check_settings(dim: object, fingerprint: object, threshold: object) -> None:
    """A new gallery's settings: a positive width, a fingerprint, a cosine threshold."""
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise GalleryError(f"the embedding width must be a positive integer, got {dim!r}")
    if not isinstance(fingerprint, str) or not fingerprint.strip():
        raise GalleryError("a gallery needs the fingerprint of its embeddings' weights")
    if not isinstance(threshold, numbers.Real) or not -1.0 <= threshold <= 1.0:
        raise GalleryError(f"the threshold is a cosine within [-1, 1], got {threshold!r}")


def check_k(k: object) -> None:
    """How many subjects a search returns: a whole number of at least 1."""
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
        raise GalleryError(f"k must be a whole number of at least 1, got {k!r}")


def check_faces(subjects: Sequence[str], embeddings: object,
                sources: Sequence[str | None] | None, boxes: Sequence[object] | None,
                dim: int) -> tuple[list[str], np.ndarray, list[str | None], list[Box | None]]:
    """Faces to add, checked: names, unit embeddings, sources and boxes of equal counts."""
    names = [check_name(s) for s in subjects]
    vectors = unit_rows(embeddings, dim)
    sources = [None] * len(names) if sources is None else list(sources)
    checked = [None] * len(names) if boxes is None else [check_box(b) for b in boxes]
    if not len(names) == len(vectors) == len(sources) == len(checked):
        raise GalleryError(f"{len(names)} subjects for {len(vectors)} embeddings, "
                           f"{len(sources)} sources and {len(checked)} boxes")
    if any(s is not None and not isinstance(s, str) for s in sources):
        raise GalleryError("a face's source is a string (a path or a name) or None")
    return names, vectors, sources, checked


def check_images(images: Sequence[object] | None, count: int, keeps: bool, folder: object
                 ) -> list[bytes] | None:
    """The photos of ``count`` faces to add: one non-empty ``bytes`` each for a gallery
    that keeps them (``keeps``), none for one that does not."""
    if not keeps:
        if images is not None:
            raise GalleryError(f"gallery {folder} does not keep photos (it was made without "
                               f"keep_images); add the faces without them")
        return None
    if images is None:
        raise GalleryError(f"gallery {folder} keeps each face's photo: give the photos of "
                           f"the faces to add")
    images = list(images)
    if len(images) != count:
        raise GalleryError(f"{len(images)} photos for {count} faces")
    bad = next((i for i, b in enumerate(images) if not isinstance(b, bytes) or not b), None)
    if bad is not None:
        raise GalleryError(f"photo {bad} is not the non-empty bytes of an image file")
    return images


def best_subjects(scores: Sequence[float], face_ids: Sequence[int], names: dict[int, str],
                  k: int, threshold: float) -> list[Hit]:
    """The first ``k`` distinct subjects of faces ranked best first (``names``: face id ->
    subject; faces it lacks are skipped): each subject's first face is their best."""
    hits: dict[str, Hit] = {}
    for score, face_id in zip(np.asarray(scores).tolist(), np.asarray(face_ids).tolist(),
                              strict=True):
        name = names.get(face_id)
        if name is None or name in hits:
            continue
        hits[name] = Hit(name, score, face_id, score >= threshold)
        if len(hits) == k:
            break
    return list(hits.values())


def check_box(box: object) -> Box | None:
    """A face box as four finite floats (x1, y1, x2, y2), or None."""
    if box is None:
        return None
    try:
        values = tuple(float(v) for v in box)
    except (TypeError, ValueError):
        raise GalleryError(f"a face box is four numbers (x1, y1, x2, y2), got {box!r}") \
            from None
    if len(values) != 4 or not all(np.isfinite(values)):
        raise GalleryError(f"a face box is four finite numbers (x1, y1, x2, y2), got {box!r}")
    return values  # type: ignore[return-value]


def unit_rows(vectors: object, dim: int, what: str = "embedding") -> np.ndarray:
    """``vectors`` (one of ``dim`` values, or N rows of them) as float32 rows scaled to unit
    length.

    Raises:
        GalleryError: another width, a value that is not finite, a zero vector, no rows.
    """
    try:
        x = np.asarray(vectors, dtype=np.float64)
    except (TypeError, ValueError):
        raise GalleryError(f"an {what} must be numbers, got {type(vectors).__name__}") \
            from None
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != dim:
        raise GalleryError(f"each {what} must have {dim} values, got an array of shape "
                           f"{np.shape(vectors)}")
    if len(x) == 0:
        raise GalleryError(f"no {what} given")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise GalleryError(f"{what} {int(np.argmax(bad))} has a value that is not finite")
    norms = np.linalg.norm(x, axis=1)
    if (norms < 1e-6).any():
        raise GalleryError(f"{what} {int(np.argmax(norms < 1e-6))} is a zero vector")
    return (x / norms[:, None]).astype(np.float32)
