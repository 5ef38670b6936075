"""One reader per public dataset layout, registered in :data:`READERS`.

To add a layout, copy a neighbouring module, register the class with
``@READERS.register("name")`` and import the module below. The steps every reader shares
(walking folders, checking image files, ids, the result table) are helpers in
:mod:`facefuse.data.readers.base`.
"""

from __future__ import annotations

from pathlib import Path

from facefuse.data.readers import celeba, fer2013, lfw, manifest, utkface, w300  # noqa: F401
from facefuse.data.readers.base import (
    READERS,
    DatasetError,
    DatasetReader,
    ReadResult,
    Skipped,
    SplitConfig,
)

__all__ = ["READERS", "DatasetError", "DatasetReader", "ReadResult", "Skipped", "SplitConfig",
           "find_datasets", "read_dataset"]


def read_dataset(name: str, root: str | Path, splits: SplitConfig = SplitConfig()) -> ReadResult:
    """Read dataset ``name`` (a registered reader) found at or under ``root``."""
    reader = READERS.get(name)()
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{name}: {root} does not exist")
    located = reader.locate(root) if root.is_dir() else root
    if located is None:
        raise DatasetError(f"{name}: no {reader.description} layout found under {root}")
    return reader.read(located, splits)


def find_datasets(root: str | Path) -> list[tuple[str, Path]]:
    """Every (reader name, location) whose layout is found under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data root {root} is not a folder")
    found: list[tuple[str, Path]] = []
    for name in READERS.names():
        reader = READERS.get(name)()
        if name == "manifest":
            found.extend((name, p) for p in manifest.find_manifests(root))
            continue
        located = reader.locate(root)
        if located is not None:
            found.append((name, located))
    return found
