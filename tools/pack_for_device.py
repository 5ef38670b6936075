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
    facefuse train configs/mtl_mobilenet.yaml --set data_root=/root/ffdata

Shards hold whole files under their dataset folders (``utkface/UTKFace/...``), so the
unpacked folder has the layout the readers expect.
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
    args = p.parse_args(argv)
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


if __name__ == "__main__":
    raise SystemExit(main())
