from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from facefuse.data.augment import AugmentSpec, augment_batch
from facefuse.data.cache import CacheSpec, TrainingCache, build_cache, crop_box
from facefuse.data.images import load_rgb
from facefuse.data.loader import CacheLoader, identity_classes
from facefuse.data.readers import find_datasets, read_dataset
from facefuse.data.table import SampleTable
from facefuse.detection.detectors import build_detector
from facefuse.tasks import FLIP_68, get_task
from tests.fakes import face_points, truncate, write_300w, write_image, write_utkface


def utk_table(root: Path, n: int = 12) -> SampleTable:
    write_utkface(root, n=n)
    return read_dataset("utkface", root).table


def test_round_trip_pixels_and_reopen(tmp_path: Path) -> None:
    table = utk_table(tmp_path / "d")
    spec = CacheSpec(size=32, crop="none")  # the fake images are 32x32: no resampling
    cache = build_cache(table, tmp_path / "c", spec, workers=1)
    assert cache.images.shape == (12, 32, 32, 3) and cache.valid.all()
    np.testing.assert_array_equal(cache.images[3], load_rgb(table.image[3]))
    small = build_cache(table, tmp_path / "c", CacheSpec(size=16, crop="none"), workers=1)
    # downscaling keeps each channel's mean colour
    np.testing.assert_allclose(small.images[3].mean((0, 1)),
                               load_rgb(table.image[3]).mean((0, 1)), atol=4)
    again = TrainingCache.open(cache.path)
    np.testing.assert_array_equal(again.images[:], cache.images[:])
    assert list(again.table.sample_id) == list(table.sample_id)


def test_rebuilt_only_when_inputs_or_settings_change(tmp_path: Path) -> None:
    table = utk_table(tmp_path / "d")
    first = build_cache(table, tmp_path / "c", CacheSpec(size=16), workers=1)
    stamp = (first.path / "images.u8").stat().st_mtime_ns
    same = build_cache(table, tmp_path / "c", CacheSpec(size=16), workers=1)
    assert same.path == first.path
    assert (same.path / "images.u8").stat().st_mtime_ns == stamp  # not rebuilt
    assert build_cache(table, tmp_path / "c", CacheSpec(size=24), workers=1).path != first.path
    relabelled = table.with_labels(age=table.labels["age"] + 1)
    assert build_cache(relabelled, tmp_path / "c", CacheSpec(size=16), workers=1).path \
        != first.path
    path = Path(table.image[0])
    write_image(path, seed=1234)  # new content
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
    assert build_cache(table, tmp_path / "c", CacheSpec(size=16), workers=1).path != first.path


def test_interrupted_build_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    table = utk_table(tmp_path / "d")
    import facefuse.data.cache as cache_mod

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod.SampleTable, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        build_cache(table, tmp_path / "c", CacheSpec(size=16), workers=1)
    assert not any((p / "meta.json").exists() for p in (tmp_path / "c").iterdir())
    assert [p for p in (tmp_path / "c").iterdir() if p.is_dir()] == []  # no leftover either
    monkeypatch.undo()
    cache = build_cache(table, tmp_path / "c", CacheSpec(size=16), workers=1)
    assert cache.valid.all()


def test_a_killed_builds_leftover_is_removed(tmp_path: Path) -> None:
    table = utk_table(tmp_path / "d")
    first = build_cache(table, tmp_path / "c", CacheSpec(size=16), workers=1)
    shutil.rmtree(first.path)
    orphan = tmp_path / "c" / f".{first.path.name}.building-999999"  # its process is gone
    orphan.mkdir()
    (orphan / "images.u8").write_bytes(b"half")
    other = tmp_path / "c" / ".cache-0123456789abcdef.building-999999"  # another key's: kept
    other.mkdir()
    cache = build_cache(table, tmp_path / "c", CacheSpec(size=16), workers=1)
    assert cache.path == first.path and cache.valid.all()
    assert not orphan.exists() and other.exists()


def test_processes_building_one_cache_take_turns(tmp_path: Path, monkeypatch, caplog) -> None:
    """Two builds of one key at once (two trainings started side by side): the images are
    decoded once, the second build waits and opens the first one's cache."""
    import threading
    import time

    import facefuse.data.cache as cache_mod

    table = utk_table(tmp_path / "d", n=20)
    decoded, real = [], cache_mod._decode_one

    def slow_decode(job):
        decoded.append(job[0])
        time.sleep(0.02)
        return real(job)

    monkeypatch.setattr(cache_mod, "_decode_one", slow_decode)
    caches, errors = [], []

    def build() -> None:
        try:
            caches.append(build_cache(table, tmp_path / "c", CacheSpec(size=16), workers=1))
        except Exception as e:  # pragma: no cover - reported by the assert below
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(2)]
    with caplog.at_level("WARNING", logger="facefuse.data.file_lock"):
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert errors == [] and len(caches) == 2
    assert "another process is building" in caplog.text  # the one that waited says so
    assert len(decoded) == len(table)  # not twice
    assert caches[0].path == caches[1].path and caches[0].meta == caches[1].meta
    assert sorted(p.name for p in (tmp_path / "c").iterdir() if p.is_dir()) \
        == [caches[0].path.name]


def test_corrupt_image_is_skipped_not_fatal(tmp_path: Path) -> None:
    table = utk_table(tmp_path / "d")
    truncate(Path(table.image[2]), keep=0.2)
    cache = build_cache(table, tmp_path / "c", CacheSpec(size=16), workers=2)
    assert not cache.valid[2] and cache.valid.sum() == 11
    assert table.image[2] in cache.meta["skipped"][0]["reason"]
    assert 2 not in cache.rows()


def test_landmarks_follow_the_crop(tmp_path: Path) -> None:
    write_300w(tmp_path / "d", n=4)
    table = read_dataset("300w", tmp_path / "d").table
    cache = build_cache(table, tmp_path / "c", CacheSpec(size=32, landmark_margin=0.0),
                        workers=1)
    pts = cache.table.labels["landmarks"]
    # with no margin the landmark box spans the crop: extremes at 0 and 1 on the long side
    raw = face_points()
    long_axis = int(np.argmax(raw.max(0) - raw.min(0)))
    assert pts[..., long_axis].min() == pytest.approx(0, abs=1e-5)
    assert pts[..., long_axis].max() == pytest.approx(1, abs=1e-5)
    box = crop_box(64, 64, raw, "300w", CacheSpec(landmark_margin=0.0))
    assert box[2] - box[0] == pytest.approx(box[3] - box[1])


def test_center_crop_for_loose_datasets() -> None:
    assert crop_box(200, 200, None, "celeba", CacheSpec(center_crop={"celeba": 0.5})) == \
        (50.0, 50.0, 150.0, 150.0)
    assert crop_box(200, 100, None, "utkface", CacheSpec()) == (0.0, 0.0, 200.0, 100.0)
    with pytest.raises(ValueError, match="center_crop"):
        CacheSpec(center_crop={"celeba": 1.5})
    with pytest.raises(ValueError, match="cache size"):
        CacheSpec(size=3)


def test_loader_batches_cover_rows_with_masks(fake_root: Path, tmp_path: Path) -> None:
    tables = [read_dataset(n, loc).table for n, loc in find_datasets(fake_root)]
    cache = build_cache(SampleTable.concat(tables), tmp_path / "c", CacheSpec(size=16),
                        workers=2)
    rows = cache.rows("train")
    ids = identity_classes(cache, rows)
    loader = CacheLoader(cache, rows, batch_size=7, seed=1, identities=ids,
                         augment=AugmentSpec())
    seen = []
    for batch in loader:
        assert batch.images.shape[1:] == (3, 16, 16) and batch.images.dtype == torch.float32
        for task, mask in batch.masks.items():
            expected = get_task(task).is_present(cache.table.labels[task][batch.index])
            assert mask.numpy().tolist() == expected.tolist()
        ident = batch.labels["identity"][batch.masks["identity"]]
        assert (ident >= 0).all() and (ident < len(ids)).all()
        seen += batch.index.tolist()
    assert sorted(seen) == sorted(rows.tolist())
    first = [b.index.tolist() for b in loader]
    second = [b.index.tolist() for b in loader]
    assert first != second  # reshuffled per epoch
    fixed = CacheLoader(cache, rows, batch_size=7, shuffle=False, prefetch=0)
    assert [b.index.tolist() for b in fixed][0] == sorted(rows[:7].tolist())
    with pytest.raises(ValueError, match="batch_size"):
        CacheLoader(cache, rows, batch_size=0)


def test_flip_permutation_is_an_involution() -> None:
    perm = np.asarray(FLIP_68)
    assert sorted(perm) == list(range(68))
    assert (perm[perm] == np.arange(68)).all()
    assert perm[36] == 45 and perm[48] == 54 and perm[30] == 30


def test_augment_flip_moves_pixels_and_points_together() -> None:
    img = torch.zeros(1, 3, 20, 20)
    img[..., 2:5, 3:6] = 1.0  # a bright patch at x 3..5 (centre 4.5 px -> 0.225)
    pts = torch.full((1, 68, 2), 0.5)
    pts[0, 36] = torch.tensor([0.225, 0.175])
    spec = AugmentSpec(flip=1.0, max_rotation=0, max_scale=0, max_shift=0, brightness=0,
                       contrast=0, grayscale=0)
    out, moved = augment_batch(img, pts, spec, torch.Generator().manual_seed(0))
    ys, xs = torch.nonzero(out[0, 0] > 0.5, as_tuple=True)
    assert xs.float().mean().item() + 0.5 == pytest.approx(20 * (1 - 0.225), abs=0.6)
    # point 36 flipped to x 0.775 and relabelled as point 45
    assert moved[0, 45, 0].item() == pytest.approx(0.775, abs=1e-5)


def test_loader_normalisation_matches_formula(tmp_path: Path) -> None:
    from facefuse.data.loader import DEFAULT_MEAN, DEFAULT_STD

    cache = build_cache(utk_table(tmp_path / "d"), tmp_path / "c", CacheSpec(size=16),
                        workers=1)
    for channels_last in (False, True):
        batch = next(iter(CacheLoader(cache, cache.rows(), batch_size=4, shuffle=False,
                                      channels_last=channels_last)))
        raw = torch.from_numpy(np.array(cache.images[batch.index])).permute(0, 3, 1, 2)
        mean = torch.tensor(DEFAULT_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(DEFAULT_STD).view(1, 3, 1, 1)
        torch.testing.assert_close(batch.images, (raw.float() / 255 - mean) / std)
        assert batch.images.is_contiguous(
            memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _real_utkface(shared_data: Path, root: Path, names: tuple[str, ...]) -> SampleTable:
    folder = root / "utkface" / "UTKFace"
    folder.mkdir(parents=True)
    for name in names:
        shutil.copy(shared_data / "utkface" / "UTKFace" / name, folder / name)
    return read_dataset("utkface", root).table


REAL_UTK = ("26_1_2_20170103184117683.jpg.chip.jpg", "45_0_1_20170111195732003.jpg.chip.jpg",
            "8_0_0_20170103200436055.jpg.chip.jpg")


def test_detector_crops_are_the_analyzers_crops(shared_data: Path, tmp_path: Path) -> None:
    from facefuse.inference.analyzer import FaceAnalyzer

    table = _real_utkface(shared_data, tmp_path / "d", REAL_UTK)
    analyzer = FaceAnalyzer(device="cpu")  # default detector and margin
    size = analyzer.model.size
    spec = CacheSpec(size=size, detector_crop=("utkface",))
    cache = build_cache(table, tmp_path / "c", spec, workers=2)
    assert cache.valid.all()
    for i in range(len(table)):
        rgb = load_rgb(table.image[i])
        faces = analyzer.detect(rgb)
        assert len(faces) == 1, "each of these UTKFace chips shows one face"
        expected = analyzer.crops(rgb, faces)[0]
        np.testing.assert_array_equal(cache.images[i], expected)
        box = cache.boxes[i]
        assert box[2] - box[0] == pytest.approx(box[3] - box[1], rel=1e-4)
        assert box[2] - box[0] != pytest.approx(rgb.shape[1])  # not the whole-image fallback
    # the same images without detector crops are cut otherwise: the setting changes the key
    plain = build_cache(table, tmp_path / "c", CacheSpec(size=size), workers=1)
    assert plain.path != cache.path
    assert not np.array_equal(plain.images[0], cache.images[0])


def test_detector_crop_falls_back_where_no_face_is_found(tmp_path: Path) -> None:
    table = utk_table(tmp_path / "d", n=3)  # random texture: no face
    spec = CacheSpec(size=16, detector_crop=("utkface",), detector="mtcnn")
    cache = build_cache(table, tmp_path / "c", spec, workers=1)
    assert cache.valid.all()
    np.testing.assert_array_equal(cache.boxes, [[0, 0, 32, 32]] * 3)  # the whole image
    np.testing.assert_array_equal(cache.boxes, build_cache(
        table, tmp_path / "c", CacheSpec(size=16), workers=1).boxes)


def test_detector_crop_settings_are_checked_and_keep_old_keys() -> None:
    with pytest.raises(KeyError, match="valid names: .*mtcnn"):
        CacheSpec(detector_crop=("utkface",), detector="yunet")
    CacheSpec(detector="yunet")  # not used without detector_crop datasets
    assert "detector" not in CacheSpec().to_dict()  # caches built before keep their keys
    d = CacheSpec(detector_crop=["utkface", "celeba"]).to_dict()
    assert d["detector_crop"] == ["celeba", "utkface"] and d["detector"] == "mtcnn"
    assert build_detector("mtcnn").name == "mtcnn"
