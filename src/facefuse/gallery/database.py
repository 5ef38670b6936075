"""The gallery's SQLite file, ``gallery.sqlite``: its settings, subjects and faces, each face
with its embedding as a float32 BLOB (the source of truth the faiss index is built from),
and in a gallery made to keep them, each face's photo (``face_images``), from which the
faces can be embedded again by other weights.

Writes are transactions in WAL mode with ``synchronous=FULL``: once one returns, its rows
are on disk and survive the process being killed at any moment (or the machine losing
power). Face ids come from ``AUTOINCREMENT`` and are never reused, so an id in an old index
file always means the same embedding.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from facefuse.gallery.records import (
    Box,
    Face,
    GalleryError,
    GalleryInfo,
    Subject,
    UnknownFace,
    UnknownSubject,
)

FORMAT = "facefuse-gallery-1"
SCHEMA = """
CREATE TABLE gallery (id INTEGER PRIMARY KEY CHECK (id = 1), format TEXT NOT NULL,
    dim INTEGER NOT NULL, fingerprint TEXT NOT NULL, threshold REAL NOT NULL,
    created TEXT NOT NULL);
CREATE TABLE subjects (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL);
CREATE TABLE faces (id INTEGER PRIMARY KEY AUTOINCREMENT,
    subject_id INTEGER NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    source TEXT, box TEXT, embedding BLOB NOT NULL, created TEXT NOT NULL);
CREATE INDEX faces_by_subject ON faces(subject_id);
"""
#: the table of a gallery that keeps its faces' photos (the bytes of the file as enrolled);
#: its presence is the setting, so galleries made without it read as before
IMAGES_TABLE = "face_images"
IMAGES_SCHEMA = f"""CREATE TABLE {IMAGES_TABLE} (
    face_id INTEGER PRIMARY KEY REFERENCES faces(id) ON DELETE CASCADE,
    data BLOB NOT NULL)"""
#: ids a statement names at most (SQLite's default variable limit is 999 before 3.32)
CHUNK = 900
#: SQLite page size of a new gallery: a 512-d embedding (2 KiB and a few bytes of row) fills
#: about 90 % of a 16 KiB page, where 4 KiB pages (the default) hold one and waste half
PAGE_SIZE = 16384
FACE_COLUMNS = "f.id, s.name, f.source, f.box, f.created"


def now() -> str:
    """The time now, UTC, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _connect(path: Path, readonly: bool, new: bool = False) -> sqlite3.Connection:
    uri = path.resolve().as_uri() + ("?mode=ro" if readonly else "")
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                           timeout=30)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        if new:  # before the first table, and before WAL fixes the page size
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        if not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise GalleryError(f"{path} is not a facefuse gallery ({exc})") from None
    return conn


def _face(row: tuple) -> Face:
    box = json.loads(row[3]) if row[3] else None
    return Face(int(row[0]), row[1], row[2], None if box is None else tuple(box), row[4])


class GalleryDatabase:
    """The SQLite side of a gallery. Not thread-safe by itself: its owner
    (:class:`facefuse.gallery.FaceGallery`) holds a lock around every call.

    Use :meth:`create` or :meth:`open`.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn, self.path = conn, path
        try:
            row = conn.execute("SELECT format, dim, fingerprint, threshold, created "
                               "FROM gallery").fetchone()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise GalleryError(f"{path} is not a facefuse gallery ({exc})") from None
        if row is None or row[0] != FORMAT:
            conn.close()
            raise GalleryError(f"{path} is not a facefuse gallery (format "
                               f"{row[0] if row else None!r}, expected {FORMAT!r})")
        self._settings(row)
        self.keeps_images = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
            (IMAGES_TABLE,)).fetchone()[0] == 1

    def _settings(self, row: tuple) -> None:
        self.dim, self.fingerprint = int(row[1]), str(row[2])
        self.threshold, self.created = float(row[3]), str(row[4])

    def data_version(self) -> int:
        """SQLite's ``data_version``: it changes when another connection (any process) has
        committed since this connection last asked."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def reload_settings(self) -> None:
        """Read the settings again (another process may have re-embedded the gallery)."""
        self._settings(self.conn.execute("SELECT format, dim, fingerprint, threshold, "
                                         "created FROM gallery").fetchone())

    @classmethod
    def create(cls, path: Path, dim: int, fingerprint: str, threshold: float,
               keep_images: bool = False) -> GalleryDatabase:
        """Write a new, empty gallery file at ``path`` (made whole under a temporary name,
        then renamed) and open it; ``keep_images``: with the table of the faces' photos."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        conn = _connect(tmp, readonly=False, new=True)
        try:
            with _transaction(conn):
                for statement in [*SCHEMA.split(";"), IMAGES_SCHEMA if keep_images else ""]:
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO gallery VALUES (1, ?, ?, ?, ?, ?)",
                             (FORMAT, dim, fingerprint, threshold, now()))
        finally:
            conn.close()  # checkpoints and removes the WAL: one whole file to rename
        tmp.replace(path)
        return cls.open(path)

    @classmethod
    def open(cls, path: Path, readonly: bool = False) -> GalleryDatabase:
        """Open an existing gallery file (read-only: no writes, no WAL switch)."""
        return cls(_connect(path, readonly), path)

    def close(self) -> None:
        """Close the connection (a WAL checkpoint when it is the last)."""
        self.conn.close()

    def info(self) -> GalleryInfo:
        """Settings and counts."""
        subjects = self.conn.execute("SELECT count(*) FROM subjects").fetchone()[0]
        faces = self.conn.execute("SELECT count(*) FROM faces").fetchone()[0]
        return GalleryInfo(self.dim, self.fingerprint, self.threshold, self.created,
                           int(subjects), int(faces), self.keeps_images)

    # -- writes ----------------------------------------------------------------------------
    def insert(self, subjects: Sequence[str], vectors: np.ndarray,
               sources: Sequence[str | None], boxes: Sequence[Box | None],
               images: Sequence[bytes] | None = None) -> list[int]:
        """Add faces (subjects made as needed) in one transaction; their new ids.
        ``images``: each face's photo, for a gallery that keeps them."""
        created = now()
        ids = []
        with _transaction(self.conn):
            subject_ids = {}
            for name in dict.fromkeys(subjects):
                self.conn.execute("INSERT OR IGNORE INTO subjects (name, created) "
                                  "VALUES (?, ?)", (name, created))
                subject_ids[name] = self._subject_id(name)
            for name, vec, source, box in zip(subjects, vectors, sources, boxes, strict=True):
                cur = self.conn.execute(
                    "INSERT INTO faces (subject_id, source, box, embedding, created) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (subject_ids[name], source, None if box is None else json.dumps(box),
                     np.ascontiguousarray(vec, np.float32).tobytes(), created))
                ids.append(int(cur.lastrowid))
            if images is not None:
                self.conn.executemany(f"INSERT INTO {IMAGES_TABLE} VALUES (?, ?)",
                                      zip(ids, images, strict=True))
        return ids

    def replace_embeddings(self, ids: np.ndarray, vectors: np.ndarray, dim: int,
                           fingerprint: str, threshold: float) -> None:
        """Every face's embedding replaced by ``vectors`` (``dim``-d rows in the order of
        ``ids``, which must be exactly the faces held), and the gallery's width, fingerprint
        and threshold set to theirs, in one transaction: all or nothing."""
        with _transaction(self.conn):
            if not np.array_equal(self.ids(), np.sort(ids)):
                raise GalleryError("the faces changed while they were being re-embedded")
            self.conn.executemany("UPDATE faces SET embedding = ? WHERE id = ?", (
                (np.ascontiguousarray(v, np.float32).tobytes(), int(i))
                for i, v in zip(ids, vectors, strict=True)))
            self.conn.execute("UPDATE gallery SET dim = ?, fingerprint = ?, threshold = ?",
                              (int(dim), fingerprint, float(threshold)))
        self.dim, self.fingerprint = int(dim), fingerprint
        self.threshold = float(threshold)
    def delete_face(self, face_id: int) -> None:
        """Remove one face (:class:`UnknownFace` if none)."""
        with _transaction(self.conn):
            if self.conn.execute("DELETE FROM faces WHERE id = ?", (face_id,)).rowcount == 0:
                raise UnknownFace(f"no face {face_id} in the gallery")

    def delete_subject(self, name: str) -> list[int]:
        """Remove a subject and their faces in one transaction; the faces' ids."""
        with _transaction(self.conn):
            subject_id = self._subject_id(name)
            ids = [r[0] for r in self.conn.execute(
                "SELECT id FROM faces WHERE subject_id = ?", (subject_id,))]
            self.conn.execute("DELETE FROM subjects WHERE id = ?", (subject_id,))
        return ids

    # -- reads -----------------------------------------------------------------------------
    def _subject_id(self, name: str) -> int:
        row = self.conn.execute("SELECT id FROM subjects WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise UnknownSubject(f"no subject {name!r} in the gallery")
        return int(row[0])

    def ids(self) -> np.ndarray:
        """Every face id, ascending (int64)."""
        rows = self.conn.execute("SELECT id FROM faces ORDER BY id").fetchall()
        return np.asarray([r[0] for r in rows], np.int64)

    def vectors(self, ids: Sequence[int] | None = None, chunk: int = 65536
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, embeddings) in chunks of at most ``chunk`` faces: every face's, or those
        of ``ids`` that exist."""
        if ids is None:
            cursor = self.conn.execute("SELECT id, embedding FROM faces ORDER BY id")
            while rows := cursor.fetchmany(chunk):
                yield self._unpack(rows)
            return
        ids = list(ids)
        for start in range(0, len(ids), CHUNK):
            part = ids[start:start + CHUNK]
            rows = self.conn.execute(f"SELECT id, embedding FROM faces WHERE id IN "
                                     f"({','.join('?' * len(part))}) ORDER BY id",
                                     part).fetchall()
            if rows:
                yield self._unpack(rows)

    def _unpack(self, rows: list[tuple[int, bytes]]) -> tuple[np.ndarray, np.ndarray]:
        bad = next((r[0] for r in rows if len(r[1]) != 4 * self.dim), None)
        if bad is not None:
            raise GalleryError(f"{self.path}: face {bad}'s embedding is not {self.dim} "
                               f"float32 values")
        matrix = np.frombuffer(b"".join(r[1] for r in rows), np.float32)
        return np.asarray([r[0] for r in rows], np.int64), matrix.reshape(len(rows), self.dim)

    def images(self, ids: Sequence[int]) -> list[tuple[int, Box | None, bytes | None]]:
        """(face id, box, photo or None) of those of ``ids`` that exist, by id."""
        found = []
        ids = list(ids)
        for start in range(0, len(ids), CHUNK):
            part = ids[start:start + CHUNK]
            table = f"LEFT JOIN {IMAGES_TABLE} i ON i.face_id = f.id" if self.keeps_images \
                else ""
            data = "i.data" if self.keeps_images else "NULL"
            rows = self.conn.execute(f"SELECT f.id, f.box, {data} FROM faces f {table} "
                                     f"WHERE f.id IN ({','.join('?' * len(part))}) "
                                     f"ORDER BY f.id", part).fetchall()
            found += [(int(i), None if box is None else tuple(json.loads(box)), blob)
                      for i, box, blob in rows]
        return found

    def names_of(self, ids: Sequence[int]) -> dict[int, str]:
        """Face id -> subject name, for those of ``ids`` that exist."""
        ids = list(dict.fromkeys(int(i) for i in ids))
        found: dict[int, str] = {}
        for start in range(0, len(ids), CHUNK):
            part = ids[start:start + CHUNK]
            found.update(self.conn.execute(
                f"SELECT f.id, s.name FROM faces f JOIN subjects s ON s.id = f.subject_id "
                f"WHERE f.id IN ({','.join('?' * len(part))})", part).fetchall())
        return found

    def subjects(self) -> list[Subject]:
        """Every subject by name, with their number of faces."""
        rows = self.conn.execute(
            "SELECT s.name, count(f.id), s.created FROM subjects s LEFT JOIN faces f "
            "ON f.subject_id = s.id GROUP BY s.id ORDER BY s.name").fetchall()
        return [Subject(name, int(n), created) for name, n, created in rows]

    def faces(self, subject: str | None = None) -> list[Face]:
        """Every face, or one subject's, by id."""
        query = f"SELECT {FACE_COLUMNS} FROM faces f JOIN subjects s ON s.id = f.subject_id"
        if subject is None:
            rows = self.conn.execute(f"{query} ORDER BY f.id").fetchall()
        else:
            rows = self.conn.execute(f"{query} WHERE f.subject_id = ? ORDER BY f.id",
                                     (self._subject_id(subject),)).fetchall()
        return [_face(r) for r in rows]

    def face(self, face_id: int) -> Face:
        """One face (:class:`UnknownFace` if none)."""
        row = self.conn.execute(f"SELECT {FACE_COLUMNS} FROM faces f JOIN subjects s "
                                f"ON s.id = f.subject_id WHERE f.id = ?",
                                (face_id,)).fetchone()
        if row is None:
            raise UnknownFace(f"no face {face_id} in the gallery")
        return _face(row)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction (``BEGIN IMMEDIATE`` unless one is open): committed when the
    block ends, rolled back when it raises."""
    if not conn.in_transaction:
        conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
