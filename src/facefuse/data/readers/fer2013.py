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
    build_result,
    keep_readable,
    list_images,
    relative_ids,
    subfolders,
)
from facefuse.data.splits import assign_splits
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
            for folder in subfolders(root / s, log, "an emotion folder"):
                files = list_images(folder, log)
                if folder.name.lower() not in EMOTIONS:
                    for f in files:
                        log.skip(f, f"unknown emotion folder {folder.name!r}; valid: "
                                    f"{', '.join(EMOTIONS)}")
                    continue
                paths += files
                emotion += [EMOTIONS.index(folder.name.lower())] * len(files)
                official += [s] * len(files)
        paths, emotion, official = keep_readable(log, paths, emotion, official)
        if not paths:
            raise DatasetError(f"fer2013: no readable images under {root}")
        emotion_arr = np.asarray(emotion, dtype=np.int16)
        split = np.asarray(official, dtype=object)
        ids = relative_ids(self.name, root, paths)
        train = np.flatnonzero(split == "train")
        if len(train):
            vf = splits.val_fraction
            held = assign_splits([ids[i] for i in train], (1 - vf, vf, 0.0), splits.seed,
                                 stratify=emotion_arr[train])
            split[train] = held
            log.note(f"official train/test kept; {vf:.0%} of train held out as val, "
                     f"stratified by emotion (seed {splits.seed})")
        return build_result(log, root, ids, paths, split, labels={"emotion": emotion_arr})
