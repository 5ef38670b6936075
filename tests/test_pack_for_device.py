"""tools/pack_for_device.py: shards under the size limit that unpack to the same files."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from scripts import load_script


def _tool():
    return load_script("tools/pack_for_device.py")


def test_shards_respect_the_limit_and_unpack_to_the_layout(fake_root: Path,
                                                          tmp_path: Path) -> None:
    pack = _tool()
    out = tmp_path / "pack"
    assert pack.main(["--data", str(fake_root), "--max-mib", "0.05", "--out", str(out)]) == 0
    manifest = json.loads((out / "MANIFEST.json").read_text())
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
    pack = _tool()
    with pytest.raises(SystemExit, match="no data folder"):
        pack.main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "p")])
    with pytest.raises(SystemExit, match="no dataset folder"):
        pack.main(["--data", str(fake_root), "--dataset", "imagenet",
                   "--out", str(tmp_path / "p")])
