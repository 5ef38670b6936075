"""Pack the data a training run reads into tar shards small enough for the GPU machine.

The device tool sends the checkout and the ignored paths named in ``carry``, at most 64 MiB
a call; ``../shared`` does not travel. This script writes ``../shared/data`` (or the
datasets named with --dataset) as tar shards of at most --max-mib each under ``.pack/``
(ignored by git), plus ``.pack/MANIFEST.json`` with each shard's files and SHA-256. One
device call per shard unpacks it (the machine keeps its files while it stays warm):

    python tools/pack_for_device.py                      # here: .pack/shard-00.tar, ...
    # device call k, carry [".pack/shard-0k.tar"]:
    mkdir -p /root/ffdata && tar xf .pack/shard-0k.tar -C /root/ffdata
    # last call: train on the unpacked data
    facefuse train configs/mtl.yaml --set data_root=/root/ffdata

Shards hold whole files under their dataset folders (``utkface/UTKFace/...``), so the
unpacked folder has the layout the readers expect.

A built training cache packs far smaller (JPEG-encoded, see
:mod:`facefuse.data.cache_pack`): about 3 KiB an image at 96 px, so the whole 59k-image
multi-task cache goes over in a few calls, and training there needs no data folder:

    python tools/pack_for_device.py --cache .facefuse-cache/mtl-XXXX --out .pack/cache
    # parts .pack/cache/part-00, part-01, ... each under --max-mib; device call k,
    # carry [".pack/cache/part-0k"]:  mkdir -p /root/pack && cp .pack/cache/part-0k/* /root/pack/
    # then, there:
    python tools/pack_for_device.py --unpack /root/pack --out /root/cache
    facefuse train configs/mtl.yaml --profile shipped_gpu \
        --set cache=/root/cache/mtl-XXXX
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--dataset", action="append",
                   help="dataset folder to pack (repeatable; default: every folder)")
    p.add_argument("--max-mib", type=float, default=45.0,
                   help="largest shard in MiB (the checkout travels in the same 64 MiB)")
    p.add_argument("--out", default=str(ROOT / ".pack"))
    p.add_argument("--cache", help="pack this built training cache folder instead of data")
    p.add_argument("--quality", type=int, default=92, help="JPEG quality of a packed cache")
    p.add_argument("--unpack", help="rebuild the cache packed in this folder under --out")
    args = p.parse_args(argv)
    if args.cache and args.unpack:
        raise SystemExit("--cache packs and --unpack unpacks: give one of them")
    if args.cache:
        return pack_cache_parts(Path(args.cache), Path(args.out), args.max_mib, args.quality)
    if args.unpack:
        from facefuse.data.cache_pack import unpack_cache

        try:
            cache = unpack_cache(args.unpack, args.out, progress=True)
        except (FileNotFoundError, ValueError) as exc:
            raise SystemExit(str(exc)) from None
        print(f"unpacked {len(cache)} images into {cache.path}")
        return 0
    data = Path(args.data)
    if not data.is_dir():
        raise SystemExit(f"no data folder {data}")
    names = args.dataset or sorted(d.name for d in data.iterdir() if d.is_dir())
    missing = [n for n in names if not (data / n).is_dir()]
    if missing:
        raise SystemExit(f"no dataset folder {missing} under {data}")
    files = sorted(f for n in names for f in (data / n).rglob("*") if f.is_file())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("shard-*.tar"):
        old.unlink()
    manifest: list[dict] = []
    limit = int(args.max_mib * 2**20) - 10240  # the end-of-archive record
    tar, path, count = None, None, 0

    def close() -> None:
        tar.close()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        manifest.append({"shard": path.name, "files": count,
                         "mib": round(path.stat().st_size / 2**20, 1), "sha256": digest})
        print(f"{path}: {count} files, {manifest[-1]['mib']} MiB")

    for f in files:
        if tar is not None and tar.fileobj.tell() + f.stat().st_size + 2048 > limit:
            close()
            tar = None
        if tar is None:
            path = out / f"shard-{len(manifest):02d}.tar"
            tar, count = tarfile.open(path, "w", format=tarfile.GNU_FORMAT), 0
        tar.add(f, arcname=f.relative_to(data).as_posix())
        count += 1
    if tar is not None:
        close()
    (out / "MANIFEST.json").write_text(json.dumps({"data": str(data), "datasets": names,
                                                   "shards": manifest}, indent=1))
    return 0


def pack_cache_parts(cache: Path, out: Path, max_mib: float, quality: int) -> int:
    """Pack ``cache`` into ``out/part-NN`` folders of at most ``max_mib`` each (one device
    call apiece), each holding the manifest."""
    import shutil

    from facefuse.data.cache_pack import pack_cache

    if not (cache / "meta.json").is_file():
        raise SystemExit(f"{cache} is not a built training cache (no meta.json)")
    flat = out / "all"
    manifest = pack_cache(cache, flat, max_mib=max_mib, quality=quality, progress=True)
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
    for k, entries in enumerate(parts):
        folder = out / f"part-{k:02d}"
        folder.mkdir(parents=True)
        shutil.copy2(flat / "PACK.json", folder / "PACK.json")
        for entry in entries:
            (flat / entry["file"]).replace(folder / entry["file"])
        print(f"{folder}: {len(entries)} files, {sum(e['mib'] for e in entries):.1f} MiB")
    shutil.rmtree(flat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
