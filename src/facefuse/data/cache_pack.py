"""A training cache as a portable pack, for a machine that cannot read the data folder.

The GPU machine receives at most 64 MiB a call and never sees ``../shared/data``; a raw
cache (``images.u8``) is ten times larger than its JPEG-encoded images. :func:`pack_cache`
writes a built cache as

* ``head.zip``: ``meta.json``, ``table.npz``, ``boxes.npy``, ``valid.npy`` and, when the
  cache holds LFW View-2 images, ``lfw_pairs.json`` (the pairs resolved here, since the
  other machine cannot check the image files), deflated;
* ``images-NN.npz``: consecutive rows' JPEGs (one channel where the image is grey, as FER2013
  is), with offsets; each shard at most ``max_mib``;
* ``PACK.json``: the manifest (shards, sizes, SHA-256, JPEG quality, the cache's name).

:func:`unpack_cache` checks every shard against the manifest and rebuilds the cache folder
(same name and key) under a cache root; ``facefuse train ... --set cache=FOLDER`` then trains
from it without the data folder. Images come back JPEG-decoded (quality 92 by default: a
mean absolute error of about one grey level), not bit-identical.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from facefuse.data.cache import TrainingCache, read_versioned_json
from facefuse.data.readers.lfw import VerificationPair, read_pairs
from facefuse.files import file_sha256

PACK_FORMAT = 1
HEAD_FILES = ("meta.json", "table.npz", "boxes.npy", "valid.npy")
PAIRS_FILE = "lfw_pairs.json"


def encode_image(image: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of one ``(S, S, 3)`` uint8 image; one channel when all three agree."""
    grey = bool((image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all())
    im = Image.fromarray(image[..., 0] if grey else image)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def decode_image(data: bytes, size: int) -> np.ndarray:
    """The ``(size, size, 3)`` uint8 image of :func:`encode_image`'s bytes."""
    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    if arr.shape != (size, size, 3):
        raise ValueError(f"packed image has shape {arr.shape}, the cache holds "
                         f"{(size, size, 3)}")
    return arr


def lfw_view2_pairs(cache: TrainingCache) -> list[VerificationPair]:
    """LFW View-2 pairs whose two images the cache holds: those a packed cache carries
    (``lfw_pairs.json``), else read from the data folder's ``pairs.txt``; empty when the
    cache holds no LFW fold images."""
    table = cache.table
    rows = np.flatnonzero(cache.valid & (table.dataset == "lfw") & (table.fold >= 0))
    if not len(rows):
        return []
    carried = cached_lfw_pairs(cache)
    if carried is not None:
        pairs = [VerificationPair(p["fold"], p["a"], p["b"], p["same"]) for p in carried]
    else:
        lfw_root = Path(table.image[rows[0]]).parents[2]
        pairs = read_pairs(lfw_root / "pairs.txt", lfw_root / "lfw")
    cached = set(table.image[rows].tolist())
    return [p for p in pairs if p.image_a in cached and p.image_b in cached]


def pack_cache(cache_dir: str | Path, out_dir: str | Path, max_mib: float = 45.0,
               quality: int = 92, progress: bool = False) -> dict:
    """Write the cache at ``cache_dir`` as a pack under ``out_dir``; returns the manifest.

    Raises:
        ValueError: on a quality outside 1..100 or a shard limit below 0.01 MiB.
        FileNotFoundError: when ``cache_dir`` is not a complete cache.
    """
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    if max_mib < 0.01:
        raise ValueError(f"max_mib must be at least 0.01, got {max_mib}")
    cache = TrainingCache.open(cache_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("images-*.npz"), out / "head.zip", out / "PACK.json"]:
        old.unlink(missing_ok=True)
    with zipfile.ZipFile(out / "head.zip", "w", zipfile.ZIP_DEFLATED) as z:
        for name in HEAD_FILES:
            z.write(cache.path / name, name)
        pairs = lfw_view2_pairs(cache)
        if pairs:
            z.writestr(PAIRS_FILE, json.dumps([{"fold": p.fold, "a": p.image_a,
                                                "b": p.image_b, "same": p.same}
                                               for p in pairs]))
    limit = int(max_mib * 2**20) - 4096  # the npz's own headers
    shards: list[dict] = []
    rows: list[int] = []
    blobs: list[bytes] = []
    used = 0

    def flush() -> None:
        nonlocal rows, blobs, used
        path = out / f"images-{len(shards):02d}.npz"
        offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
        np.savez(path, rows=np.asarray(rows, dtype=np.int64), offsets=offsets,
                 data=np.frombuffer(b"".join(blobs), dtype=np.uint8))
        shards.append({"file": path.name, "rows": len(rows),
                       "mib": round(path.stat().st_size / 2**20, 2), "sha256": file_sha256(path)})
        rows, blobs, used = [], [], 0

    from tqdm.auto import tqdm

    valid_rows = np.flatnonzero(cache.valid)
    for i in tqdm(valid_rows, desc="packing", unit="img", disable=not progress):
        data = encode_image(np.asarray(cache.images[i]), quality)
        if blobs and used + len(data) + 16 > limit:
            flush()
        rows.append(int(i))
        blobs.append(data)
        used += len(data) + 16  # the row index and offset beside it
    if blobs:
        flush()
    manifest = {"format": PACK_FORMAT, "cache": cache.path.name, "samples": len(cache),
                "size": cache.spec.size, "quality": quality,
                "head": {"file": "head.zip", "sha256": file_sha256(out / "head.zip"),
                         "mib": round((out / "head.zip").stat().st_size / 2**20, 2)},
                "shards": shards}
    (out / "PACK.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def unpack_cache(pack_dir: str | Path, cache_root: str | Path,
                 progress: bool = False) -> TrainingCache:
    """Rebuild the cache packed in ``pack_dir`` under ``cache_root``; returns it opened.

    Raises:
        FileNotFoundError: when the manifest or a shard it names is missing.
        ValueError: when a shard's checksum or format does not match the manifest.
    """
    pack = Path(pack_dir)
    manifest = read_versioned_json(pack / "PACK.json", PACK_FORMAT, "cache pack")
    for entry in [manifest["head"], *manifest["shards"]]:
        path = pack / entry["file"]
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: copy every shard the manifest lists "
                                    f"({len(manifest['shards'])} image shards and head.zip)")
        if file_sha256(path) != entry["sha256"]:
            raise ValueError(f"{path}: checksum differs from the manifest (a broken copy)")
    root = Path(cache_root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / manifest["cache"]
    tmp = root / f".{final.name}.unpacking-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    with zipfile.ZipFile(pack / "head.zip") as z:
        z.extractall(tmp)
    n, s = manifest["samples"], manifest["size"]
    images = np.memmap(tmp / "images.u8", mode="w+", dtype=np.uint8, shape=(n, s, s, 3))
    from tqdm.auto import tqdm

    bar = tqdm(total=sum(e["rows"] for e in manifest["shards"]), desc="unpacking",
               unit="img", disable=not progress)
    for entry in manifest["shards"]:
        with np.load(pack / entry["file"], allow_pickle=False) as z:
            rows, offsets, data = z["rows"], z["offsets"], z["data"]
        for k, i in enumerate(rows):
            images[i] = decode_image(data[offsets[k]:offsets[k + 1]].tobytes(), s)
        bar.update(len(rows))
    bar.close()
    images.flush()
    del images
    meta_file = tmp / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["unpacked"] = {"jpeg_quality": manifest["quality"]}
    # meta.json marks a complete cache: written again last, after every image
    meta_file.write_text(json.dumps(meta, indent=1))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return TrainingCache.open(final)


def cached_lfw_pairs(cache: TrainingCache) -> list[dict] | None:
    """The LFW pairs a packed cache carries (``lfw_pairs.json``), or None."""
    path = cache.path / PAIRS_FILE
    return json.loads(path.read_text()) if path.is_file() else None
