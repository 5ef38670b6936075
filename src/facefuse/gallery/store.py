"""A persistent face gallery in a folder: ``gallery.sqlite`` (settings, subjects, faces and
their embeddings: the source of truth) and ``index.faiss`` (the index searched, exact up to
a size and IVF above it: a cache of the embeddings that is rebuilt from SQLite whenever it
is missing, unreadable or out of step). ``docs/GALLERY.md`` has the format and the
durability guarantees.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facefuse.gallery.database import GalleryDatabase
from facefuse.gallery.index import IVF_ABOVE, remove_temporary_files
from facefuse.gallery.records import (
    EmptyGallery,
    Face,
    FingerprintMismatch,
    GalleryBusy,
    GalleryError,
    GalleryInfo,
    Hit,
    Subject,
    best_subjects,
    check_faces,
    check_images,
    check_k,
    check_settings,
    unit_rows,
)
from facefuse.gallery.synced_index import SyncedIndex

log = logging.getLogger(__name__)

DATABASE, INDEX, LOCK = "gallery.sqlite", "index.faiss", "gallery.lock"
#: how often a writer waiting for the lock tries again, seconds
LOCK_POLL_S = 0.02


@dataclass(frozen=True)
class IndexOptions:
    """How a gallery keeps its index: saved after every write (``autosave``), IVF from
    ``ivf_above`` faces (None: always exact), searching ``nprobe`` of its lists (None: as
    :func:`facefuse.gallery.index.ivf_nprobe` chooses for their number)."""

    autosave: bool = True
    ivf_above: int | None = IVF_ABOVE
    nprobe: int | None = None

    def __post_init__(self) -> None:
        if self.ivf_above is not None and (not isinstance(self.ivf_above, int)
                                           or self.ivf_above < 1):
            raise GalleryError(f"ivf_above is a whole number of faces of at least 1 (or "
                               f"None), got {self.ivf_above!r}")


class FaceGallery:
    """Subjects and their face embeddings, searched by cosine (exact, faiss).

    One object per process and gallery, shared by threads (every call holds its lock). A
    writable one holds an exclusive lock on ``gallery.lock`` until :meth:`close`: a second
    writer, in any process, is refused (:class:`GalleryBusy`); read-only ones never write.
    Every write commits to SQLite first: once it returns, it survives ``kill -9`` at any
    moment. The index is then saved atomically (``autosave``) or at :meth:`save_index` /
    :meth:`close` (``autosave=False``: for many small writes to a large gallery; a reopened
    gallery catches its index up from SQLite). The index is loaded, and checked against
    SQLite, on the first search or write. Use :meth:`create` or :meth:`open` (``with``).
    """

    def __init__(self, folder: Path, db: GalleryDatabase, readonly: bool,
                 options: IndexOptions, stack: ExitStack) -> None:
        self.folder, self._db, self.readonly = folder, db, readonly
        self._version, self._opened_with = db.data_version(), db.fingerprint
        self._stack, self._lock, self._closed = stack, threading.RLock(), False
        self._index = SyncedIndex(db, folder / INDEX, not readonly, options.autosave,
                                  options.ivf_above, options.nprobe)
        if not readonly:
            for leftover in remove_temporary_files(folder / INDEX):
                log.info("removed %s, left by an interrupted index write", leftover)

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def create(cls, folder: str | Path, dim: int, fingerprint: str, threshold: float,
               autosave: bool = True, keep_images: bool = False,
               ivf_above: int | None = IVF_ABOVE) -> FaceGallery:
        """Make an empty gallery in ``folder`` (created if missing) for ``dim``-d embeddings
        made by the weights ``fingerprint`` names, matching at cosine ``>= threshold``.
        ``keep_images``: every face is added with its photo, kept in SQLite, so that the
        gallery can be re-embedded by other weights (:mod:`facefuse.gallery.reembed`).
        ``ivf_above``: from this many faces the index is IVF, trained on the gallery's
        embeddings (None: always exact; docs/GALLERY.md has the measurements).

        Raises:
            GalleryError: ``folder`` already holds a gallery, or a setting is invalid.
        """
        folder = Path(folder)
        check_settings(dim, fingerprint, threshold)
        if (folder / DATABASE).exists():
            raise GalleryError(f"{folder} already holds a gallery ({DATABASE})")
        folder.mkdir(parents=True, exist_ok=True)
        options = IndexOptions(autosave, ivf_above)
        return cls._start(folder, _write_lock(folder), False, options, lambda: (
            GalleryDatabase.create(folder / DATABASE, dim, fingerprint, float(threshold),
                                   bool(keep_images))))

    @classmethod
    def open(cls, folder: str | Path, fingerprint: str | None = None, readonly: bool = False,
             autosave: bool = True, ivf_above: int | None = IVF_ABOVE, wait_s: float = 0.0
             ) -> FaceGallery:
        """Open the gallery in ``folder``; with ``fingerprint``, refuse one whose embeddings
        other weights made. ``readonly``: search and list only (no lock taken, nothing
        written; the index is brought up to date in memory; :meth:`refresh` sees later
        commits). ``ivf_above``: as for :meth:`create`. ``wait_s``: how long to wait for
        another writer to close it (0: refuse at once).

        Raises:
            FileNotFoundError: no gallery there.
            FingerprintMismatch: ``fingerprint`` differs from the gallery's.
            GalleryBusy: another writer has it open, still after ``wait_s`` (not for
                ``readonly``).
            GalleryError: the SQLite file is not a facefuse gallery.
        """
        folder = Path(folder)
        if not (folder / DATABASE).is_file():
            raise FileNotFoundError(f"no gallery in {folder} (no {DATABASE}; make one with "
                                    f"`facefuse gallery create {folder}`)")

        def checked() -> GalleryDatabase:
            db = GalleryDatabase.open(folder / DATABASE, readonly)
            if fingerprint is not None and fingerprint != db.fingerprint:
                db.close()
                again = f", or re-embed it with these weights (`facefuse gallery reembed " \
                    f"{folder}`)" if db.keeps_images else ""
                raise FingerprintMismatch(
                    f"gallery {folder} holds embeddings of {db.fingerprint}, not of "
                    f"{fingerprint}: use the identity options it was made with, or another "
                    f"gallery{again}")
            return db

        return cls._start(folder, ExitStack() if readonly else _write_lock(folder, wait_s),
                          readonly,
                          IndexOptions(autosave, ivf_above), checked)

    @classmethod
    def _start(cls, folder: Path, stack: ExitStack, readonly: bool, options: IndexOptions,
               database: Callable[[], GalleryDatabase]) -> FaceGallery:
        """The gallery over ``database()``, its lock in ``stack``; all closed on failure."""
        try:
            db = database()
            try:
                return cls(folder, db, readonly, options, stack)
            except BaseException:
                db.close()
                raise
        except BaseException:
            stack.close()
            raise

    def close(self) -> None:
        """Save unsaved index changes, close SQLite, release the lock (again: nothing)."""
        with self._lock:
            if self._closed:
                return
            try:
                self._index.save()
            finally:
                self._closed = True
                self._index.drop()
                self._db.close()
                self._stack.close()

    def __enter__(self) -> FaceGallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def refresh(self) -> bool:
        """Bring this object up to date with what other processes committed since it last
        looked (for a read-only gallery beside a writer elsewhere): a cheap check of
        SQLite's ``data_version``; when it changed, the settings are read again and the
        index in memory is caught up (or rebuilt when the embeddings were replaced).
        Whether anything had changed.

        Raises:
            FingerprintMismatch: the gallery was re-embedded since, for ``fingerprint``
                other than the one it was opened with.
        """
        with self._lock:
            self._check_open()
            version = self._db.data_version()
            changed = version != self._version
            if changed:
                self._version = version
                self._db.reload_settings()
            if self._db.fingerprint != self._opened_with:
                raise FingerprintMismatch(
                    f"gallery {self.folder} was re-embedded: it holds embeddings of "
                    f"{self._db.fingerprint}, not of {self._opened_with}; open it again")
            if changed:
                self._index.catch_up()
            return changed

    # -- settings and listings -------------------------------------------------------------
    @property
    def dim(self) -> int:
        """The embeddings' width."""
        return self._db.dim

    @property
    def fingerprint(self) -> str:
        """What made the embeddings (:mod:`facefuse.gallery.embedding_space`)."""
        return self._db.fingerprint

    @property
    def threshold(self) -> float:
        """A search's ``match``: a score at or above this cosine."""
        return self._db.threshold

    @property
    def keeps_images(self) -> bool:
        """Whether every face is kept with its photo (and so can be re-embedded)."""
        return self._db.keeps_images

    def info(self) -> GalleryInfo:
        """Settings and counts."""
        with self._lock:
            return self._open_db().info()

    def subjects(self) -> list[Subject]:
        """Every subject, by name, with their number of faces."""
        with self._lock:
            return self._open_db().subjects()

    def faces(self, subject: str | None = None) -> list[Face]:
        """Every face, or ``subject``'s (:class:`UnknownSubject` if none), by id."""
        with self._lock:
            return self._open_db().faces(subject)

    def face(self, face_id: int) -> Face:
        """One face (:class:`UnknownFace` if none)."""
        with self._lock:
            return self._open_db().face(int(face_id))

    def embeddings(self, face_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The stored unit embeddings of those of ``face_ids`` that exist."""
        with self._lock:
            return {int(i): v.copy() for ids, m in self._open_db().vectors(list(face_ids))
                    for i, v in zip(ids, m, strict=True)}

    # -- writes ----------------------------------------------------------------------------
    def add(self, subject: str, embedding: Any, source: str | None = None,
            box: Sequence[float] | None = None, image: bytes | None = None) -> int:
        """Enrol one face of ``subject`` (made if new); its id. The embedding is scaled to
        unit length; ``image``: the photo's file bytes (required by a gallery that keeps
        them, refused by one that does not)."""
        return self.add_many([subject], [embedding], [source], [box],
                             None if image is None else [image])[0]

    def add_many(self, subjects: Sequence[str], embeddings: Any,
                 sources: Sequence[str | None] | None = None,
                 boxes: Sequence[Sequence[float] | None] | None = None,
                 images: Sequence[bytes] | None = None) -> list[int]:
        """Enrol faces in one transaction (all or none); their ids, in order. ``images``:
        each face's photo (its file's bytes), for a gallery that keeps them.

        Raises:
            GalleryError: a bad name, width, value, box or photo, lengths that differ,
                photos missing (a gallery that keeps them) or given (one that does not),
                read-only.
        """
        self._check_writable()
        names, vectors, sources, boxes = check_faces(subjects, embeddings, sources, boxes,
                                                     self.dim)
        images = check_images(images, len(names), self.keeps_images, self.folder)
        with self._lock:
            self._ready_index()  # before SQLite changes: loading it catches up with SQLite
            ids = self._db.insert(names, vectors, sources, boxes, images)
            self._index.add(vectors, ids)
        return ids

    def remove_face(self, face_id: int) -> None:
        """Remove one face (:class:`UnknownFace` if none); its subject stays, even empty."""
        self._check_writable()
        with self._lock:
            self._ready_index()
            self._db.delete_face(int(face_id))
            self._index.remove([int(face_id)])

    def remove_subject(self, name: str) -> int:
        """Remove a subject and all their faces (:class:`UnknownSubject` if none); the
        number of faces removed."""
        self._check_writable()
        with self._lock:
            self._ready_index()
            ids = self._db.delete_subject(name)
            self._index.remove(ids)
        return len(ids)

    def source_images(self, face_ids: Sequence[int]
                      ) -> list[tuple[int, tuple[float, ...] | None, bytes | None]]:
        """(face id, box, photo) of those of ``face_ids`` that exist, by id; the photo is
        None in a gallery that does not keep them."""
        with self._lock:
            return self._open_db().images([int(i) for i in face_ids])

    def face_ids(self) -> list[int]:
        """Every face's id, ascending."""
        with self._lock:
            return self._open_db().ids().tolist()

    def replace_embeddings(self, face_ids: Sequence[int], embeddings: Any, dim: int,
                           fingerprint: str, threshold: float) -> None:
        """Give every face a new ``dim``-d embedding (rows in the order of ``face_ids``,
        which must name every face held) made by the weights ``fingerprint`` names, and the
        gallery that width, fingerprint and ``threshold``: one SQLite transaction, all or
        nothing. The index file is deleted before the commit and rebuilt after it, so that
        no index of the old embeddings outlives them, even after a crash.

        Raises:
            GalleryError: bad settings or embeddings, ids that are not exactly the faces
                held, read-only.
        """
        self._check_writable()
        check_settings(dim, fingerprint, threshold)
        ids = np.asarray(face_ids, np.int64).reshape(-1)
        vectors = unit_rows(embeddings, dim) if len(ids) else np.zeros((0, dim), np.float32)
        if len(vectors) != len(ids) or len(np.unique(ids)) != len(ids):
            raise GalleryError(f"{len(vectors)} embeddings for {len(ids)} face ids "
                               f"({len(np.unique(ids))} distinct)")
        with self._lock:
            self._check_open()
            self._index.forget()
            self._db.replace_embeddings(ids, vectors, dim, fingerprint, threshold)
            self._index.rebuild()
            self._index.save()

    # -- search ----------------------------------------------------------------------------
    def search(self, embeddings: Any, k: int = 1) -> list[list[Hit]]:
        """For each query embedding (one, or N rows), the ``k`` most similar subjects, best
        first: a subject's score is the highest cosine over their faces; ``match`` is
        ``score >= threshold``. Fewer than ``k`` when fewer subjects have faces.

        Raises:
            EmptyGallery: no face to search.
            GalleryError: a bad ``k``, width or value.
        """
        check_k(k)
        queries = unit_rows(embeddings, self.dim, "query")
        with self._lock:
            index = self._ready_index()
            total = index.ntotal
            if total == 0:
                raise EmptyGallery(f"gallery {self.folder} has no face to search")
            depth = min(total, 4 * k)
            while True:  # more faces until each query has k subjects or every face is seen
                scores, ids = index.search(queries, depth)
                names = self._db.names_of(ids[ids >= 0].tolist())
                results = [best_subjects(s, i, names, k, self.threshold)
                           for s, i in zip(scores, ids, strict=True)]
                if depth == total or all(len(r) == k for r in results):
                    return results
                depth = min(total, depth * 4)

    # -- the index -------------------------------------------------------------------------
    def rebuild_index(self) -> None:
        """Build the index anew from SQLite's embeddings (and save it unless read-only)."""
        with self._lock:
            self._check_open()
            self._index.rebuild()

    @property
    def index_kind(self) -> str:
        """The index searched: ``"exact"`` or ``"ivf"`` (loaded if it was not)."""
        with self._lock:
            self._check_open()
            return self._index.kind

    def save_index(self) -> None:
        """Write the index file now (atomically) if it has unsaved changes."""
        self._check_writable()
        with self._lock:
            self._check_open()
            self._index.save()

    def _ready_index(self) -> Any:
        self._check_open()
        return self._index.ready()

    def _check_writable(self) -> None:
        if self.readonly:
            raise GalleryError(f"gallery {self.folder} is open read-only")

    def _check_open(self) -> None:
        if self._closed:
            raise GalleryError(f"gallery {self.folder} is closed")

    def _open_db(self) -> GalleryDatabase:
        self._check_open()
        return self._db


def _write_lock(folder: Path, wait_s: float = 0.0) -> ExitStack:
    """Hold the exclusive write lock of the gallery in ``folder`` until the stack closes,
    waiting up to ``wait_s`` seconds for another holder to let it go."""
    from facefuse.data.file_lock import LockHeld, exclusive_lock

    deadline = time.monotonic() + wait_s
    while True:
        stack = ExitStack()
        try:
            stack.enter_context(exclusive_lock(folder / LOCK, wait=False))
            return stack
        except LockHeld:
            if time.monotonic() >= deadline:
                raise GalleryBusy(f"gallery {folder} is open for writing elsewhere (another "
                                  f"gallery command, a service, another object in this "
                                  f"process)") from None
            time.sleep(LOCK_POLL_S)
