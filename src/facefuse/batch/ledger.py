"""A batch job's output folder, and how results enter it so that a rerun skips what is done
and nothing is written twice.

Layout::

    OUT/manifest.json        settings, model fingerprints, counts, one entry per run
    OUT/faces/*.parquet      one row per face
    OUT/files/*.parquet      one row per work unit (the ledger a rerun reads)
    OUT/tracks/*.parquet     per-track summaries of the videos (rewritten after each run)
    OUT/.staging/NAME/       a piece of work being written (faces/ and files/)

Each piece of work (a chunk of the local engine, a round of the Ray engine) is written whole
under ``.staging/NAME``; a ``COMMITTED`` marker is then written, and the files are moved
(renamed) into ``faces/`` and ``files/``. At the start of every run
:meth:`OutputFolder.recover` finishes the moves of committed pieces and deletes the rest, so
a unit's faces are in ``faces/`` exactly when its row is in ``files/``: a killed run loses
at most the pieces in flight, and the rerun redoes only those.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facefuse.batch.inputs import unit_key
from facefuse.files import write_text_atomic

if TYPE_CHECKING:
    import pyarrow as pa

TABLES = ("faces", "files")
MARKER = "COMMITTED"
KEY_COLUMNS = ["path", "size", "mtime_ns", "frame_start"]


class BatchConflict(ValueError):
    """The output folder holds results of other settings (or is not a batch folder)."""


class OutputFolder:
    """The output folder ``root`` of a batch job (made if missing)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise BatchConflict(f"{self.root} is a file, not a folder")
        for name in (*TABLES, ".staging"):
            (self.root / name).mkdir(parents=True, exist_ok=True)

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def table_dir(self, name: str) -> Path:
        return self.root / name

    # -- committing work ---------------------------------------------------------------------
    def new_piece(self, prefix: str) -> Path:
        """A fresh staging folder for one piece of work (``faces/`` and ``files/`` in it)."""
        piece = self.root / ".staging" / f"{prefix}-{uuid.uuid4().hex[:12]}"
        for name in TABLES:
            (piece / name).mkdir(parents=True)
        return piece

    def commit(self, piece: Path) -> None:
        """Mark ``piece`` done and move its files into the tables."""
        (piece / MARKER).write_text("")
        self._move(piece)

    def write_piece(self, prefix: str, faces: pa.Table, files: pa.Table) -> None:
        """Write the two tables of one piece of work and commit it."""
        import pyarrow.parquet as pq

        piece = self.new_piece(prefix)
        pq.write_table(faces, piece / "faces" / "part.parquet")
        pq.write_table(files, piece / "files" / "part.parquet")
        self.commit(piece)

    def _move(self, piece: Path) -> None:
        for name in TABLES:
            folder = piece / name
            if not folder.is_dir():
                continue
            for f in sorted(folder.rglob("*.parquet")):
                os.replace(f, self.root / name / f"{piece.name}-{f.name}")
        shutil.rmtree(piece)

    def recover(self) -> tuple[int, int]:
        """Finish committed pieces a killed run left, delete unfinished ones; returns how
        many of each."""
        finished = dropped = 0
        for piece in sorted((self.root / ".staging").iterdir()):
            if (piece / MARKER).is_file():
                self._move(piece)
                finished += 1
            else:
                shutil.rmtree(piece) if piece.is_dir() else piece.unlink()
                dropped += 1
        return finished, dropped

    # -- reading -----------------------------------------------------------------------------
    def read(self, name: str, columns: list[str] | None = None) -> pa.Table | None:
        """Every committed part of table ``name`` (None when there is none)."""
        import pyarrow.parquet as pq

        parts = sorted(self.table_dir(name).glob("*.parquet"))
        if not parts:
            return None
        import pyarrow as pa

        return pa.concat_tables([pq.read_table(p, columns=columns) for p in parts],
                                promote_options="default")

    def done_keys(self) -> set[tuple[str, int, int, int]]:
        """The resume keys of every unit in ``files`` (done, with or without an error)."""
        files = self.read("files", KEY_COLUMNS)
        if files is None:
            return set()
        return {unit_key(*row) for row in zip(*(files.column(c).to_pylist()
                                                 for c in KEY_COLUMNS), strict=True)}

    # -- manifest ----------------------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.is_file():
            return None
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise BatchConflict(f"{self.manifest_path}: unreadable ({exc})") from None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_text_atomic(self.manifest_path, json.dumps(manifest, indent=1) + "\n")

    def check_settings(self, settings: dict[str, Any], layout: dict[str, Any]) -> None:
        """Refuse to add to results made with other settings.

        Raises:
            BatchConflict: naming the first setting that differs.
        """
        manifest = self.read_manifest()
        has_rows = any(self.table_dir("files").glob("*.parquet"))
        if manifest is None:
            if has_rows:
                raise BatchConflict(f"{self.root} holds results but no manifest.json")
            return
        for what, mine, theirs in (("setting", settings, manifest.get("settings", {})),
                                   ("output column", layout, manifest.get("layout", {}))):
            for key in sorted(set(mine) | set(theirs)):
                if mine.get(key) != theirs.get(key):
                    raise BatchConflict(
                        f"{self.root} holds results made with {what} {key}="
                        f"{theirs.get(key)!r}, not {mine.get(key)!r}; use another --out")
