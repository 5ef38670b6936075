"""CelebA: ``img_celeba/`` (or ``img_align_celeba/``) plus the three official label files.

* ``identity_CelebA.txt``: ``<image> <identity>`` per line.
* ``list_attr_celeba.txt``: a count line, a header of the 40 attribute names, then
  ``<image> <40 values of 1 or -1>`` per line.
* ``list_eval_partition.txt``: ``<image> <0 train | 1 val | 2 test>`` per line.

At least one of the identity and attribute files must exist. The official partition is used
where it has rows; if it lacks val and test (as in a train-only release), they are carved
from the train rows identity-disjoint (seeded), so no person is in two splits.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from facefuse.data.readers.base import (
    READERS,
    DatasetError,
    DatasetReader,
    ReadResult,
    SkipLog,
    SplitConfig,
    build_result,
    first_existing,
    keep_readable,
    list_images,
    relative_ids,
)
from facefuse.data.splits import assign_splits
from facefuse.data.table import SPLITS
from facefuse.tasks import CELEBA_ATTRIBUTES

IDENTITY_FILE = "identity_CelebA.txt"
ATTRIBUTE_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_FOLDERS = ("img_celeba", "img_align_celeba")


def _numbered_lines(path: Path, lines: list[str],
                    start: int) -> Iterator[tuple[str, str, list[str]]]:
    """``(path:lineno, line, fields)`` of each non-blank line, the first numbered ``start``."""
    for lineno, line in enumerate(lines, start=start):
        fields = line.split()
        if fields:
            yield f"{path}:{lineno}", line, fields


def _pairs_file(path: Path, log: SkipLog, parse) -> dict[str, object]:
    """``<image> <value>`` lines into a dict; bad lines are logged as skipped."""
    out: dict[str, object] = {}
    lines = path.read_text().splitlines()
    for where, line, fields in _numbered_lines(path, lines, start=1):
        if len(fields) != 2:
            log.skip(where, f"expected '<image> <value>', got {line.strip()!r}")
            continue
        try:
            out[fields[0]] = parse(fields[1])
        except ValueError as exc:
            log.skip(where, f"{fields[0]}: {exc}")
    return out


def _parse_partition(value: str) -> str:
    if value not in ("0", "1", "2"):
        raise ValueError(f"partition {value!r} out of range; expected 0, 1 or 2")
    return SPLITS[int(value)]


def _read_attributes(path: Path, log: SkipLog) -> dict[str, np.ndarray]:
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise DatasetError(f"celeba: {path} needs a count line and a header line")
    header = lines[1].split()
    if tuple(header) != CELEBA_ATTRIBUTES:
        unknown = sorted(set(header) ^ set(CELEBA_ATTRIBUTES))
        raise DatasetError(f"celeba: {path} line 2: header is not the 40 CelebA attribute "
                           f"names in order (differences: {unknown[:5]})")
    out: dict[str, np.ndarray] = {}
    for where, _, fields in _numbered_lines(path, lines[2:], start=3):
        if len(fields) != 41:
            log.skip(where, f"{fields[0]}: {len(fields) - 1} attribute values, expected 40")
            continue
        values = fields[1:]
        bad = [(CELEBA_ATTRIBUTES[i], v) for i, v in enumerate(values) if v not in ("1", "-1")]
        if bad:
            log.skip(where, f"{fields[0]}: attribute {bad[0][0]} = {bad[0][1]!r} out of range; "
                            f"expected 1 or -1")
            continue
        out[fields[0]] = (np.asarray(values, dtype=np.int8) > 0).astype(np.int8)
    count = lines[0].strip()
    if count.isdigit() and int(count) != len(out):
        log.note(f"{path.name} announces {count} rows, {len(out)} valid rows read")
    return out


@READERS.register("celeba")
class CelebAReader(DatasetReader):
    name = "celeba"
    description = "CelebA (image folder + identity/attribute/partition files)"

    def locate(self, root: Path) -> Path | None:
        for folder in (root / "celeba", root):
            has_labels = any((folder / f).is_file() for f in
                             (ATTRIBUTE_FILE, IDENTITY_FILE, PARTITION_FILE))
            if first_existing(folder / f for f in IMAGE_FOLDERS) is not None and (
                    has_labels or folder.name.lower() == "celeba"):
                return folder
        return None

    def read(self, root: Path, splits: SplitConfig = SplitConfig()) -> ReadResult:
        log = SkipLog(self.name)
        image_dir = first_existing(root / f for f in IMAGE_FOLDERS)
        if image_dir is None:
            raise DatasetError(f"celeba: no image folder ({' or '.join(IMAGE_FOLDERS)}) "
                               f"under {root}")
        id_file, attr_file, part_file = (root / f for f in
                                         (IDENTITY_FILE, ATTRIBUTE_FILE, PARTITION_FILE))
        if not id_file.is_file() and not attr_file.is_file():
            raise DatasetError(f"celeba: neither {id_file} nor {attr_file} exists; no labels")
        identities = _pairs_file(id_file, log, lambda v: str(int(v))) if id_file.is_file() \
            else {}
        attributes = _read_attributes(attr_file, log) if attr_file.is_file() else {}
        partition = _pairs_file(part_file, log, _parse_partition) if part_file.is_file() \
            else {}
        for f in (id_file, attr_file, part_file):
            if not f.is_file():
                log.note(f"{f.name} missing: that label is absent for every image")

        files = list_images(image_dir, log)
        on_disk = {p.name for p in files}
        for source, table in ((IDENTITY_FILE, identities), (ATTRIBUTE_FILE, attributes),
                              (PARTITION_FILE, partition)):
            for name in sorted(set(table) - on_disk):
                log.skip(image_dir / name, f"listed in {source} but the image file is missing")
        labelled = [p for p in files if p.name in identities or p.name in attributes]
        for p in files:
            if p.name not in identities and p.name not in attributes:
                log.skip(p, f"no entry in {IDENTITY_FILE} or {ATTRIBUTE_FILE}")
        (paths,) = keep_readable(log, labelled)
        if not paths:
            raise DatasetError(f"celeba: no readable labelled images in {image_dir}")
        names = [p.name for p in paths]
        n_partial = sum(1 for n in names if (n in identities) != (n in attributes))
        if n_partial and identities and attributes:
            log.note(f"{n_partial} images carry only one of identity / attributes; the other "
                     f"is kept as missing")
        ids = relative_ids(self.name, root, paths)
        identity = np.asarray([f"celeba:{identities[n]}" if n in identities else ""
                               for n in names], dtype=object)
        attr = np.full((len(paths), len(CELEBA_ATTRIBUTES)), -1, dtype=np.int8)
        for i, n in enumerate(names):
            if n in attributes:
                attr[i] = attributes[n]
        split = np.asarray([partition.get(n, "") for n in names], dtype=object)
        split = self._complete_splits(ids, split, identity, splits, log)
        return build_result(log, root, ids, paths, split,
                            labels={"identity": identity, "attributes": attr})

    @staticmethod
    def _complete_splits(ids: list[str], split: np.ndarray, identity: np.ndarray,
                         splits: SplitConfig, log: SkipLog) -> np.ndarray:
        """Keep official partitions; carve missing val/test identity-disjoint."""
        has = {s for s in SPLITS if (split == s).any()}
        if has >= {"val", "test"} and (split != "").all():
            return split
        if has >= {"val", "test"}:
            log.note(f"{int((split == '').sum())} images have no partition entry; "
                     f"they go to train")
            return np.where(split == "", "train", split).astype(object)
        pool = np.flatnonzero((split == "train") | (split == ""))
        carved = assign_splits([ids[i] for i in pool], splits.fractions, splits.seed,
                               groups=identity[pool])
        out = split.copy()
        out[pool] = carved
        log.note(f"partition file has no {' or '.join(sorted({'val', 'test'} - has))} rows: "
                 f"val and test carved from train identity-disjoint "
                 f"({splits.fractions_text}, seed {splits.seed})")
        return out
