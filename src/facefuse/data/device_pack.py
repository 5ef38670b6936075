"""The data a training run reads, split into pieces small enough to carry to another machine
(the GPU machine takes at most 64 MiB a call, checkout included; ``tools/pack_for_device.py``
is the command line):

* :func:`pack_data_shards`: dataset folders as tar shards of at most ``max_mib`` each, whole
  files under their dataset folders (the unpacked folder has the layout the readers expect),
  with ``MANIFEST.json`` (each shard's files and SHA-256);
* :func:`pack_cache_parts`: a built training cache packed (:func:`facefuse.data.cache_pack.
  pack_cache`, JPEG-encoded, far smaller) into ``part-NN`` folders of at most ``max_mib``,
  each with the pack's manifest, one call apiece; :func:`facefuse.data.cache_pack.
  unpack_cache` rebuilds the cache from their files gathered in one folder.
"""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Sequence
from pathlib import Path

from facefuse.files import file_sha256, write_json_atomic

TAR_END = 10240  # the end-of-archive record
TAR_HEADER = 2048  # a member's header, with room for a long name


def pack_data_shards(data: str | Path, out: str | Path, datasets: Sequence[str] | None = None,
                     max_mib: float = 45.0) -> dict:
    """Write the dataset folders ``datasets`` (default: every folder) under ``data`` as
    ``out/shard-NN.tar`` of at most ``max_mib`` each (older shards there are removed) and
    ``out/MANIFEST.json``; returns the manifest.

    Raises:
        FileNotFoundError: no folder ``data``, or no dataset folder of that name in it.
        ValueError: a limit too small for the tar records.
    """
    data, out = Path(data), Path(out)
    if not data.is_dir():
        raise FileNotFoundError(f"no data folder {data}")
    limit = int(max_mib * 2**20) - TAR_END
    if limit <= TAR_HEADER:
        raise ValueError(f"max_mib {max_mib:g} leaves no room for a file")
    names = list(datasets or sorted(d.name for d in data.iterdir() if d.is_dir()))
    missing = [n for n in names if not (data / n).is_dir()]
    if missing:
        raise FileNotFoundError(f"no dataset folder {missing} under {data}")
    files = sorted(f for n in names for f in (data / n).rglob("*") if f.is_file())
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("shard-*.tar"):
        old.unlink()
    shards: list[dict] = []
    tar, path, count = None, None, 0

    def close() -> None:
        tar.close()
        shards.append({"shard": path.name, "files": count,
                       "mib": round(path.stat().st_size / 2**20, 1),
                       "sha256": file_sha256(path)})

    for f in files:
        if tar is not None and tar.fileobj.tell() + f.stat().st_size + TAR_HEADER > limit:
            close()
            tar = None
        if tar is None:
            path = out / f"shard-{len(shards):02d}.tar"
            tar, count = tarfile.open(path, "w", format=tarfile.GNU_FORMAT), 0
        tar.add(f, arcname=f.relative_to(data).as_posix())
        count += 1
    if tar is not None:
        close()
    manifest = {"data": str(data), "datasets": names, "shards": shards}
    write_json_atomic(out / "MANIFEST.json", manifest)
    return manifest


def pack_cache_parts(cache: str | Path, out: str | Path, max_mib: float = 45.0,
                     quality: int = 92, progress: bool = False) -> list[Path]:
    """Pack the built training cache ``cache`` into ``out/part-NN`` folders of at most
    ``max_mib`` each (older parts there are removed), each holding the pack's manifest;
    returns the part folders.

    Raises:
        FileNotFoundError: ``cache`` is not a built training cache.
        ValueError: as :func:`facefuse.data.cache_pack.pack_cache`.
    """
    from facefuse.data.cache_pack import pack_cache

    cache, out = Path(cache), Path(out)
    if not (cache / "meta.json").is_file():
        raise FileNotFoundError(f"{cache} is not a built training cache (no meta.json)")
    flat = out / "all"
    manifest = pack_cache(cache, flat, max_mib=max_mib, quality=quality, progress=progress)
    for old in out.glob("part-*"):
        shutil.rmtree(old)
    parts: list[list[dict]] = []
    for entry in sorted([manifest["head"], *manifest["shards"]], key=lambda e: -e["mib"]):
        # first fit, largest first: the small head.zip rides with an image shard
        room = [p for p in parts if sum(e["mib"] for e in p) + entry["mib"] <= max_mib]
        if room:
            room[0].append(entry)
        else:
            parts.append([entry])
    folders = []
    for k, entries in enumerate(parts):
        folder = out / f"part-{k:02d}"
        folder.mkdir(parents=True)
        shutil.copy2(flat / "PACK.json", folder / "PACK.json")
        for entry in entries:
            (flat / entry["file"]).replace(folder / entry["file"])
        folders.append(folder)
    shutil.rmtree(flat)
    return folders
