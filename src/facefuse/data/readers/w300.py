"""300-W: images with a sibling ``.pts`` file of 68 landmarks (iBUG markup).

A ``.pts`` file reads ``version: 1``, ``n_points: 68``, ``{``, 68 lines of ``x y``, ``}``.
Coordinates are kept as written (pixels of the image file, 300-W's 1-based convention).
Subsets (afw, helen/trainset, ...) are searched recursively. No official split is present
here (the official test sets are withheld): seeded random split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facefuse.data.images import is_image_name
from facefuse.data.readers.base import (
    READERS,
    DatasetError,
    DatasetReader,
    ReadResult,
    SkipLog,
    SplitConfig,
    build_result,
    keep_readable,
    relative_ids,
    require_dir,
)
from facefuse.data.splits import assign_splits

N_POINTS = 68


def parse_pts(path: Path) -> np.ndarray:
    """Read a 300-W ``.pts`` file into a (68, 2) float array.

    Raises:
        ValueError: naming what is wrong with the file.
    """
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    except UnicodeDecodeError as exc:
        raise ValueError(f"not a text file ({exc})") from None
    if "{" not in lines or lines[-1] != "}":
        raise ValueError("missing '{' or '}' around the points")
    header = {}
    i = 0
    while i < len(lines) and lines[i] != "{":
        if ":" not in lines[i]:
            raise ValueError(f"unexpected header line {lines[i]!r}")
        key, value = lines[i].split(":", 1)
        header[key.strip()] = value.strip()
        i += 1
    if header.get("n_points", "").isdigit() is False:
        raise ValueError("missing or non-numeric 'n_points' header")
    n = int(header["n_points"])
    body = lines[i + 1:-1]
    if n != N_POINTS:
        raise ValueError(f"n_points is {n}, expected {N_POINTS}")
    if len(body) != n:
        raise ValueError(f"{len(body)} point lines, header says {n}")
    try:
        points = np.asarray([[float(v) for v in ln.split()] for ln in body], dtype=np.float32)
    except ValueError as exc:
        raise ValueError(f"non-numeric coordinate ({exc})") from None
    if points.shape != (N_POINTS, 2):
        raise ValueError("each point line must hold exactly two numbers")
    if not np.isfinite(points).all():
        raise ValueError("non-finite coordinate")
    return points


@READERS.register("300w")
class W300Reader(DatasetReader):
    name = "300w"
    description = "300-W (images + .pts landmark files)"

    def locate(self, root: Path) -> Path | None:
        for folder in (root / "300w", root / "300W"):
            if folder.is_dir() and next(folder.rglob("*.pts"), None) is not None:
                return folder
        shallow = [*root.glob("*.pts"), *root.glob("*/*.pts")] if root.is_dir() else []
        return root if shallow else None

    def read(self, root: Path, splits: SplitConfig = SplitConfig()) -> ReadResult:
        log = SkipLog(self.name)
        require_dir(root, self.name)
        all_files = sorted(p for p in root.rglob("*") if p.is_file())
        if not all_files:
            raise DatasetError(f"300w: no files under {root}")
        images = [p for p in all_files if is_image_name(p)]
        image_stems = {p.with_suffix("") for p in images}
        for p in all_files:
            if p.suffix.lower() == ".pts" and p.with_suffix("") not in image_stems:
                log.skip(p, "landmark file without an image of the same name")
            elif p.suffix.lower() != ".pts" and not is_image_name(p) \
                    and not p.name.startswith("."):
                log.skip(p, f"not an image or .pts file (suffix {p.suffix or 'none'!r})")
        paths, points = [], []
        for img in images:
            pts_file = img.with_suffix(".pts")
            if not pts_file.is_file():
                log.skip(img, f"no landmark file {pts_file.name}")
                continue
            try:
                points.append(parse_pts(pts_file))
            except ValueError as exc:
                log.skip(pts_file, f"malformed .pts: {exc}")
                continue
            paths.append(img)
        paths, points = keep_readable(log, paths, points)
        if not paths:
            raise DatasetError(f"300w: no readable image with a valid .pts file under {root}")
        landmarks = np.stack(points)
        ids = relative_ids(self.name, root, paths)
        split = assign_splits(ids, splits.fractions, splits.seed)
        log.note(f"no official split here: seeded (seed {splits.seed}) random "
                 f"{splits.fractions_text} split")
        return build_result(log, root, ids, paths, split, labels={"landmarks": landmarks})
