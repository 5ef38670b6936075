"""What a batch job works on: its inputs listed as work units, each keyed by path, size and
modification time (the key a rerun skips by).

An input is a photo or video file, a folder (its photos and videos, recursively), a glob, or
a manifest: a ``.csv`` or ``.parquet`` file with a ``path`` column (local paths, relative
to the manifest's folder, or URIs that ``pyarrow.fs`` opens, such as ``s3://...``). A
photo is one unit; a video is split into ranges of ``frames_per_unit`` frames, so one long
video spreads over the workers. A file that is missing or cannot be read still becomes a
unit: the worker records its error (nothing is dropped silently).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from facefuse.inference.analyzer import VIDEO_SUFFIXES, expand_inputs

MANIFEST_SUFFIXES = (".csv", ".parquet")
#: frames of a video per work unit (30 s at 30 frames a second)
FRAMES_PER_UNIT = 900


@dataclass(frozen=True)
class WorkUnit:
    """One piece of work: a photo, or frames ``[frame_start, frame_stop)`` of a video
    (``frame_stop`` None: to its end). ``size`` and ``mtime_ns`` are -1 for a file that
    could not be looked at."""

    path: str
    size: int
    mtime_ns: int
    kind: str = "photo"
    frame_start: int | None = None
    frame_stop: int | None = None

    def key(self) -> tuple[str, int, int, int]:
        """What a rerun compares: path, size, modification time and first frame."""
        return unit_key(self.path, self.size, self.mtime_ns, self.frame_start)

    def to_dict(self) -> dict:
        return asdict(self)


def unit_key(path: str, size: int, mtime_ns: int, frame_start: int | None
             ) -> tuple[str, int, int, int]:
    """The resume key of a unit (also computed from a row of the ``files`` table)."""
    return (str(path), int(size), int(mtime_ns), -1 if frame_start is None else
            int(frame_start))


def is_uri(path: str) -> bool:
    """Whether ``path`` names a file through a file system URI (``s3://``, ``gs://``,
    ``file://``, ...) rather than a local path."""
    return "://" in path


def _stat(path: str) -> tuple[int, int]:
    """(size, mtime_ns) of a local path or URI; (-1, -1) where it cannot be looked at."""
    try:
        if is_uri(path):
            from pyarrow import fs

            filesystem, inner = fs.FileSystem.from_uri(path)
            info = filesystem.get_file_info(inner)
            if info.type != fs.FileType.File:
                return -1, -1
            return int(info.size), int(info.mtime_ns or 0)
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    except (OSError, ValueError):
        return -1, -1


def read_manifest(manifest: str | Path) -> list[str]:
    """The ``path`` column of a CSV or Parquet manifest (local or a URI); relative local
    paths are taken from the manifest's folder.

    Raises:
        FileNotFoundError: no such manifest.
        ValueError: it cannot be read, or has no ``path`` column.
    """
    text = str(manifest)
    if not is_uri(text) and not Path(text).is_file():
        raise FileNotFoundError(f"manifest {text} does not exist")
    try:
        if text.lower().endswith(".parquet"):
            import pyarrow.parquet as pq

            table = pq.read_table(text)
        else:
            from pyarrow import csv

            table = csv.read_csv(text)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise ValueError(f"manifest {text}: cannot read it ({exc})") from None
    if "path" not in table.column_names:
        raise ValueError(f"manifest {text} has no 'path' column (it has "
                         f"{', '.join(table.column_names) or 'none'})")
    base = None if is_uri(text) else Path(text).resolve().parent
    paths = []
    for value in table.column("path").to_pylist():
        if value is None or not str(value).strip():
            continue
        value = str(value).strip()
        paths.append(value if is_uri(value) or base is None else str(base / value))
    return paths


def _paths(inputs: Iterable[str | Path]) -> list[str]:
    """Every file the inputs name, manifests read, in order, each once."""
    out: list[str] = []
    for item in inputs:
        text = str(item)
        if text.lower().endswith(MANIFEST_SUFFIXES):
            out.extend(read_manifest(text))
        elif is_uri(text):
            out.append(text)
        else:
            out.extend(str(p) for p in expand_inputs([text]))
    return list(dict.fromkeys(p if is_uri(p) else os.path.abspath(p) for p in out))


def video_frame_count(path: str) -> int | None:
    """The frame count OpenCV reports for a local video (None where it cannot open it or
    does not know)."""
    import cv2

    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            return None
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        return count if count > 0 else None
    finally:
        cap.release()


def video_units(path: str, size: int, mtime_ns: int, frames_per_unit: int
                ) -> list[WorkUnit]:
    """A video's frame ranges of ``frames_per_unit`` frames; the last runs to the end (the
    reported frame count may be short), and a video OpenCV cannot count is one unit."""
    count = video_frame_count(path) if not is_uri(path) else None
    if not count or count <= frames_per_unit:
        return [WorkUnit(path, size, mtime_ns, "video", 0, None)]
    starts = list(range(0, count, frames_per_unit))
    return [WorkUnit(path, size, mtime_ns, "video", s,
                     None if i == len(starts) - 1 else s + frames_per_unit)
            for i, s in enumerate(starts)]


def list_units(inputs: Sequence[str | Path], frames_per_unit: int = FRAMES_PER_UNIT
               ) -> list[WorkUnit]:
    """The work units of ``inputs`` (see the module's docstring), in input order.

    Raises:
        FileNotFoundError: a glob matches nothing, a folder holds no photo or video, a
            manifest does not exist.
        ValueError: a manifest cannot be read or has no ``path`` column; no input at all;
            ``frames_per_unit`` below 1.
    """
    if frames_per_unit < 1:
        raise ValueError(f"frames per unit must be at least 1, got {frames_per_unit}")
    if not inputs:
        raise ValueError("no input given")
    units: list[WorkUnit] = []
    for path in _paths(inputs):
        size, mtime_ns = _stat(path)
        if Path(path.split("?")[0]).suffix.lower() in VIDEO_SUFFIXES:
            units.extend(video_units(path, size, mtime_ns, frames_per_unit))
        else:
            units.append(WorkUnit(path, size, mtime_ns))
    if not units:
        raise ValueError("the inputs name no file (an empty manifest?)")
    return units
