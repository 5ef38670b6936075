"""The service's galleries: one folder per gallery under a root folder.

With one worker process (``shared=False``) each gallery is opened once, lazily, for
writing (the service holds its lock) and shared by every request
(:class:`~facefuse.gallery.FaceGallery` is thread-safe). With several worker processes
(``shared=True``) no process holds a gallery's lock: each keeps it open read-only, brought
up to date with what the others committed before every read (:meth:`FaceGallery.refresh`,
a check of SQLite's ``data_version``), and each write opens it for writing for that write
alone, waiting its turn for the lock (:class:`SharedGallery`)."""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from facefuse.gallery import FaceGallery, GalleryError, GalleryInfo, Hit, Subject
from facefuse.gallery.embedding_space import EmbeddingSpace
from facefuse.gallery.records import Face
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


#: how long a write waits for another process's write to the same gallery, seconds
WRITE_WAIT_S = 30.0


class SharedGallery:
    """A gallery that several processes serve: reads from a read-only
    :class:`FaceGallery` refreshed first, each write through the gallery opened for
    writing for that write (the lock waited for up to :data:`WRITE_WAIT_S`), its index
    saved before the write returns. The methods the routes use, as FaceGallery's."""

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder, self.fingerprint = folder, fingerprint
        self._reader = FaceGallery.open(folder, fingerprint, readonly=True)
        self._identity = _file_identity(folder)

    def _read(self) -> FaceGallery:
        self._reader.refresh()
        return self._reader

    @contextmanager
    def _writer(self) -> Iterator[FaceGallery]:
        try:
            gallery = FaceGallery.open(self.folder, self.fingerprint, wait_s=WRITE_WAIT_S)
        except FileNotFoundError:
            raise UnknownGallery(f"no gallery {self.folder.name!r} (deleted)") from None
        with gallery:
            yield gallery

    def current(self) -> bool:
        """Whether the gallery's folder still holds the database this object opened (not
        deleted, nor deleted and made again, by another process)."""
        return _file_identity(self.folder) == self._identity

    @property
    def threshold(self) -> float:
        return self._read().threshold

    @property
    def keeps_images(self) -> bool:
        return self._reader.keeps_images

    def info(self) -> GalleryInfo:
        return self._read().info()

    def subjects(self) -> list[Subject]:
        return self._read().subjects()

    def faces(self, subject: str | None = None) -> list[Face]:
        return self._read().faces(subject)

    def search(self, embeddings: Any, k: int = 1) -> list[list[Hit]]:
        return self._read().search(embeddings, k)

    def add(self, subject: str, embedding: Any, source: str | None = None,
            box: Sequence[float] | None = None, image: bytes | None = None) -> int:
        with self._writer() as g:
            return g.add(subject, embedding, source, box, image)

    def remove_face(self, face_id: int) -> None:
        with self._writer() as g:
            g.remove_face(face_id)

    def remove_subject(self, name: str) -> int:
        with self._writer() as g:
            return g.remove_subject(name)

    def close(self) -> None:
        self._reader.close()


def _file_identity(folder: Path) -> tuple[int, int] | None:
    """(device, inode) of the gallery's database, None when there is none."""
    try:
        st = (folder / DATABASE).stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class Galleries:
    """The galleries under ``root`` for embeddings of ``space`` (a gallery made with other
    weights is refused when opened); ``shared``: other processes serve them too (see the
    module's docstring)."""

    def __init__(self, root: str | Path, space: EmbeddingSpace, shared: bool = False) -> None:
        self.root, self.space, self.shared = Path(root), space, shared
        self.root.mkdir(parents=True, exist_ok=True)
        self._open: dict[str, FaceGallery | SharedGallery] = {}
        self._lock = threading.Lock()

    def _folder(self, name: str) -> Path:
        return self.root / check_gallery_name(name)

    def names(self) -> list[str]:
        """The galleries there, by name."""
        return sorted(p.name for p in self.root.iterdir()
                      if GALLERY_NAME.fullmatch(p.name) and (p / DATABASE).is_file())

    def get(self, name: str) -> FaceGallery | SharedGallery:
        """The open gallery ``name`` (opened on first use).

        Raises:
            UnknownGallery: none of that name.
            FingerprintMismatch, GalleryBusy: as :meth:`FaceGallery.open`.
        """
        folder = self._folder(name)
        with self._lock:
            gallery = self._open.get(name)
            if isinstance(gallery, SharedGallery) and not gallery.current():
                gallery.close()  # deleted (or deleted and made again) by another process
                del self._open[name]
                gallery = None
            if gallery is None:
                if not (folder / DATABASE).is_file():
                    raise UnknownGallery(f"no gallery {name!r}")
                gallery = SharedGallery(folder, self.space.fingerprint) if self.shared \
                    else FaceGallery.open(folder, self.space.fingerprint)
                self._open[name] = gallery
            return gallery

    def create(self, name: str, threshold: float | None = None, keep_images: bool = False
               ) -> FaceGallery | SharedGallery:
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
            gallery = FaceGallery.create(
                folder, self.space.dim, self.space.fingerprint,
                self.space.threshold if threshold is None else threshold,
                keep_images=keep_images)
            if self.shared:  # no process keeps the lock
                gallery.close()
                self._open.pop(name, None)
                gallery = SharedGallery(folder, self.space.fingerprint)
            self._open[name] = gallery
            return gallery

    def delete(self, name: str) -> None:
        """Close gallery ``name`` and remove its folder (:class:`UnknownGallery` if none)."""
        folder = self._folder(name)
        with self._lock:
            gallery = self._open.pop(name, None)
            if gallery is not None:
                gallery.close()
            if not (folder / DATABASE).is_file():
                raise UnknownGallery(f"no gallery {name!r}")
            if self.shared:  # not while another process writes to it
                with FaceGallery.open(folder, wait_s=WRITE_WAIT_S):
                    shutil.rmtree(folder)
            else:
                shutil.rmtree(folder)

    def close(self) -> None:
        """Close every open gallery (their indexes saved, their locks released)."""
        with self._lock:
            for gallery in self._open.values():
                gallery.close()
            self._open.clear()
