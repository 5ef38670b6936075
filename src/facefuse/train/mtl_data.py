"""The multi-task training's data: the sample tables of a config's datasets, its training
cache (built from ``data_root`` or a prebuilt folder), and the dataset sampling weights;
whether a cache is copied into RAM (:func:`hold_in_memory`, used by every recipe).
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from facefuse.data.cache import TrainingCache, build_cache
from facefuse.data.readers import SplitConfig, read_dataset
from facefuse.data.table import SampleTable
from facefuse.train.mtl_config import MTLConfig

log = logging.getLogger(__name__)


def load_data(cfg: MTLConfig) -> tuple[SampleTable, list[dict]]:
    tables, counts = [], []
    for name in cfg.datasets:
        r = read_dataset(name, cfg.data_root, SplitConfig(seed=cfg.splits_seed))
        t = r.table
        if cfg.limit_per_dataset is not None:  # part of the splits: drawn with their seed
            keep = []
            rng = np.random.default_rng(cfg.splits_seed)
            for s in ("train", "val", "test"):
                rows = np.flatnonzero(t.split == s)
                cap = cfg.limit_per_dataset if s == "train" else max(cfg.limit_per_dataset // 4,
                                                                      1)
                keep.append(np.sort(rng.permutation(rows)[:cap]))
            if name == "lfw":  # the verification benchmark needs every image a pair names
                keep.append(np.flatnonzero(t.fold >= 0))
            t = t.select(np.unique(np.concatenate(keep)))
        tables.append(t)
        counts.append({"dataset": name, "images": len(t), "skipped": len(r.skipped)})
    return SampleTable.concat(tables), counts


def open_prebuilt_cache(cfg: MTLConfig) -> tuple[TrainingCache, list[dict]]:
    """The cache ``cfg.cache`` names, narrowed to ``cfg.datasets``, and its per-dataset counts
    (images, and rows it could not decode; files the readers skipped are not recorded there).

    Raises:
        ValueError: when the cache was built with other settings than ``cfg`` asks for, or
            lacks one of ``cfg.datasets``.
    """
    cache = TrainingCache.open(cfg.cache)
    want, have = cfg.cache_spec().to_dict(), cache.spec.to_dict()
    if want != have:
        diff = {k: (have.get(k), want.get(k)) for k in set(want) | set(have)
                if want.get(k) != have.get(k)}
        raise ValueError(f"cache {cfg.cache} was built with other settings than this config "
                         f"asks for (setting: (cache, config)): {diff}")
    missing = sorted(set(cfg.datasets) - set(cache.table.datasets()))
    if missing:
        raise ValueError(f"cache {cfg.cache} holds no rows of {missing}")
    built_with = cache.meta.get("info", {}).get("split_seed")
    if built_with is None:  # caches built before the seed was recorded
        log.warning("cache %s does not record the seed of its splits; its train/val/test "
                    "rows are taken as split seed %d's", cfg.cache, cfg.splits_seed)
    elif built_with != cfg.splits_seed:
        raise ValueError(f"cache {cfg.cache} holds the splits of seed {built_with}; this config "
                         f"draws its splits with seed {cfg.splits_seed}: set split_seed: "
                         f"{built_with} (seed may differ) or build a cache for these splits")
    cache.valid = cache.valid & np.isin(cache.table.dataset, list(cfg.datasets))
    # the files the readers skipped never reached the cache and are not recorded in it;
    # "undecodable" counts the rows the cache could not decode
    counts = [{"dataset": name, "images": int((cache.table.dataset == name).sum()),
               "undecodable": int((~cache.valid & (cache.table.dataset == name)).sum())}
              for name in cfg.datasets]
    return cache, counts


def training_cache(cfg: MTLConfig, progress: bool = False
                   ) -> tuple[TrainingCache, list[dict]]:
    """The config's training cache and its per-dataset counts: the prebuilt ``cfg.cache``,
    or the one built from ``data_root`` (built now when missing)."""
    if cfg.cache is not None:
        return open_prebuilt_cache(cfg)
    table, counts = load_data(cfg)
    return build_cache(table, cfg.cache_dir, cfg.cache_spec(), name="mtl", workers=cfg.workers,
                       info={"split_seed": cfg.splits_seed},
                       progress=progress), counts


def keep_in_memory(cache: TrainingCache, setting: bool | None) -> bool:
    """Whether the trainer copies ``cache``'s images into RAM: ``setting`` when given, else
    when they take at most a quarter of the machine's physical memory."""
    if setting is not None:
        return setting
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf: stay with the memory map
        return False
    return cache.images.nbytes <= memory // 4


def hold_in_memory(cache: TrainingCache, setting: bool | None) -> None:
    """Copy ``cache``'s images into RAM when :func:`keep_in_memory` says so (faster random
    batches than the memory map; the same images)."""
    if keep_in_memory(cache, setting):
        t = time.perf_counter()
        cache.load_into_memory()
        log.info("training cache in memory: %.2f GB in %.1f s", cache.images.nbytes / 1e9,
                 time.perf_counter() - t)


def sampling_probabilities(table: SampleTable, rows: np.ndarray,
                           weights: dict[str, float]) -> np.ndarray | None:
    """Per-row probabilities giving each dataset a share of draws proportional to its
    weight (unlisted datasets: weight 1); None when no weights are set (uniform rows)."""
    if not weights:
        return None
    ds = table.dataset[rows]
    p = np.zeros(len(rows))
    for name in np.unique(ds):
        members = ds == name
        p[members] = weights.get(str(name), 1.0) / members.sum()
    return p / p.sum()
