"""UTKFace: labels in the file name, ``[age]_[gender]_[race]_[datetime].jpg.chip.jpg``.

Age 0-116, gender 0 male / 1 female, race 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others.
No official split and no identities: the split is seeded and stratified by gender, race
and age group (identity-disjointness cannot be guaranteed on this dataset).
"""

from __future__ import annotations

import re
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
    require_dir,
)
from facefuse.data.splits import assign_splits
from facefuse.tasks import AGE_RANGE, GENDERS, RACES, age_group

NAME_PATTERN = re.compile(r"^(?P<fields>[^.]+)\.jpg(\.chip\.jpg)?$", re.IGNORECASE)


def parse_utkface_name(name: str) -> tuple[int, int, int] | str:
    """Return ``(age, gender, race)`` from a UTKFace file name, or why it is malformed."""
    m = NAME_PATTERN.match(name)
    if m is None:
        return "malformed UTKFace name: expected [age]_[gender]_[race]_[datetime].jpg.chip.jpg"
    fields = m.group("fields").split("_")
    if len(fields) != 4:
        return (f"malformed UTKFace name: {len(fields)} underscore-separated fields, expected "
                f"4 ([age]_[gender]_[race]_[datetime])")
    if not all(f.isdigit() for f in fields[:3]):
        return f"malformed UTKFace name: non-numeric label field in {fields[:3]}"
    age, gender, race = (int(f) for f in fields[:3])
    if not AGE_RANGE[0] <= age <= AGE_RANGE[1]:
        return f"age {age} out of range {int(AGE_RANGE[0])}-{int(AGE_RANGE[1])}"
    if gender >= len(GENDERS):
        return f"gender {gender} out of range 0-{len(GENDERS) - 1}"
    if race >= len(RACES):
        return f"race {race} out of range 0-{len(RACES) - 1}"
    return age, gender, race


@READERS.register("utkface")
class UTKFaceReader(DatasetReader):
    name = "utkface"
    description = "UTKFace (labels in file names)"

    def locate(self, root: Path) -> Path | None:
        folder = first_existing([root / "utkface" / "UTKFace", root / "UTKFace"])
        if folder is None and root.is_dir() and any(
                NAME_PATTERN.match(p.name) and isinstance(parse_utkface_name(p.name), tuple)
                for _, p in zip(range(20), root.glob("*.chip.jpg"), strict=False)):
            folder = root
        return folder

    def read(self, root: Path, splits: SplitConfig = SplitConfig()) -> ReadResult:
        log = SkipLog(self.name)
        require_dir(root, self.name)
        candidates = []
        labels: list[tuple[int, int, int]] = []
        for path in list_images(root, log):
            parsed = parse_utkface_name(path.name)
            if isinstance(parsed, str):
                log.skip(path, parsed)
                continue
            candidates.append(path)
            labels.append(parsed)
        paths, labels = keep_readable(log, candidates, labels)
        kept = np.asarray(labels, dtype=np.float32).reshape(-1, 3)
        if not paths:
            raise DatasetError(f"utkface: no readable UTKFace images in {root} "
                               f"({len(log.skipped)} file(s) skipped)")
        ids = relative_ids(self.name, root, paths)
        strata = np.char.add(np.char.add(kept[:, 1].astype(int).astype(str), "_"),
                             np.char.add(kept[:, 2].astype(int).astype(str),
                                         age_group(kept[:, 0]).astype(str)))
        split = assign_splits(ids, splits.fractions, splits.seed, stratify=strata)
        log.note(f"no official split: seeded (seed {splits.seed}) "
                 f"{splits.fractions_text} split stratified by gender, "
                 f"race and age group; identities unknown, so not identity-disjoint")
        return build_result(log, root, ids, paths, split,
                            labels={"age": kept[:, 0], "gender": kept[:, 1], "race": kept[:, 2]})
