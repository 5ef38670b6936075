"""FER2013 in image-folder form: ``{train,test}/<emotion>/*.jpg``, 48x48 grayscale.

The official Training / PublicTest split is kept; a stratified share of train is held out
as validation (seeded).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facefuse.data.readers.base import (
    READERS,
    DatasetError,
    DatasetReader,
    ReadResult,
    SkipLog,
    SplitConfig,
    check_files,
    list_images,
    relative_id,
)
from facefuse.data.splits import assign_splits
from facefuse.data.table import SampleTable
from facefuse.tasks import EMOTIONS

OFFICIAL_SPLITS = ("train", "test")


@READERS.register("fer2013")
class FER2013Reader(DatasetReader):
    name = "fer2013"
    description = "FER2013 image folders ({train,test}/<emotion>/)"

    def locate(self, root: Path) -> Path | None:
        for folder in (root / "fer2013", root):
            if any((folder / s / e).is_dir() for s in OFFICIAL_SPLITS for e in EMOTIONS):
                return folder
        return None

    def read(self, root: Path, splits: SplitConfig = SplitConfig()) -> ReadResult:
        log = SkipLog(self.name)
        present = [s for s in OFFICIAL_SPLITS if (root / s).is_dir()]
        if not present:
            raise DatasetError(f"fer2013: neither {root / 'train'} nor {root / 'test'} exists")
        for s in OFFICIAL_SPLITS:
            if s not in present:
                log.note(f"official {s!r} folder missing under {root}")
        paths, emotion, official = [], [], []
        for s in present:
            for folder in sorted((root / s).iterdir()):
                if not folder.is_dir():
                    log.skip(folder, "file outside an emotion folder")
                    continue
                files = list_images(folder, log)
                if folder.name.lower() not in EMOTIONS:
                    for f in files:
                        log.skip(f, f"unknown emotion folder {folder.name!r}; valid: "
                                    f"{', '.join(EMOTIONS)}")
                    continue
                paths += files
                emotion += [EMOTIONS.index(folder.name.lower())] * len(files)
                official += [s] * len(files)
        ok = np.asarray(check_files(paths, log), dtype=bool)
        if not ok.any():
            raise DatasetError(f"fer2013: no readable images under {root}")
        paths = [p for p, good in zip(paths, ok, strict=True) if good]
        emotion_arr = np.asarray(emotion, dtype=np.int16)[ok]
        split = np.asarray(official, dtype=object)[ok]
        ids = [relative_id(self.name, root, p) for p in paths]
        train = np.flatnonzero(split == "train")
        if len(train):
            vf = splits.val_fraction
            held = assign_splits([ids[i] for i in train], (1 - vf, vf, 0.0), splits.seed,
                                 stratify=emotion_arr[train])
            split[train] = held
            log.note(f"official train/test kept; {vf:.0%} of train held out as val, "
                     f"stratified by emotion (seed {splits.seed})")
        table = SampleTable.from_columns(ids, [str(p) for p in paths], self.name, split=split,
                                         labels={"emotion": emotion_arr})
        return log.result(root, table)
