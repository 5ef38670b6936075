"""The gallery's faiss index file, ``index.faiss``: an inner-product index of the unit
embeddings under their face ids, exact (``IndexIDMap2(IndexFlatIP)``) up to a size, then
IVF-Flat (``index_factory(d, "IVF{lists},Flat")``, trained on the gallery's own embeddings,
with a hash table from ids to vectors so that faces can be removed and read back).

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


#: a gallery of this many faces or more is searched through an IVF index (see
#: docs/GALLERY.md, "When to choose IVF", for the measurements behind it)
IVF_ABOVE = 500_000
#: an IVF search probes this share of the lists (1/8: 32 of 256 lists at 10^5 faces, 128
#: of 1,024 at 10^6, where each found a probe's own identity first as often as the exact
#: index did; docs/GALLERY.md) ...
NPROBE_SHARE = 8
#: ... and at least this many of them (every list of a small index)
MIN_NPROBE = 16
#: training vectors per list of an IVF index (faiss warns below 39)
TRAIN_PER_LIST = 64


def new_index(dim: int) -> Any:
    """An empty exact index of ``dim``-d vectors under int64 ids (cosine on unit vectors)."""
    faiss = faiss_module()
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def ivf_lists(n: int) -> int:
    """The lists of an IVF index of ``n`` vectors: about sqrt(n), a power of two (1,024 at a
    million: k-means over them is what the write that switches to IVF waits for), and few
    enough that each has :data:`TRAIN_PER_LIST` training vectors."""
    lists = 1 << int(round(np.log2(max(1.0, np.sqrt(n)))))
    while lists > 1 and lists * TRAIN_PER_LIST > n:
        lists //= 2
    return lists


def ivf_nprobe(lists: int) -> int:
    """The lists an IVF search probes: :data:`NPROBE_SHARE` of them, at least
    :data:`MIN_NPROBE` (all of them when there are fewer)."""
    return max(lists // NPROBE_SHARE, min(lists, MIN_NPROBE))


def new_ivf_index(train: np.ndarray, lists: int, nprobe: int | None = None) -> Any:
    """An empty IVF-Flat inner-product index with ``lists`` lists trained on the unit rows
    of ``train``, searching ``nprobe`` of them (None: :func:`ivf_nprobe`), its ids mapped
    to vectors by a hash table
    (so that ``remove_ids`` and ``reconstruct`` work)."""
    faiss = faiss_module()
    index = faiss.index_factory(train.shape[1], f"IVF{lists},Flat",
                                faiss.METRIC_INNER_PRODUCT)
    index.train(np.ascontiguousarray(train, np.float32))
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    index.nprobe = min(nprobe or ivf_nprobe(lists), lists)
    return index


def is_ivf(index: Any) -> bool:
    """Whether ``index`` is an IVF index (else the exact one)."""
    return isinstance(index, faiss_module().IndexIVF)


def index_ids(index: Any) -> np.ndarray:
    """The ids the index holds (int64): in storage order for the exact index, list by list
    for IVF."""
    faiss = faiss_module()
    if not is_ivf(index):
        return faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)
    lists = index.invlists
    parts = [faiss.rev_swig_ptr(lists.get_ids(k), lists.list_size(k)).copy()
             for k in range(index.nlist) if lists.list_size(k)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def read_index(path: Path, dim: int) -> tuple[Any | None, str]:
    """(the index at ``path``, "") or (None, why it cannot be used): missing, unreadable
    (truncated, not a faiss file), of another kind (an IVF index must map ids by hash
    table) or width, repeated ids."""
    if not path.is_file():
        return None, f"{path.name} is missing"
    faiss = faiss_module()
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:  # faiss reports a truncated or foreign file so
        return None, f"{path.name} cannot be read ({str(exc).splitlines()[0][:120]})"
    ivf = isinstance(index, faiss.IndexIVFFlat) and \
        index.direct_map.type == faiss.DirectMap.Hashtable
    if not (isinstance(index, faiss.IndexIDMap2) or ivf) or index.d != dim \
            or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        return None, f"{path.name} is not an exact or IVF inner-product index of {dim}-d " \
                     f"vectors under ids"
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
