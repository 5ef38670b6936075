"""The service's galleries: one folder per gallery under a root folder, each opened once per
process (lazily, for writing: the service holds its lock) and shared by every request
(:class:`~facefuse.gallery.FaceGallery` is thread-safe)."""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path

from facefuse.gallery import FaceGallery, GalleryError
from facefuse.gallery.embedding_space import EmbeddingSpace
from facefuse.gallery.store import DATABASE

#: a gallery's name, which is also its folder's: a letter or digit, then up to 63 letters,
#: digits, dots, dashes or underscores (no path escape, no hidden folder)
GALLERY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class UnknownGallery(GalleryError):
    """No gallery of that name under the root."""


class GalleryExists(GalleryError):
    """A gallery of that name is already there."""


def check_gallery_name(name: str) -> str:
    """``name`` if it is a valid gallery name (:data:`GALLERY_NAME`), else GalleryError."""
    if not GALLERY_NAME.fullmatch(name):
        raise GalleryError(f"invalid gallery name {name!r}: a letter or digit, then up to 63 "
                           f"letters, digits, '.', '-' or '_'")
    return name


class Galleries:
    """The galleries under ``root`` for embeddings of ``space`` (a gallery made with other
    weights is refused when opened)."""

    def __init__(self, root: str | Path, space: EmbeddingSpace) -> None:
        self.root, self.space = Path(root), space
        self.root.mkdir(parents=True, exist_ok=True)
        self._open: dict[str, FaceGallery] = {}
        self._lock = threading.Lock()

    def _folder(self, name: str) -> Path:
        return self.root / check_gallery_name(name)

    def names(self) -> list[str]:
        """The galleries there, by name."""
        return sorted(p.name for p in self.root.iterdir()
                      if GALLERY_NAME.fullmatch(p.name) and (p / DATABASE).is_file())

    def get(self, name: str) -> FaceGallery:
        """The open gallery ``name`` (opened on first use).

        Raises:
            UnknownGallery: none of that name.
            FingerprintMismatch, GalleryBusy: as :meth:`FaceGallery.open`.
        """
        folder = self._folder(name)
        with self._lock:
            gallery = self._open.get(name)
            if gallery is None:
                if not (folder / DATABASE).is_file():
                    raise UnknownGallery(f"no gallery {name!r}")
                gallery = FaceGallery.open(folder, self.space.fingerprint)
                self._open[name] = gallery
            return gallery

    def create(self, name: str, threshold: float | None = None, keep_images: bool = False
               ) -> FaceGallery:
        """A new, empty gallery ``name`` (threshold: the embeddings' own when None;
        ``keep_images``: as :meth:`FaceGallery.create`).

        Raises:
            GalleryExists: one of that name is there.
            GalleryError: a bad name or threshold.
        """
        folder = self._folder(name)
        with self._lock:
            if folder.exists():
                raise GalleryExists(f"gallery {name!r} already exists")
            self._open[name] = gallery = FaceGallery.create(
                folder, self.space.dim, self.space.fingerprint,
                self.space.threshold if threshold is None else threshold,
                keep_images=keep_images)
            return gallery

    def delete(self, name: str) -> None:
        """Close gallery ``name`` and remove its folder (:class:`UnknownGallery` if none)."""
        folder = self._folder(name)
        with self._lock:
            gallery = self._open.pop(name, None)
            if gallery is not None:
                gallery.close()
            elif not (folder / DATABASE).is_file():
                raise UnknownGallery(f"no gallery {name!r}")
            shutil.rmtree(folder)

    def close(self) -> None:
        """Close every open gallery (their indexes saved, their locks released)."""
        with self._lock:
            for gallery in self._open.values():
                gallery.close()
            self._open.clear()
