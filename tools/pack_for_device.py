"""Pack the data a training run reads into tar shards small enough for the GPU machine
(the command line of :mod:`facefuse.data.device_pack`).

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
from pathlib import Path

from facefuse.data.cache_pack import unpack_cache
from facefuse.data.device_pack import pack_cache_parts, pack_data_shards

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
        p.error("--cache packs and --unpack unpacks: give one of them")
    try:
        if args.cache:
            for folder in pack_cache_parts(args.cache, args.out, args.max_mib, args.quality,
                                           progress=True):
                files = [f for f in folder.iterdir() if f.name != "PACK.json"]
                print(f"{folder}: {len(files)} files, "
                      f"{sum(f.stat().st_size for f in files) / 2**20:.1f} MiB")
        elif args.unpack:
            cache = unpack_cache(args.unpack, args.out, progress=True)
            print(f"unpacked {len(cache)} images into {cache.path}")
        else:
            manifest = pack_data_shards(args.data, args.out, args.dataset, args.max_mib)
            for shard in manifest["shards"]:
                print(f"{Path(args.out) / shard['shard']}: {shard['files']} files, "
                      f"{shard['mib']} MiB")
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"pack_for_device: {exc}") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
