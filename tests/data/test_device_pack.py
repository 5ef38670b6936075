"""Data packed for the GPU machine (facefuse.data.device_pack, tools/pack_for_device.py):
shards under the size limit that unpack to the same files."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from facefuse.data.device_pack import pack_data_shards


def test_shards_respect_the_limit_and_unpack_to_the_layout(fake_root: Path,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "pack"
    manifest = pack_data_shards(fake_root, out, max_mib=0.05)
    assert json.loads((out / "MANIFEST.json").read_text()) == manifest
    shards = sorted(out.glob("shard-*.tar"))
    assert len(shards) == len(manifest["shards"]) > 1
    assert all(s.stat().st_size <= 0.05 * 2**20 for s in shards)
    unpacked = tmp_path / "unpacked"
    for s in shards:
        with tarfile.open(s) as tar:
            tar.extractall(unpacked, filter="data")
    original = {p.relative_to(fake_root): p.read_bytes() for p in fake_root.rglob("*")
                if p.is_file()}
    copied = {p.relative_to(unpacked): p.read_bytes() for p in unpacked.rglob("*")
              if p.is_file()}
    assert copied == original
    assert sum(s["files"] for s in manifest["shards"]) == len(original)
    # the readers see the same datasets in the unpacked folder
    from facefuse.data.readers import find_datasets

    assert [n for n, _ in find_datasets(unpacked)] == [n for n, _ in find_datasets(fake_root)]


def test_bad_arguments_are_refused(fake_root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no data folder"):
        pack_data_shards(tmp_path / "missing", tmp_path / "p")
    with pytest.raises(FileNotFoundError, match="no dataset folder"):
        pack_data_shards(fake_root, tmp_path / "p", ["imagenet"])
    with pytest.raises(ValueError, match="leaves no room"):
        pack_data_shards(fake_root, tmp_path / "p", max_mib=0.001)
    assert not (tmp_path / "p").exists()
