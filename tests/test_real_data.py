"""The readers on the real datasets in ../shared/data (present in CI)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from facefuse.cli import main
from facefuse.data.cache import CacheSpec, build_cache
from facefuse.data.readers import read_dataset
from facefuse.data.readers.lfw import read_pairs
from facefuse.tasks import OUTER_EYE_CORNERS_68


def count_files(folder: Path, suffix: str = ".jpg") -> int:
    return sum(1 for _, _, files in os.walk(folder) for f in files if f.endswith(suffix))


@pytest.fixture(scope="module")
def real_summary(shared_data: Path) -> dict:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["data", "summary", str(shared_data), "--json"]) == 0
    return {d["name"]: d for d in json.loads(buf.getvalue())}


def test_summary_counts_match_the_files(real_summary: dict, shared_data: Path) -> None:
    assert set(real_summary) == {"utkface", "fer2013", "lfw", "celeba", "300w"}
    for name, folder in (("utkface", "utkface/UTKFace"), ("fer2013", "fer2013"),
                         ("lfw", "lfw/lfw"), ("celeba", "celeba/img_celeba"),
                         ("300w", "300w")):
        s = real_summary[name]
        on_disk = count_files(shared_data / folder)
        assert s["samples"] + len(s["skipped"]) == on_disk, name
        assert sum(s["per_split"].values()) == s["samples"]
    utk = real_summary["utkface"]
    assert len(utk["skipped"]) >= 1 and all("malformed" in k["reason"] for k in utk["skipped"])
    fer = real_summary["fer2013"]
    assert fer["per_split"]["test"] == count_files(shared_data / "fer2013" / "test")
    assert real_summary["celeba"]["labels"]["identity"]["identities"] == len(
        {ln.split()[1] for ln in (shared_data / "celeba/identity_CelebA.txt").open()})


def test_real_lfw_pairs_all_resolve(shared_data: Path) -> None:
    pairs = read_pairs(shared_data / "lfw/pairs.txt", shared_data / "lfw/lfw")
    assert len(pairs) == 6000
    assert sum(p.same for p in pairs) == 3000
    assert [sum(p.fold == f for p in pairs) for f in range(10)] == [600] * 10


def test_real_celeba_splits_are_identity_disjoint(shared_data: Path) -> None:
    t = read_dataset("celeba", shared_data).table
    people = {s: set(t.labels["identity"][t.split == s]) for s in ("train", "val", "test")}
    assert people["val"] and people["test"]
    assert not (people["train"] & people["val"]) and not (people["train"] & people["test"])


def test_real_sample_caches_with_landmarks_inside(shared_data: Path, tmp_path: Path) -> None:
    """A small real sample (UTKFace + 300-W) copied to a temp root and cached."""
    root = tmp_path / "data"
    utk = sorted((shared_data / "utkface/UTKFace").iterdir())[:40]
    (root / "utkface/UTKFace").mkdir(parents=True)
    for f in utk:
        shutil.copy(f, root / "utkface/UTKFace" / f.name)
    pts = sorted((shared_data / "300w/afw").glob("*.pts"))[:20]
    (root / "300w/afw").mkdir(parents=True)
    for f in pts:
        shutil.copy(f, root / "300w/afw" / f.name)
        shutil.copy(f.with_suffix(".jpg"), root / "300w/afw" / f.with_suffix(".jpg").name)
    from facefuse.data.table import SampleTable

    table = SampleTable.concat([read_dataset("utkface", root).table,
                                read_dataset("300w", root).table])
    cache = build_cache(table, tmp_path / "cache", CacheSpec(size=64), workers=2)
    assert cache.valid.all() and cache.images.shape == (60, 64, 64, 3)
    assert cache.images[:].std() > 20  # real pixels, not blanks
    lm = cache.table.labels["landmarks"][cache.table.present("landmarks")]
    assert lm.shape == (20, 68, 2)
    assert (lm > 0).all() and (lm < 1).all()
    eyes = lm[:, OUTER_EYE_CORNERS_68]
    assert (eyes[:, 0, 0] < eyes[:, 1, 0]).all()  # point 36 lies left of point 45
    assert np.isnan(cache.table.labels["landmarks"][:40]).all()
