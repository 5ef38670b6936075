"""The gallery's faiss index file, ``index.faiss``: an exact inner-product index
(``IndexIDMap2(IndexFlatIP)``) of the unit embeddings under their face ids.

The file is a cache of what ``gallery.sqlite`` holds. It is written under a temporary name,
flushed to disk and renamed over the old one (``os.replace``, atomic), so a reader finds the
old file or the new one, whole, never a half-written one. faiss is imported here, on first
use, so that ``import facefuse`` and the commands that do not search stay fast and the core
install runs without it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from facefuse.extras import INSTALL_GALLERY, MissingExtra

TEMP_MARK = ".tmp-"


def faiss_module() -> Any:
    """The faiss module.

    Raises:
        MissingExtra: faiss is not installed (one line naming the extra to install).
    """
    try:
        import faiss
    except ModuleNotFoundError as exc:
        if exc.name != "faiss":
            raise
        raise MissingExtra(f"the face gallery needs the gallery extra (faiss is not "
                           f"installed): {INSTALL_GALLERY}") from None
    return faiss


def new_index(dim: int) -> Any:
    """An empty exact index of ``dim``-d vectors under int64 ids (cosine on unit vectors)."""
    faiss = faiss_module()
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def index_ids(index: Any) -> np.ndarray:
    """The ids an ``IndexIDMap2`` holds, in its storage order (int64)."""
    return faiss_module().vector_to_array(index.id_map).astype(np.int64, copy=False)


def read_index(path: Path, dim: int) -> tuple[Any | None, str]:
    """(the index at ``path``, "") or (None, why it cannot be used): missing, unreadable
    (truncated, not a faiss file), of another kind or width."""
    if not path.is_file():
        return None, f"{path.name} is missing"
    faiss = faiss_module()
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:  # faiss reports a truncated or foreign file so
        return None, f"{path.name} cannot be read ({str(exc).splitlines()[0][:120]})"
    if not isinstance(index, faiss.IndexIDMap2) or index.d != dim \
            or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        return None, f"{path.name} is not an exact inner-product index of {dim}-d vectors " \
                     f"under ids"
    ids = index_ids(index)
    if len(ids) != index.ntotal or len(np.unique(ids)) != len(ids):
        return None, f"{path.name} holds {index.ntotal} vectors under {len(np.unique(ids))} " \
                     f"distinct ids"
    return index, ""


def write_index(index: Any, path: Path) -> None:
    """Write ``index`` to ``path`` atomically: a temporary file beside it, flushed to disk,
    renamed over ``path``, and the folder flushed so the rename itself is durable."""
    tmp = path.with_name(f"{path.name}{TEMP_MARK}{os.getpid()}")
    try:
        faiss_module().write_index(index, str(tmp))
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    """Flush ``folder``'s entries to disk (a rename or deletion in it made durable)."""
    _fsync(folder)


def remove_temporary_files(path: Path) -> list[Path]:
    """Delete what interrupted writes of ``path`` left (``<name>.tmp-<pid>``); call only
    while holding the gallery's write lock. Returns the files removed."""
    leftovers = sorted(path.parent.glob(f"{path.name}{TEMP_MARK}*"))
    for p in leftovers:
        p.unlink(missing_ok=True)
    return leftovers


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
