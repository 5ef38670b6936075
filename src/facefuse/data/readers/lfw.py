"""Labeled Faces in the Wild: ``lfw/<Name>/<Name>_NNNN.jpg`` plus View 2's ``pairs.txt``.

``pairs.txt`` starts with ``10 300`` and holds 10 folds, each of 300 matched pairs
(``name i j``) then 300 mismatched pairs (``name1 i name2 j``). View 2's folds are
person-disjoint, so every person named in a pair gets that fold in the table's ``fold``
column and the split ``test`` (View 2 is the verification benchmark: train nothing on those
people you later verify). People named in no pair are split identity-disjoint into
train/val (seeded).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
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
    keep_readable,
    list_images,
    relative_ids,
    subfolders,
)
from facefuse.data.splits import assign_splits

FILE_PATTERN = re.compile(r"^(?P<name>.+)_(?P<num>\d{4})\.(jpg|jpeg|png)$", re.IGNORECASE)


@dataclass(frozen=True)
class VerificationPair:
    """One View-2 pair: fold (0-9), the two image paths, and whether they show one person."""

    fold: int
    image_a: str
    image_b: str
    same: bool


def lfw_image_path(images_root: Path, name: str, number: int) -> Path:
    """Path of image ``number`` (1-based) of person ``name``."""
    return images_root / name / f"{name}_{number:04d}.jpg"


def read_pairs(pairs_file: Path, images_root: Path,
               log: SkipLog | None = None) -> list[VerificationPair]:
    """Parse View 2's ``pairs.txt``; malformed lines and pairs naming missing images are
    skipped (and logged when ``log`` is given), never silently dropped.

    Raises:
        DatasetError: when the file is missing or its header line is not ``<folds> <n>``.
    """
    if not pairs_file.is_file():
        raise DatasetError(f"lfw: pairs file {pairs_file} does not exist")
    lines = pairs_file.read_text().splitlines()
    header = lines[0].split() if lines else []
    if len(header) != 2 or not all(h.isdigit() for h in header):
        raise DatasetError(f"lfw: {pairs_file} line 1: expected '<folds> <pairs per class>', "
                           f"got {lines[0] if lines else 'an empty file'!r}")
    n_folds, per_class = int(header[0]), int(header[1])
    pairs: list[VerificationPair] = []
    body = [(i + 2, line) for i, line in enumerate(lines[1:]) if line.strip()]
    expected = n_folds * 2 * per_class
    if len(body) != expected and log is not None:
        log.note(f"{pairs_file.name} holds {len(body)} pair lines, header promises {expected}")
    for k, (lineno, line) in enumerate(body):
        where = f"{pairs_file}:{lineno}"
        fields = line.split()
        fold = k // (2 * per_class)
        try:
            if len(fields) == 3:
                a = lfw_image_path(images_root, fields[0], int(fields[1]))
                b = lfw_image_path(images_root, fields[0], int(fields[2]))
                same = True
            elif len(fields) == 4:
                a = lfw_image_path(images_root, fields[0], int(fields[1]))
                b = lfw_image_path(images_root, fields[2], int(fields[3]))
                same = False
            else:
                raise ValueError(f"{len(fields)} fields, expected 3 or 4")
        except ValueError as exc:
            if log is not None:
                log.skip(where, f"malformed pair line ({exc}): {line.strip()!r}")
            continue
        missing = [p for p in (a, b) if not p.is_file()]
        if missing:
            if log is not None:
                log.skip(where, f"pair names a missing image {missing[0]}")
            continue
        pairs.append(VerificationPair(fold, str(a), str(b), same))
    return pairs


def person_folds(pairs: Sequence[VerificationPair]) -> dict[str, int]:
    """The View-2 fold of every person named in ``pairs`` (View 2's folds share no
    person; the first pair naming a person decides)."""
    fold_of: dict[str, int] = {}
    for pair in pairs:
        for img in (pair.image_a, pair.image_b):
            fold_of.setdefault(Path(img).parent.name, pair.fold)
    return fold_of


@READERS.register("lfw")
class LFWReader(DatasetReader):
    name = "lfw"
    description = "LFW (person folders + pairs.txt)"

    def locate(self, root: Path) -> Path | None:
        for folder in (root / "lfw", root):
            if (folder / "lfw").is_dir() and ((folder / "pairs.txt").is_file()
                                              or folder.name == "lfw"):
                return folder
        return None

    def read(self, root: Path, splits: SplitConfig = SplitConfig()) -> ReadResult:
        log = SkipLog(self.name)
        images_root = root / "lfw"
        if not images_root.is_dir():
            raise DatasetError(f"lfw: image folder {images_root} does not exist")
        paths, people = [], []
        for person in subfolders(images_root, log, "a person folder"):
            for f in list_images(person, log):
                m = FILE_PATTERN.match(f.name)
                if m is None or m.group("name") != person.name:
                    log.skip(f, f"file name does not follow {person.name}_NNNN.jpg")
                    continue
                paths.append(f)
                people.append(person.name)
        if not paths:
            raise DatasetError(f"lfw: no images in person folders under {images_root}")
        paths, people = keep_readable(log, paths, people)
        fold_of: dict[str, int] = {}
        pairs_file = root / "pairs.txt"
        if pairs_file.is_file():
            fold_of = person_folds(read_pairs(pairs_file, images_root, log))
        else:
            log.note(f"{pairs_file} missing: no View-2 folds, identity-disjoint split only")
        ids = relative_ids(self.name, root, paths)
        fold = np.asarray([fold_of.get(p, -1) for p in people], dtype=np.int16)
        split = np.full(len(ids), "test", dtype=object)
        rest = np.flatnonzero(fold < 0)
        if len(rest):
            train_share = splits.fractions[0] + splits.fractions[2]
            split[rest] = assign_splits([ids[i] for i in rest],
                                        (train_share, splits.fractions[1], 0.0), splits.seed,
                                        groups=np.asarray(people, dtype=object)[rest])
        log.note(f"{int((fold >= 0).sum())} images of {len(set(fold_of))} people in View-2 "
                 f"pairs -> split 'test' with their fold; {len(rest)} other images split "
                 f"identity-disjoint into train/val (seed {splits.seed})")
        return build_result(log, root, ids, paths, split, fold=fold,
                            labels={"identity": [f"lfw:{p}" for p in people]})
