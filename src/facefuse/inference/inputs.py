"""The inputs a command or :meth:`facefuse.inference.analyzer.FaceAnalyzer.analyze_many`
takes: files, folders (their images and videos) and glob patterns."""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator
from pathlib import Path

from facefuse.data.images import is_image_name

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})


def expand_inputs(inputs: Iterable[str | Path]) -> Iterator[Path]:
    """Files, folders (their images and videos, sorted, recursively) and glob patterns.

    Raises:
        FileNotFoundError: a pattern matches nothing, or a folder holds no image or video
            (so a mistyped folder is not a silent empty run).
    """
    for item in inputs:
        text = str(item)
        if any(c in text for c in "*?["):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise FileNotFoundError(f"no file matches {text!r}")
            yield from (Path(m) for m in matches)
            continue
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and (
                is_image_name(p) or p.suffix.lower() in VIDEO_SUFFIXES))
            if not found:
                raise FileNotFoundError(f"{path}: no image or video in this folder")
            yield from found
        else:
            yield path
