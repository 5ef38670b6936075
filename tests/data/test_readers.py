"""Every reader on fake files written in its native layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facefuse.data.readers import READERS, find_datasets, read_dataset
from facefuse.data.readers.lfw import read_pairs
from facefuse.data.readers.w300 import parse_pts
from facefuse.data.table import SampleTable
from facefuse.tasks import CELEBA_ATTRIBUTES, EMOTIONS
from tests.fakes import write_celeba, write_fer2013, write_image, write_lfw, write_utkface


def test_registry_has_every_layout() -> None:
    assert set(READERS.names()) == {"utkface", "fer2013", "lfw", "celeba", "300w", "manifest"}


def test_find_datasets_locates_every_layout(fake_root: Path) -> None:
    found = dict(find_datasets(fake_root))
    assert set(found) == {"utkface", "fer2013", "lfw", "celeba", "300w"}
    assert found["utkface"] == fake_root / "utkface" / "UTKFace"


def test_utkface_labels_from_names(tmp_path: Path) -> None:
    write_utkface(tmp_path, n=40)
    r = read_dataset("utkface", tmp_path)
    t = r.table
    assert len(t) == 40 and not r.skipped
    row = int(np.flatnonzero(t.sample_id == "utkface/5_0_0_20170110000000.jpg.chip.jpg")[0])
    assert (t.labels["age"][row], t.labels["gender"][row], t.labels["race"][row]) == (5, 0, 0)
    assert set(t.tasks_present()) == {"age", "gender", "race"}
    assert not t.present("emotion").any() and not t.present("identity").any()
    assert set(t.split) == {"train", "val", "test"}


def test_fer2013_official_split_and_val(tmp_path: Path) -> None:
    write_fer2013(tmp_path, per_class=10)
    t = read_dataset("fer2013", tmp_path).table
    assert len(t) == 7 * 30
    assert (t.split == "test").sum() == 70
    assert (t.split == "val").sum() == 14  # 10% of 20 per class
    for split in ("train", "val", "test"):
        rows = t.split == split
        assert set(t.labels["emotion"][rows]) == set(range(len(EMOTIONS)))
    test_ids = t.sample_id[t.split == "test"]
    assert all(s.startswith("fer2013/test/") for s in test_ids)


def test_lfw_folds_and_pairs(tmp_path: Path) -> None:
    folder = write_lfw(tmp_path, people=6, per_person=3, extra_people=2)
    r = read_dataset("lfw", tmp_path)
    t = r.table
    assert len(t) == 8 * 3
    in_pairs = t.fold >= 0
    assert set(t.split[in_pairs]) == {"test"}
    assert set(t.fold[in_pairs]) == {0, 1}
    assert set(t.split[~in_pairs]) <= {"train", "val"}
    assert all(i.startswith("lfw:Person_") for i in t.labels["identity"])
    pairs = read_pairs(folder / "pairs.txt", folder / "lfw")
    assert len(pairs) == 8
    assert [p.same for p in pairs[:4]] == [True, True, False, False]
    assert {p.fold for p in pairs} == {0, 1}


def test_celeba_official_partition(tmp_path: Path) -> None:
    write_celeba(tmp_path, identities=10, per_identity=3)
    t = read_dataset("celeba", tmp_path).table
    assert len(t) == 30
    assert (t.split == "val").sum() == 3 and (t.split == "test").sum() == 3
    assert t.labels["attributes"].shape == (30, len(CELEBA_ATTRIBUTES))
    assert set(np.unique(t.labels["attributes"])) == {0, 1}
    lines = (tmp_path / "celeba" / "list_attr_celeba.txt").read_text().splitlines()
    first = lines[2].split()
    row = int(np.flatnonzero(t.sample_id == f"celeba/img_celeba/{first[0]}")[0])
    assert list(t.labels["attributes"][row]) == [1 if v == "1" else 0 for v in first[1:]]


def test_celeba_train_only_partition_is_carved_identity_disjoint(tmp_path: Path) -> None:
    write_celeba(tmp_path, identities=20, per_identity=3, partition=False)
    folder = tmp_path / "celeba"
    names = sorted(p.name for p in (folder / "img_celeba").iterdir())
    (folder / "list_eval_partition.txt").write_text("".join(f"{n} 0\n" for n in names))
    r = read_dataset("celeba", tmp_path)
    t = r.table
    assert {"train", "val", "test"} == set(t.split)
    by_split = {s: set(t.labels["identity"][t.split == s]) for s in ("train", "val", "test")}
    assert not by_split["train"] & by_split["val"]
    assert not by_split["train"] & by_split["test"]
    assert not by_split["val"] & by_split["test"]
    assert any("carved" in n for n in r.notes)


def test_300w_points(tmp_path: Path) -> None:
    from tests.fakes import face_points, write_300w

    write_300w(tmp_path, n=10)
    t = read_dataset("300w", tmp_path).table
    assert len(t) == 10
    assert t.labels["landmarks"].shape == (10, 68, 2)
    np.testing.assert_allclose(t.labels["landmarks"][0], face_points(), atol=1e-3)
    pts = parse_pts(Path(t.image[0]).with_suffix(".pts"))
    assert pts.shape == (68, 2)


def test_manifest_reads_any_label_columns(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    for i in range(6):
        write_image(root / "imgs" / f"{i}.png", seed=i)
    lm = " ".join(["1.5"] * 136)
    (root / "faces.csv").write_text(
        "image,identity,age,gender,race,emotion,Smiling,Young,landmarks,split,note\n"
        f"imgs/0.png,ann,31,female,asian,happy,1,0,{lm},train,x\n"
        "imgs/1.png,ann,,1,,,,,,,\n"
        "imgs/2.png,bob,70,0,2,3,-1,1,,test,\n"
        "imgs/3.png,bob,,,,,,,,,\n"
        "imgs/4.png,cid,,,,,,,,,\n"
        "imgs/5.png,dan,,,,,,,,,\n")
    r = read_dataset("manifest", root / "faces.csv")
    t = r.table
    assert len(t) == 6 and not r.skipped
    assert any("note" in n for n in r.notes)
    row0 = int(np.flatnonzero(t.sample_id == "faces/imgs/0.png")[0])
    assert t.labels["gender"][row0] == 1 and t.labels["race"][row0] == 2
    assert t.labels["emotion"][row0] == EMOTIONS.index("happy")
    assert t.labels["age"][row0] == 31
    assert t.labels["identity"][row0] == "faces:ann"
    smiling, young = CELEBA_ATTRIBUTES.index("Smiling"), CELEBA_ATTRIBUTES.index("Young")
    assert t.labels["attributes"][row0][smiling] == 1 and t.labels["attributes"][row0][young] == 0
    assert (t.labels["attributes"][row0] == -1).sum() == 38
    np.testing.assert_allclose(t.labels["landmarks"][row0], 1.5)
    assert t.split[row0] == "train"
    row2 = int(np.flatnonzero(t.sample_id == "faces/imgs/2.png")[0])
    assert t.split[row2] == "test" and t.labels["attributes"][row2][smiling] == 0
    row1 = int(np.flatnonzero(t.sample_id == "faces/imgs/1.png")[0])
    assert np.isnan(t.labels["age"][row1]) and t.labels["gender"][row1] == 1
    # rows without a split are assigned identity-disjoint
    same_person = t.labels["identity"] == "faces:bob"
    assert len(set(t.split[same_person])) == 1


def test_tables_from_all_readers_concatenate(fake_root: Path) -> None:
    tables = [read_dataset(name, loc).table for name, loc in find_datasets(fake_root)]
    t = SampleTable.concat(tables)
    assert len(t) == sum(len(x) for x in tables)
    assert set(t.tasks_present()) == {"identity", "age", "gender", "race", "emotion",
                                      "attributes", "landmarks"}
    # every row carries only its own dataset's labels
    assert not (t.present("emotion") & t.present("age")).any()


def test_table_save_load_round_trip(fake_root: Path, tmp_path: Path) -> None:
    t = SampleTable.concat([read_dataset(n, loc).table for n, loc in find_datasets(fake_root)])
    t.save(tmp_path / "t.npz")
    u = SampleTable.load(tmp_path / "t.npz")
    assert list(u.sample_id) == list(t.sample_id) and list(u.split) == list(t.split)
    for k, v in t.labels.items():
        if v.dtype == object:
            assert list(u.labels[k]) == list(v)
        else:
            np.testing.assert_array_equal(u.labels[k], v)


def test_concat_refuses_duplicate_ids(tmp_path: Path) -> None:
    write_utkface(tmp_path, n=5)
    t = read_dataset("utkface", tmp_path).table
    with pytest.raises(ValueError, match="share sample ids"):
        SampleTable.concat([t, t])


def test_shared_reader_steps_keep_folder_order_and_parallel_columns(tmp_path: Path) -> None:
    from facefuse.data.readers.base import SkipLog, keep_readable, subfolders

    for name in ("a", "c"):
        (tmp_path / name).mkdir()
    (tmp_path / "b.txt").write_text("between the folders")
    log = SkipLog("test")
    walked = []
    for folder in subfolders(tmp_path, log, "a class folder"):
        walked.append(folder.name)
        log.skip(folder / "inside", "walked")
    # the stray file is logged when the walk reaches it, between the two folders
    assert walked == ["a", "c"]
    assert [s.reason for s in log.skipped] == ["walked", "file outside a class folder",
                                               "walked"]
    good, bad = write_image(tmp_path / "good.jpg"), tmp_path / "bad.jpg"
    bad.write_text("not a jpeg")
    paths, labels = keep_readable(log, [bad, good], ["b", "g"])
    assert paths == [good] and labels == ["g"]
    assert log.skipped[-1].path == str(bad)
