"""What a cache root holds (finished training caches, builds in progress, leftovers of
interrupted builds) and removing what is no longer wanted: ``facefuse data caches``.

A cache's name carries a key of its inputs' sizes and modification times
(:mod:`facefuse.data.cache`), so copying or touching a dataset makes the next training build
a new cache and leaves the old one on disk; at 96 px a cache of every dataset takes 1.7 GB.
Only folders that are caches (a ``meta.json`` of the cache format) or a cache's build folder
are listed or removed; anything else under the root is left alone.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from facefuse.data.cache import BUILDING, build_lock
from facefuse.data.file_lock import held_elsewhere

# a build folder's name, as data.cache.build_folder makes it
BUILD_FOLDER = re.compile(rf"^\.(?P<name>.+){re.escape(BUILDING)}(?P<pid>\d+)$")


@dataclass(frozen=True)
class CacheFolder:
    """One folder under a cache root.

    Attributes:
        path: the folder.
        state: ``complete`` (a finished cache), ``building`` (a build another process is
            running now) or ``interrupted`` (a build whose process is gone).
        size_bytes: bytes of its files on disk.
        meta: a complete cache's ``meta.json`` (empty otherwise).
    """

    path: Path
    state: str
    size_bytes: int
    meta: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    def to_dict(self) -> dict[str, object]:
        spec = self.meta.get("spec", {})
        return {"name": self.name, "state": self.state, "size_bytes": self.size_bytes,
                "images": self.meta.get("samples"), "image_size": spec.get("size"),
                "detector_crop": spec.get("detector_crop", []),
                "datasets": self.meta.get("datasets", []),
                "created": self.meta.get("created")}


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _cache_meta(path: Path) -> dict | None:
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and "key" in meta and "spec" in meta else None


def cache_folders(root: str | Path) -> list[CacheFolder]:
    """The caches and build folders under ``root``, by name.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no cache folder at {root}")
    found = []
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        build = BUILD_FOLDER.match(path.name)
        if build:
            held = held_elsewhere(build_lock(root / build["name"]))
            state = "interrupted" if held is False else "building"
            found.append(CacheFolder(path, state, _size(path)))
        elif (meta := _cache_meta(path)) is not None:
            found.append(CacheFolder(path, "complete", _size(path), meta))
    return found


def remove_cache_folder(folder: CacheFolder) -> None:
    """Delete ``folder`` from disk.

    Raises:
        ValueError: it is a build in progress.
    """
    if folder.state == "building":
        raise ValueError(f"{folder.name} is being built by a running process; not removed")
    shutil.rmtree(folder.path)
    if folder.state == "complete":  # its build lock goes too, unless a process holds it
        lock = build_lock(folder.path)
        if held_elsewhere(lock) is False and lock.is_file():
            lock.unlink()


def format_size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def format_folders(folders: list[CacheFolder]) -> str:
    """A table of ``folders`` and their total size."""
    lines = []
    for f in folders:
        d = f.to_dict()
        if f.state == "complete":
            detail = (f"{d['images']} images at {d['image_size']} px"
                      + (f", detector crops: {','.join(d['detector_crop'])}"
                         if d["detector_crop"] else "")
                      + f"; {','.join(d['datasets']) or '?'}; built {d['created'] or '?'}")
        else:
            detail = ("a build in progress" if f.state == "building"
                      else "an interrupted build (remove with --remove-unfinished)")
        lines.append(f"{f.name}  {format_size(f.size_bytes):>8}  {f.state:<11}  {detail}")
    total = sum(f.size_bytes for f in folders)
    lines.append(f"{len(folders)} folder(s), {format_size(total)} in all")
    return "\n".join(lines)
