"""A gallery of known people for ``search``: one mean unit embedding per person, made by
the analyzer from a folder of their photos, and the ranking of a face's embedding against it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facefuse.data.images import is_image_name
from facefuse.inference.analyzer import FaceAnalyzer

LAYOUT = "expected <identity>/ subfolders of photos or <identity>.jpg files"


def people_photos(folder: str | Path, what: str = "gallery") -> dict[str, list[Path]]:
    """The photos of each person in a folder of people: ``folder/<name>/*`` (photos only,
    sorted) or ``folder/<name>.jpg``, by name (``what`` names the folder in errors).

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
        ValueError: it holds no photo.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} {folder} is not a folder ({LAYOUT})")
    people: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.is_dir():
            people[p.name] = sorted(q for q in p.iterdir() if is_image_name(q))
        elif is_image_name(p):
            people.setdefault(p.stem, []).append(p)
    if not any(people.values()):
        raise ValueError(f"no photos in the {what} {folder} ({LAYOUT})")
    return people


@dataclass(frozen=True)
class Match:
    """One person of the gallery and their cosine similarity to a face."""

    name: str
    similarity: float


@dataclass(frozen=True)
class Gallery:
    """``names[i]``'s mean unit embedding is ``matrix[i]``; ``notes`` says which photos
    and people were left out, and why."""

    names: tuple[str, ...]
    matrix: np.ndarray
    notes: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_folder(cls, analyzer: FaceAnalyzer, folder: str | Path, batch_images: int = 32,
                    on_photo: Callable[[], None] | None = None) -> Gallery:
        """Embed ``folder/<identity>/*`` or ``folder/<identity>.jpg``: the largest face of
        each photo (as ``verify`` takes it), averaged per person and made unit length. Every
        photo goes through the analyzer in batches of ``batch_images``; unreadable photos and
        people with no face found are left out (each gets a note). ``on_photo`` is called
        once per photo done (a progress bar).

        Raises:
            FileNotFoundError: ``folder`` is not a folder.
            ValueError: it holds no photo, or no face is found in any.
        """
        people = people_photos(folder)
        owners = [name for name, files in people.items() for _ in files]
        photos = [f for files in people.values() for f in files]
        vectors: dict[str, list[np.ndarray]] = {name: [] for name in people}
        read = dict.fromkeys(people, 0)
        notes: list[str] = []
        results = analyzer.iter_analyze(photos, batch_images=batch_images)
        for name, r in zip(owners, results, strict=True):  # one result per photo, in order
            if on_photo is not None:
                on_photo()
            if r.error:
                notes.append(r.error)
                continue
            read[name] += 1
            if r.faces:
                vectors[name].append(np.asarray(r.largest_face().predictions["embedding"]))
        names, rows = [], []
        for name, files in people.items():
            if vectors[name]:
                m = np.mean(vectors[name], axis=0)
                names.append(name)
                rows.append(m / max(np.linalg.norm(m), 1e-12))
            elif read[name]:
                notes.append(f"no face found in the {read[name]} photo(s) of {name}; {name} "
                             f"is left out")
            elif files:
                notes.append(f"no photo of {name} could be read; {name} is left out")
        if not names:
            raise ValueError(f"no face found in the gallery {folder}")
        return cls(tuple(names), np.stack(rows).astype(np.float32), tuple(notes))

    def rank(self, embedding: np.ndarray, top: int = 1) -> list[Match]:
        """The ``top`` most similar people to a unit ``embedding``, most similar first (ties
        in gallery order)."""
        if top < 1:
            raise ValueError(f"top must be at least 1, got {top}")
        sims = self.matrix @ np.asarray(embedding, np.float32)
        order = np.argsort(-sims, kind="stable")[:top]
        return [Match(self.names[i], float(sims[i])) for i in order]
