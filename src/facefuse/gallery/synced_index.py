"""A gallery's faiss index in memory, kept in step with its SQLite file, and saved to
``index.faiss``.

On first use the index file is read and compared with SQLite: faces removed since it was
saved are dropped from it, faces added since are added from SQLite's embeddings, and a few
stored vectors are compared with SQLite's; a missing, unreadable or wrong file (another
kind, width or metric, repeated ids, a vector that differs) is rebuilt from SQLite whole.
Face ids are never reused, so an id both sides hold means the same vector; the one
exception, a re-embedding (:meth:`SyncedIndex.forget` then a new set of vectors), deletes
the file before SQLite commits the new vectors.

The index is exact until the gallery holds ``ivf_above`` faces: the write that reaches that
size, or a writable open that finds the gallery at it, rebuilds it as IVF-Flat trained on the
gallery's own embeddings (a random sample of them), saved like any other change. An IVF
index stays IVF as faces are removed (until :meth:`SyncedIndex.rebuild`, which chooses by
size again); faces added later go to the lists the training made.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from facefuse.gallery.database import GalleryDatabase
from facefuse.gallery.index import (
    TRAIN_PER_LIST,
    fsync_folder,
    index_ids,
    is_ivf,
    ivf_lists,
    ivf_nprobe,
    new_index,
    new_ivf_index,
    read_index,
    write_index,
)

log = logging.getLogger(__name__)

#: stored vectors compared with SQLite's on load, to catch a file that reads but lies
SPOT_CHECKS = 32


class SyncedIndex:
    """The index of the gallery whose SQLite side is ``db`` and index file ``path``.

    Args:
        writable: False keeps every change in memory (a read-only gallery).
        autosave: save the file after every change (else at :meth:`save`).
        ivf_above: from this many faces the index is IVF (None: always exact).
        nprobe: the lists an IVF index searches (None: :func:`ivf_nprobe` of its lists).

    Not thread-safe by itself: its owner holds a lock around every call.
    """

    def __init__(self, db: GalleryDatabase, path: Path, writable: bool, autosave: bool,
                 ivf_above: int | None = None, nprobe: int | None = None) -> None:
        self.db, self.path, self.writable, self.autosave = db, path, writable, autosave
        self.ivf_above, self.nprobe = ivf_above, nprobe
        self.dirty = False
        self._index: Any = None

    def ready(self) -> Any:
        """The faiss index, loaded (or rebuilt) on first use."""
        if self._index is not None:
            return self._index
        index, problem = read_index(self.path, self.db.dim)
        if index is None:
            log.info("%s; rebuilding it from %s", problem, self.db.path.name)
            self.rebuild()
        else:
            self._index = index
            if is_ivf(index):
                index.nprobe = min(self.nprobe or ivf_nprobe(index.nlist), index.nlist)
            if not self._catch_up():
                log.warning("%s does not hold the stored embeddings; rebuilding it from %s",
                            self.path, self.db.path.name)
                self.rebuild()
            elif self._outgrown():
                self.rebuild()
        return self._index

    def catch_up(self) -> None:
        """Bring an index in memory up to date with SQLite (what other processes committed
        since), in memory only; rebuilt when a vector differs. Nothing when none is loaded
        (the first use loads it)."""
        if self._index is None:
            return
        if self._index.d != self.db.dim or not self._catch_up():
            self.rebuild()

    def _outgrown(self) -> bool:
        """Whether the index is exact, the gallery has reached the IVF size, and the new
        index can be saved (a read-only opener searches the exact one rather than train an
        IVF index that it could not keep)."""
        return self.writable and self.ivf_above is not None and not is_ivf(self._index) \
            and self._index.ntotal >= self.ivf_above

    def _catch_up(self) -> bool:
        """Drop the faces removed since the file was saved and add those added since; False
        (nothing changed) when a stored vector differs from SQLite's."""
        stored, known = index_ids(self._index), self.db.ids()
        kept = np.intersect1d(stored, known)
        step = max(1, len(kept) // SPOT_CHECKS)
        checked = kept[::step][:SPOT_CHECKS].tolist() + kept[-1:].tolist()
        for ids, matrix in self.db.vectors(checked):
            for face_id, vector in zip(ids.tolist(), matrix, strict=True):
                if not np.array_equal(self._index.reconstruct(face_id), vector):
                    return False
        gone = np.setdiff1d(stored, known)
        if len(gone):
            self._index.remove_ids(gone)
        new = np.setdiff1d(known, stored)
        for ids, matrix in self.db.vectors(new.tolist()):
            self._index.add_with_ids(matrix, ids)
        if len(gone) or len(new):
            log.info("%s brought up to date: %d face(s) dropped, %d added", self.path.name,
                     len(gone), len(new))
            self.changed()
        return True

    def rebuild(self) -> None:
        """A new index of every embedding SQLite holds: exact, or IVF trained on them from
        ``ivf_above`` faces."""
        known = self.db.ids()
        if self.ivf_above is not None and len(known) >= self.ivf_above:
            lists = ivf_lists(len(known))
            sample = np.random.default_rng(0).choice(
                known, min(len(known), TRAIN_PER_LIST * lists), replace=False)
            train = np.concatenate([m for _, m in self.db.vectors(np.sort(sample).tolist())])
            log.info("%s: %d faces, so an IVF index of %d lists (trained on %d of them)",
                     self.path.name, len(known), lists, len(train))
            index = new_ivf_index(train, lists, self.nprobe)
        else:
            index = new_index(self.db.dim)
        for ids, matrix in self.db.vectors():
            index.add_with_ids(matrix, ids)
        self._index = index
        self.changed()

    def add(self, vectors: np.ndarray, ids: list[int]) -> None:
        """Add faces SQLite has just committed (load the index before committing them);
        the index becomes IVF when they bring the gallery to ``ivf_above`` faces."""
        self.ready().add_with_ids(vectors, np.asarray(ids, np.int64))
        if self._outgrown():
            self.rebuild()
            return
        self.changed()

    @property
    def kind(self) -> str:
        """``"exact"`` or ``"ivf"`` (the index loaded on first use)."""
        return "ivf" if is_ivf(self.ready()) else "exact"

    def remove(self, ids: list[int]) -> None:
        """Drop faces SQLite has just deleted."""
        if ids:
            self.ready().remove_ids(np.asarray(ids, np.int64))
            self.changed()

    def changed(self) -> None:
        """Note a change; save it now with ``autosave``."""
        self.dirty = self.writable
        if self.autosave:
            self.save()

    def save(self) -> None:
        """Write the file (atomically) if there are unsaved changes. A failure to write is
        logged, not raised: SQLite holds every face, and a later save or the next open
        brings the file up to date."""
        if not self.dirty or self._index is None:
            return
        try:
            write_index(self._index, self.path)
        except OSError as exc:
            log.error("could not save %s (%s); it is brought up to date from %s later",
                      self.path, exc.strerror or exc, self.db.path.name)
            return
        self.dirty = False

    def forget(self) -> None:
        """Delete the index file (durably) and the index in memory: call before SQLite's
        embeddings change in place, so that neither can be read against the new ones."""
        self._index, self.dirty = None, False
        if self.path.exists():
            self.path.unlink()
            fsync_folder(self.path.parent)

    def drop(self) -> None:
        """Forget the index (the gallery is closed)."""
        self._index = None
