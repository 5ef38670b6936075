"""A frozen trunk prefix, run once: what each cache row gives where training starts.

A trunk with a ``start_block`` (e.g. ``dlib_resnet`` with identity weights and
``start_block: 13``) trains only its tail; its ``prefix(images)`` (the stem and the frozen
blocks, whose weights ``prefix_parameters()`` names) gives the same map for an image every
epoch. :func:`prefix_inputs` computes that map
for every valid row of a training cache once, stores it (float16) in the cache's folder under
a key of the frozen weights, and returns it for :class:`~facefuse.data.loader.CacheLoader`'s
``inputs``: an epoch then costs the tail and the heads only. The maps are of the unaugmented
images, so such a run trains without augmentation.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facefuse.data.cache import TrainingCache
from facefuse.data.loader import DEFAULT_MEAN, DEFAULT_STD, CacheLoader
from facefuse.files import atomic_path

log = logging.getLogger(__name__)


def trunk_normalisation(trunk: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The ``mean`` and ``std`` a trunk's weights expect (its ``normalisation``, or
    ImageNet's for a trunk without one)."""
    norm = getattr(trunk, "normalisation", None)
    if not norm:
        return DEFAULT_MEAN, DEFAULT_STD
    return tuple(norm["mean"]), tuple(norm["std"])


def start_block(trunk: nn.Module) -> int:
    """Where the trunk's trained part starts (0: it takes images)."""
    return int(getattr(trunk, "start_block", 0) or 0)


def frozen_key(trunk: nn.Module, image_size: int) -> str:
    """A key of what the prefix computes: the prefix's weights (``trunk.prefix_parameters()``),
    the start block, the normalisation and the image size."""
    h = hashlib.sha256(f"{type(trunk).__name__}:{start_block(trunk)}:{image_size}:"
                       f"{trunk_normalisation(trunk)}".encode())
    for name, p in sorted(trunk.prefix_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def prefix_inputs(trunk: nn.Module, cache: TrainingCache, device: torch.device,
                  batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """The map ``trunk.prefix`` gives for each row of ``cache`` (zeros for rows that failed to
    decode), read from the cache's folder when computed before.

    Raises:
        ValueError: the trunk has no frozen prefix (``start_block`` 0), or its maps do not
            fit float16.
    """
    if start_block(trunk) == 0:
        raise ValueError(f"{type(trunk).__name__} has no frozen prefix (start_block is 0)")
    path = Path(cache.path) / f"prefix-{frozen_key(trunk, cache.spec.size)}.npy"
    if path.is_file():
        return np.load(path, mmap_mode="r")
    mean, std = trunk_normalisation(trunk)
    loader = CacheLoader(cache, cache.rows(), batch_size, shuffle=False, device=device,
                         tasks=(), mean=mean, std=std)
    was_training = trunk.training
    trunk.eval()
    from tqdm.auto import tqdm

    try:
        with atomic_path(path) as tmp:
            out: np.ndarray | None = None
            for batch in tqdm(loader, desc="frozen prefix", unit="batch",
                              disable=not progress):
                maps = trunk.prefix(batch.images).float().cpu().numpy()
                if np.abs(maps).max(initial=0.0) > np.finfo(np.float16).max:
                    raise ValueError(f"the prefix's maps exceed float16's range (largest "
                                     f"{np.abs(maps).max():.3g}): not storable as computed")
                if out is None:
                    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16,
                                                    shape=(len(cache), *maps.shape[1:]))
                out[batch.index] = maps.astype(np.float16)
            if out is None:
                raise ValueError("the cache has no valid row to compute a prefix for")
            out.flush()
            del out
    finally:
        trunk.train(was_training)
    log.info("frozen prefix of %d rows stored in %s", len(cache), path)
    return np.load(path, mmap_mode="r")
