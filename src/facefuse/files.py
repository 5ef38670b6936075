"""Small file helpers shared across the package, and its one atomic writer.

Every checkpoint, model description and metadata file the package writes goes through
:func:`atomic_path` (:func:`write_json_atomic` and :func:`write_text_atomic` for text): the
bytes go to a temporary file in the target's folder, are flushed to the disk (``fsync``) and
the file is renamed over the target (``os.replace``, atomic on one file system), so a reader,
or a process killed mid-write, finds the old file or the new one, never a part of either.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: mode of a new file (before the umask), as ``open`` would give it
NEW_FILE_MODE = 0o644


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # a folder some systems cannot open or sync; the file's own sync was done
        if not directory:
            raise


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` for the caller to write (by name: a library that
    saves to a path can write it); when the block ends without an error it is synced and
    renamed over ``path``, else removed. The folder is created when missing; the file keeps
    the mode of the one it replaces (0644 when new)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else NEW_FILE_MODE
        os.chmod(tmp, mode)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent, directory=True)  # the rename itself survives a power cut


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def json_text(doc: dict) -> str:
    """``doc`` as the package writes metadata: JSON, indent 1, paths and other objects as
    their ``str``."""
    return json.dumps(doc, indent=1, default=str)


def write_json_atomic(path: str | Path, doc: dict) -> Path:
    """Write ``doc`` (:func:`json_text`) to ``path`` through :func:`atomic_path`: the
    package's one metadata writer."""
    return write_text_atomic(path, json_text(doc))
