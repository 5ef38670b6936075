"""The training cache: images decoded once, cropped and resized, stored as uint8 on disk.

A cache folder holds

* ``images.u8``: a raw ``(N, S, S, 3)`` uint8 array (memory-mapped when read);
* ``table.npz``: the sample table, landmarks converted to the cached crop's normalised
  coordinates (0..1, x right, y down);
* ``boxes.npy``: the crop box ``(x0, y0, x1, y1)`` in source pixels per row;
* ``valid.npy``: False where decoding failed (listed in ``meta.json``'s ``skipped``);
* ``meta.json``: the spec, the content key, counts, skipped files, timings, and the
  builder's ``info`` (the trainer's: the seed its splits were drawn with).

The folder name carries a content key: a hash of the format version, the spec, and every
row's id, path, file size, modification time and labels. Changing any of them makes a new
key, so :func:`build_cache` rebuilds only when inputs or settings change. A build writes to a
temporary folder and renames it when complete, so an interrupted build leaves nothing half
written, and processes building the same key take turns (:mod:`facefuse.data.file_lock`):
the second one waits and opens what the first built.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from facefuse.data.file_lock import exclusive_lock
from facefuse.data.images import ImageError, load_rgb
from facefuse.data.table import SampleTable

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CROP_MODES = ("auto", "none")


@dataclass(frozen=True)
class CacheSpec:
    """How images are turned into cache entries.

    Attributes:
        size: side of the square cached image, in pixels.
        crop: ``"auto"`` crops around the landmarks where a row has them (their bounding
            box, made square and widened by ``landmark_margin``) and otherwise keeps the
            central ``center_crop[dataset]`` share of the image (1.0 when not listed);
            ``"none"`` resizes whole images.
        landmark_margin: share of the landmark box's side added on each side.
        center_crop: dataset name -> share of the image side kept around the centre (for
            loose crops such as the CelebA subset, whose face box is about half the side).
        detector_crop: datasets whose rows (without landmarks) are cropped the way the face
            analyzer crops: the largest face that ``detector`` finds, its calibrated
            landmark box widened by ``landmark_margin``; rows where it finds none fall back
            to the rule above. Training on these crops makes the training crops match what
            the model sees through the analyzer.
        detector: the detector's registered name (see :mod:`facefuse.detection.detectors`).
        min_face: the analyzer's smallest face, in source pixels.
    """

    size: int = 112
    crop: str = "auto"
    landmark_margin: float = 0.2
    center_crop: Mapping[str, float] = field(default_factory=lambda: {"celeba": 0.7})
    detector_crop: tuple[str, ...] = ()
    detector: str = "mtcnn"
    min_face: int = 24

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or not 8 <= self.size <= 1024:
            raise ValueError(f"cache size must be an integer in 8..1024, got {self.size!r}")
        if self.crop not in CROP_MODES:
            raise ValueError(f"cache crop must be one of {CROP_MODES}, got {self.crop!r}")
        if not 0 <= self.landmark_margin <= 2:
            raise ValueError(f"landmark_margin must be in 0..2, got {self.landmark_margin}")
        for name, share in self.center_crop.items():
            if not 0 < share <= 1:
                raise ValueError(f"center_crop[{name!r}] must be in (0, 1], got {share}")
        object.__setattr__(self, "detector_crop", tuple(self.detector_crop))
        if self.detector_crop:
            from facefuse.detection.detectors import DETECTORS

            DETECTORS.get(self.detector)  # an unknown name fails here, listing the valid ones

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["center_crop"] = dict(sorted(self.center_crop.items()))
        if not self.detector_crop:  # older caches' keys stay as they were
            for key in ("detector_crop", "detector", "min_face"):
                d.pop(key)
        else:
            d["detector_crop"] = sorted(self.detector_crop)
        return d


def content_key(table: SampleTable, spec: CacheSpec) -> str:
    """Hash of everything a cache depends on (see the module docstring)."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT_VERSION, "spec": spec.to_dict()},
                        sort_keys=True).encode())
    for sid, path in zip(table.sample_id, table.image, strict=True):
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{sid}\0{path}\0{stamp}\n".encode())
    for name in sorted(table.labels):
        col = table.labels[name]
        h.update(name.encode())
        h.update(json.dumps(col.tolist()).encode() if col.dtype == object else col.tobytes())
    h.update(table.split.astype(str).tobytes())
    return h.hexdigest()


def crop_box(width: int, height: int, landmarks: np.ndarray | None, dataset: str,
             spec: CacheSpec) -> tuple[float, float, float, float]:
    """The square crop ``(x0, y0, x1, y1)`` for one image under ``spec``."""
    if spec.crop == "auto" and landmarks is not None and np.isfinite(landmarks).all():
        x0, y0 = landmarks.min(axis=0)
        x1, y1 = landmarks.max(axis=0)
        side = max(x1 - x0, y1 - y0) * (1 + 2 * spec.landmark_margin)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    else:
        share = spec.center_crop.get(dataset, 1.0) if spec.crop == "auto" else 1.0
        if share >= 1.0:
            return 0.0, 0.0, float(width), float(height)
        side = min(width, height) * share
        cx, cy = width / 2, height / 2
    return float(cx - side / 2), float(cy - side / 2), float(cx + side / 2), float(cy + side / 2)


_DETECTORS: dict[str, object] = {}  # one detector per worker process, built on first use


def detector_crop_box(rgb: np.ndarray, spec: CacheSpec
                      ) -> tuple[float, float, float, float] | None:
    """The analyzer's crop box (see :meth:`facefuse.inference.analyzer.FaceAnalyzer.crops`)
    of the face ``spec.detector`` finds nearest the centre of ``rgb``, or None when it finds
    none."""
    from facefuse.detection.detectors import build_detector, square_around

    detector = _DETECTORS.get(spec.detector)
    if detector is None:
        options = {"min_size": max(spec.min_face, 12)} if spec.detector in ("haar", "mtcnn") \
            else {}
        detector = _DETECTORS[spec.detector] = build_detector(spec.detector, **options)
    faces = [d for d in detector.detect(rgb) if min(d.width, d.height) >= spec.min_face]
    if not faces:
        return None
    # dataset images are centred on their labelled face: take the face nearest the centre
    h, w = rgb.shape[:2]
    central = min(faces, key=lambda d: ((d.box[0] + d.box[2] - w) ** 2
                                        + (d.box[1] + d.box[3] - h) ** 2))
    cx, cy, side = square_around(detector.face_box(central), spec.landmark_margin)
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def _detector_crop(path: str, dataset: str, spec: CacheSpec
                   ) -> tuple[np.ndarray | None, tuple[float, ...], str | None]:
    from facefuse.detection.detectors import square_crop

    try:
        rgb = load_rgb(path)
    except ImageError as exc:
        return None, (0.0, 0.0, 0.0, 0.0), str(exc)
    h, w = rgb.shape[:2]
    box = detector_crop_box(rgb, spec) or crop_box(w, h, None, dataset, spec)
    x0, y0, x1, y1 = box
    # square_crop takes a box and a margin; the box is already the square, so margin 0
    return square_crop(rgb, box, 0.0, spec.size), (x0, y0, x1, y1), None


def _decode_one(args: tuple[str, np.ndarray | None, str, CacheSpec]
                ) -> tuple[np.ndarray | None, tuple[float, ...], str | None]:
    path, landmarks, dataset, spec = args
    if spec.crop == "auto" and dataset in spec.detector_crop and landmarks is None:
        return _detector_crop(path, dataset, spec)
    try:
        rgb = load_rgb(path, draft_size=(spec.size, spec.size))
    except ImageError as exc:
        return None, (0.0, 0.0, 0.0, 0.0), str(exc)
    h, w = rgb.shape[:2]
    # landmarks are in the full-resolution file's pixels; the JPEG draft may have shrunk it
    with Image.open(path) as probe:
        full_w, full_h = probe.size
    scale = w / full_w if full_w else 1.0
    box = crop_box(full_w, full_h, landmarks, dataset, spec)
    im = Image.fromarray(rgb)
    scaled = tuple(int(round(v * scale)) for v in box)
    if scaled != (0, 0, w, h):
        im = im.crop(scaled)
    im = im.resize((spec.size, spec.size), Image.BILINEAR, reducing_gap=2.0)
    return np.asarray(im, dtype=np.uint8), box, None


def read_versioned_json(file: Path, version: int, kind: str) -> dict:
    """The JSON in ``file``, whose ``format`` must be ``version``; ``kind`` names the folder
    in the errors.

    Raises:
        FileNotFoundError: when ``file`` is missing (the folder is incomplete or not one).
        ValueError: when the format differs.
    """
    if not file.is_file():
        raise FileNotFoundError(f"{file.parent} is not a complete {kind} (no {file.name})")
    data = json.loads(file.read_text())
    if data.get("format") != version:
        raise ValueError(f"{file.parent}: {kind} format {data.get('format')}, this facefuse "
                         f"reads {version}; rebuild it")
    return data


@dataclass
class TrainingCache:
    """A built cache, opened for reading (images memory-mapped)."""

    path: Path
    spec: CacheSpec
    table: SampleTable
    images: np.ndarray
    boxes: np.ndarray
    valid: np.ndarray
    meta: dict

    @classmethod
    def open(cls, path: str | Path) -> TrainingCache:
        """Open a complete cache folder."""
        path = Path(path)
        meta = read_versioned_json(path / "meta.json", FORMAT_VERSION, "training cache")
        spec_d = meta["spec"]
        spec = CacheSpec(**{**spec_d, "detector_crop": tuple(spec_d.get("detector_crop", ()))})
        n, s = meta["samples"], spec.size
        images = np.memmap(path / "images.u8", dtype=np.uint8, mode="r", shape=(n, s, s, 3))
        return cls(path, spec, SampleTable.load(path / "table.npz"), images,
                   np.load(path / "boxes.npy"), np.load(path / "valid.npy"), meta)

    def __len__(self) -> int:
        return len(self.table)

    def rows(self, split: str | None = None) -> np.ndarray:
        """Indices of valid rows, optionally of one split."""
        mask = self.valid.copy()
        if split is not None:
            mask &= self.table.split == split
        return np.flatnonzero(mask)

    def load_into_memory(self) -> None:
        """Replace the memory map by an in-RAM copy (faster random access)."""
        self.images = np.array(self.images)


def build_lock(cache: Path) -> Path:
    """The lock file that builders of the cache folder ``cache`` hold (beside it)."""
    return cache.parent / f".{cache.name}.lock"


BUILDING = ".building-"  # in a build folder's name, between the cache's name and the pid


def build_folder(cache: Path, pid: int | str = "*") -> Path:
    """The temporary folder process ``pid`` builds ``cache`` in (``*``: a glob of all)."""
    return cache.parent / f".{cache.name}{BUILDING}{pid}"


def _normalised_landmarks(table: SampleTable, boxes: np.ndarray) -> np.ndarray:
    pts = table.labels["landmarks"].astype(np.float32).copy()
    x0, y0 = boxes[:, 0, None], boxes[:, 1, None]
    side = np.maximum(boxes[:, 2] - boxes[:, 0], 1e-6)[:, None]
    side_y = np.maximum(boxes[:, 3] - boxes[:, 1], 1e-6)[:, None]
    pts[..., 0] = (pts[..., 0] - x0) / side
    pts[..., 1] = (pts[..., 1] - y0) / side_y
    return pts


def build_cache(table: SampleTable, cache_root: str | Path, spec: CacheSpec = CacheSpec(),
                name: str = "cache", workers: int | None = None,
                progress: bool = False, info: dict | None = None) -> TrainingCache:
    """Open the cache for ``table`` and ``spec`` under ``cache_root``, building it if needed.

    Args:
        table: the samples to cache (any mix of datasets).
        cache_root: folder that holds cache folders (created if missing).
        spec: size and crop settings.
        name: prefix of the cache folder's name.
        workers: decoding processes (default: CPU count).
        progress: show a progress bar while building.
        info: JSON-able facts about the table that its contents do not say (the trainer
            records the seed its splits were drawn with), stored as ``meta["info"]`` when
            the cache is built (a cache found up to date keeps the ones it was built with).
    """
    if len(table) == 0:
        raise ValueError("cannot build a training cache from an empty sample table")
    key = content_key(table, spec)
    root = Path(cache_root)
    final = root / f"{name}-{key[:16]}"
    if (final / "meta.json").is_file():
        log.info("training cache %s is up to date", final)
        return TrainingCache.open(final)
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(build_lock(final),
                        waiting=f"another process is building {final}; waiting for it"):
        if (final / "meta.json").is_file():  # built by the process this one waited for
            log.info("training cache %s was built by another process", final)
            return TrainingCache.open(final)
        # builders hold the lock, so any unfinished build of this key is a killed one's
        for orphan in root.glob(build_folder(final).name):
            log.info("removing an interrupted build: %s", orphan)
            shutil.rmtree(orphan, ignore_errors=True)
        tmp = build_folder(final, os.getpid())
        tmp.mkdir()
        try:
            _write_cache(table, tmp, spec, key, workers, progress, info)
        except BaseException:  # a failed or interrupted build leaves nothing behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if final.exists():  # an incomplete folder of the same key (no meta.json): replace it
            shutil.rmtree(final)
        tmp.rename(final)
    log.info("built training cache %s", final)
    return TrainingCache.open(final)


def _write_cache(table: SampleTable, tmp: Path, spec: CacheSpec, key: str,
                 workers: int | None, progress: bool, info: dict | None) -> None:
    """Decode every row of ``table`` into the cache files under ``tmp``."""
    n, s = len(table), spec.size
    images = np.memmap(tmp / "images.u8", mode="w+", dtype=np.uint8, shape=(n, s, s, 3))
    boxes = np.zeros((n, 4), dtype=np.float32)
    valid = np.zeros(n, dtype=bool)
    skipped = []
    has_pts = table.present("landmarks")
    jobs = ((table.image[i], table.labels["landmarks"][i] if has_pts[i] else None,
             table.dataset[i], spec) for i in range(n))
    start = time.perf_counter()
    workers = workers or os.cpu_count() or 1
    from tqdm.auto import tqdm

    bar = tqdm(total=n, desc=f"caching {n} images at {s}px", unit="img", disable=not progress)
    try:
        if workers > 1:
            pool = ProcessPoolExecutor(max_workers=workers)
            results = pool.map(_decode_one, jobs, chunksize=64)
        else:
            pool, results = None, map(_decode_one, jobs)
        for i, (arr, box, error) in enumerate(results):
            if arr is None:
                skipped.append({"path": str(table.image[i]), "reason": error or "unknown"})
                log.warning("cache: skipped %s", error)
            else:
                images[i] = arr
                valid[i] = True
            boxes[i] = box
            bar.update(1)
        if pool is not None:
            pool.shutdown()
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    images.flush()
    del images
    cached = table.with_labels(landmarks=_normalised_landmarks(table, boxes))
    cached.save(tmp / "table.npz")
    np.save(tmp / "boxes.npy", boxes)
    np.save(tmp / "valid.npy", valid)
    meta = {"format": FORMAT_VERSION, "key": key, "spec": spec.to_dict(), "samples": n,
            "valid": int(valid.sum()), "skipped": skipped, "build_seconds": round(seconds, 3),
            "images_per_second": round(n / max(seconds, 1e-9), 1),
            "datasets": table.datasets(), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "info": dict(info or {})}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    log.info("cached %d images in %.1fs", n, seconds)
