"""Faces to enrol from photos: the analyzer runs on each photo and one face is chosen, the
largest (as ``facefuse verify`` takes it) or the one at a given index (the ``face`` number
``facefuse analyze`` reports)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from facefuse.inference.analyzer import FaceAnalyzer, FaceResult, ImageResult

LARGEST = "largest"


@dataclass(frozen=True)
class Candidate:
    """A photo of ``subject`` and the face chosen in it, or the reason there is none."""

    subject: str
    photo: Path
    face: FaceResult | None
    note: str | None = None


def parse_face_choice(text: str) -> str | int:
    """``"largest"`` or a face number (0 or more), from text.

    Raises:
        ValueError: anything else (one line).
    """
    if text == LARGEST:
        return text
    try:
        number = int(text)
    except ValueError:
        number = -1
    if number < 0 or str(number) != text.strip():
        raise ValueError(f"expected 'largest' or a face number (0 or more), got {text!r}")
    return number


def choose_face(result: ImageResult, choice: str | int = LARGEST) -> FaceResult:
    """The face of ``result`` that ``choice`` names: ``"largest"`` or a face index.

    Raises:
        ValueError: no face in the photo, or no face at that index (one line).
    """
    if not result.faces:
        raise ValueError(f"{result.source}: no face found")
    if choice == LARGEST:
        return result.largest_face() or result.faces[0]  # never None: there are faces
    found = [f for f in result.faces if f.index == choice]
    if not found:
        raise ValueError(f"{result.source}: no face {choice} (its faces are numbered 0 to "
                         f"{len(result.faces) - 1})")
    return found[0]


def candidates(analyzer: FaceAnalyzer, photos: Sequence[tuple[str, Path]],
               choice: str | int = LARGEST, batch_images: int = 32) -> Iterator[Candidate]:
    """For each (subject, photo), in order, its chosen face (the analyzer must report the
    ``embedding`` task), analysed ``batch_images`` photos at a time."""
    results = analyzer.iter_analyze([p for _, p in photos], batch_images=batch_images)
    for (subject, photo), result in zip(photos, results, strict=True):
        if result.error:
            yield Candidate(subject, photo, None, result.error)
            continue
        try:
            yield Candidate(subject, photo, choose_face(result, choice))
        except ValueError as exc:
            yield Candidate(subject, photo, None, str(exc))
