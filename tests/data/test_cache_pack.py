"""A training cache packed for another machine: shards under a size limit that unpack to the
same cache (JPEG-close images, identical tables), and training from it without the data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import facefuse.train.mtl as mtl
from facefuse.cli import main
from facefuse.config import load_config
from facefuse.data.cache import build_cache
from facefuse.data.cache_pack import (
    cached_lfw_pairs,
    decode_image,
    encode_image,
    pack_cache,
    unpack_cache,
)
from facefuse.data.device_pack import pack_cache_parts
from facefuse.train.mtl import MTLConfig, load_data
from tests.training import write_config


@pytest.fixture
def built(fake_root: Path, tmp_path: Path):
    cfg = load_config(MTLConfig, write_config(tmp_path, fake_root))
    table, _ = load_data(cfg)
    return cfg, build_cache(table, cfg.cache_dir, cfg.cache_spec(), name="mtl", workers=1)


def test_grey_images_pack_as_one_channel_and_decode_to_three() -> None:
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.integers(0, 255, (32, 32, 1), dtype=np.uint8), 3, axis=2)
    colour = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    assert len(encode_image(grey, 92)) < len(encode_image(colour, 92))
    back = decode_image(encode_image(grey, 92), 32)
    assert back.shape == (32, 32, 3) and (back[..., 0] == back[..., 2]).all()
    with pytest.raises(ValueError, match="shape"):
        decode_image(encode_image(colour, 92), 48)


def test_pack_unpacks_to_the_same_cache(built, tmp_path: Path) -> None:
    _, cache = built
    manifest = pack_cache(cache.path, tmp_path / "pack", max_mib=0.02, quality=95)
    assert len(manifest["shards"]) > 1
    assert all((tmp_path / "pack" / s["file"]).stat().st_size <= 0.02 * 2**20
               for s in manifest["shards"])
    assert sum(s["rows"] for s in manifest["shards"]) == int(cache.valid.sum())
    back = unpack_cache(tmp_path / "pack", tmp_path / "elsewhere")
    assert back.path.name == cache.path.name and len(back) == len(cache)
    assert (back.valid == cache.valid).all() and np.array_equal(back.boxes, cache.boxes)
    assert list(back.table.image) == list(cache.table.image)
    rows = np.flatnonzero(cache.valid)
    diff = np.abs(back.images[rows].astype(int) - np.asarray(cache.images[rows], dtype=int))
    assert diff.mean() < 8  # JPEG at quality 95, of noise-like fake images (faces: ~1)
    assert back.meta["unpacked"] == {"jpeg_quality": 95}
    pairs = cached_lfw_pairs(back)
    assert pairs and all(p["a"] in set(back.table.image) for p in pairs)


def test_broken_or_missing_shards_are_refused(built, tmp_path: Path) -> None:
    _, cache = built
    pack = tmp_path / "pack"
    manifest = pack_cache(cache.path, pack, max_mib=0.02)
    shard = pack / manifest["shards"][1]["file"]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        unpack_cache(pack, tmp_path / "out")
    shard.unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        unpack_cache(pack, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="PACK.json"):
        unpack_cache(tmp_path, tmp_path / "out")
    assert not list((tmp_path / "out").glob("mtl-*"))  # nothing half-written left behind
    with pytest.raises(ValueError, match="quality"):
        pack_cache(cache.path, pack, quality=0)


def test_training_from_an_unpacked_cache_needs_no_data_folder(built, tmp_path: Path) -> None:
    cfg, cache = built
    pack_cache(cache.path, tmp_path / "pack")
    back = unpack_cache(tmp_path / "pack", tmp_path / "device-cache")
    shutil.rmtree(cfg.cache_dir)  # only the unpacked copy is left
    config = tmp_path / "mtl.yaml"
    out = tmp_path / "remote-run"
    assert main(["train", str(config), "--quiet", "--set", f"cache={back.path}",
                 "--set", f"data_root={tmp_path / 'no-data-here'}",
                 "--set", f"output={out}"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["identity"]["pairs"] > 0  # LFW pairs came with the pack
    assert {d["dataset"] for d in metrics["data"]} == set(cfg.datasets)
    assert all(d["undecodable"] == 0 and "skipped" not in d for d in metrics["data"])
    # a cache built with other settings than the config asks for is refused, naming them
    with pytest.raises(ValueError, match="image_size|size"):
        main(["train", str(config), "--quiet", "--set", f"cache={back.path}",
              "--set", "image_size=48", "--set", f"output={tmp_path / 'other'}"])
    with pytest.raises(ValueError, match="limit_per_dataset"):
        load_config(MTLConfig, config, [f"cache={back.path}", "limit_per_dataset=10"])


def test_a_cache_splits_into_parts_that_unpack_together(built, tmp_path: Path) -> None:
    _, cache = built
    out = tmp_path / "parts"
    parts = pack_cache_parts(cache.path, out, max_mib=0.05)
    assert parts == sorted(out.glob("part-*")) and len(parts) > 1
    for part in parts:
        assert (part / "PACK.json").is_file()
        assert sum(f.stat().st_size for f in part.iterdir() if f.name != "PACK.json") \
            <= 0.05 * 2**20
    assert not (out / "all").exists()
    merged = tmp_path / "merged"  # what the device calls leave in one folder
    merged.mkdir()
    for part in parts:
        for f in part.iterdir():
            shutil.copy2(f, merged / f.name)
    back = unpack_cache(merged, tmp_path / "c")
    assert (tmp_path / "c" / cache.path.name / "meta.json").is_file() and len(back) == len(cache)
    with pytest.raises(FileNotFoundError, match="not a built training cache"):
        pack_cache_parts(tmp_path, out)
    with pytest.raises(FileNotFoundError, match="PACK.json"):
        unpack_cache(tmp_path, tmp_path / "c")


def test_train_cache_only_builds_the_cache_the_training_uses(fake_root: Path, tmp_path: Path,
                                                             capsys) -> None:
    config = write_config(tmp_path, fake_root)
    assert main(["train", str(config), "--quiet", "--cache-only"]) == 0
    printed = capsys.readouterr().out
    folder = Path(printed.split("training cache: ")[1].split(" (")[0])
    assert (folder / "meta.json").is_file() and not (tmp_path / "run" / "state.pt").exists()
    cfg = load_config(MTLConfig, config)
    table, _ = load_data(cfg)
    assert build_cache(table, cfg.cache_dir, cfg.cache_spec(), name="mtl").path == folder
    assert main(["train", str(config), "--quiet", "--cache-only",
                 "--set", f"cache={folder}"]) == 2


def test_a_prebuilt_cache_must_hold_the_configs_splits(fake_root: Path, tmp_path: Path,
                                                       capsys, caplog) -> None:
    """The trainer records its split seed in the cache it builds; a packed copy keeps it, and
    a config that would draw other splits is refused (the cache's rows are not re-split)."""
    config = write_config(tmp_path, fake_root)
    assert main(["train", str(config), "--quiet", "--cache-only"]) == 0
    folder = Path(capsys.readouterr().out.split("training cache: ")[1].split(" (")[0])
    assert json.loads((folder / "meta.json").read_text())["info"] == {"split_seed": 0}
    pack_cache(folder, tmp_path / "pack")
    back = unpack_cache(tmp_path / "pack", tmp_path / "device-cache")
    assert back.meta["info"] == {"split_seed": 0}
    for sets, match in ((["seed=2"], "splits of seed 0; this config draws its splits with "
                                     "seed 2: set split_seed: 0"),
                        (["split_seed=1"], "splits of seed 0.*seed 1")):
        cfg = load_config(MTLConfig, config, [f"cache={back.path}", *sets])
        with pytest.raises(ValueError, match=match):
            mtl.MTLTrainer(cfg)
    # another training seed on the same splits is fine, and the checkpoint says which
    cfg = load_config(MTLConfig, config, [f"cache={back.path}", "seed=2", "split_seed=0"])
    assert cfg.splits_seed == 0
    mtl.MTLTrainer(cfg)
    # a cache from before the seed was recorded is trusted, with a warning
    legacy = json.loads((back.path / "meta.json").read_text())
    del legacy["info"]
    (back.path / "meta.json").write_text(json.dumps(legacy))
    with caplog.at_level("WARNING", logger="facefuse.train.mtl_data"):
        mtl.MTLTrainer(load_config(MTLConfig, config, [f"cache={back.path}"]))
    assert "does not record the seed of its splits" in caplog.text
