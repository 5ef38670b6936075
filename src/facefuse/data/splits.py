"""Deterministic train/val/test splits.

Every sample (or every group, such as a person) gets a pseudo-random key from a hash of its
id and the seed, so a split depends only on ids and seed, never on file-system order, and
adding files moves no existing sample between splits except at the cut points.

* ``stratify``: within each label value the samples are ordered by key and spread evenly
  over [0, 1) from a random per-stratum offset, then cut at the fractions: each large
  stratum keeps its share in every split (within one sample) and tiny strata still reach
  every split at the right rate.
* ``groups``: whole groups (identities) are ordered by key and assigned so that the
  cumulative image counts meet the fractions: no group appears in two splits. Grouping takes
  precedence over stratification.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from facefuse.data.table import SPLITS


def hash_keys(ids: Sequence[str], seed: int) -> np.ndarray:
    """A uniform float in [0, 1) per id, from BLAKE2b of ``seed:id`` (stable across runs)."""
    out = np.empty(len(ids), dtype=np.float64)
    salt = f"{seed}:".encode()
    for i, s in enumerate(ids):
        digest = hashlib.blake2b(salt + str(s).encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little") / 2.0**64
    return out


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or (f < 0).any() or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"split fractions must be three non-negative numbers (train, val, "
                         f"test) summing to 1, got {list(fractions)}")
    return f


def assign_splits(
    sample_ids: Sequence[str],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    stratify: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Return a split name (``train``/``val``/``test``) per sample.

    Args:
        sample_ids: unique id per sample.
        fractions: train, val and test shares (sum 1).
        seed: different seeds give different, equally deterministic splits.
        stratify: optional label per sample (any hashable; 1-D).
        groups: optional group per sample (e.g. identity); groups never straddle splits.
            Samples whose group is ``""`` or ``None`` are treated as their own groups.
    """
    f = _check_fractions(fractions)
    ids = np.asarray(sample_ids, dtype=object)
    n = len(ids)
    if n == 0:
        return np.empty(0, dtype=object)
    if groups is not None:
        groups = np.asarray(groups, dtype=object)
        if len(groups) != n:
            raise ValueError(f"groups has {len(groups)} entries, expected {n}")
        group_of = np.array([g if g not in ("", None) else f"\x00{i}" for i, g in
                             zip(ids, groups, strict=True)], dtype=object)
        names, inverse, counts = np.unique(group_of.astype(str), return_inverse=True,
                                           return_counts=True)
        order = np.argsort(hash_keys(names.tolist(), seed), kind="stable")
        # assign each group by where the midpoint of its images falls on the cumulative axis
        cum = np.cumsum(counts[order]) - counts[order] / 2.0
        bounds = np.cumsum(f) * n
        group_split = np.empty(len(names), dtype=object)
        group_split[order] = np.array(SPLITS, dtype=object)[
            np.minimum(np.searchsorted(bounds, cum, side="right"), 2)]
        return group_split[inverse]
    keys = hash_keys(ids.tolist(), seed)
    labels = np.zeros(n, dtype=object) if stratify is None else np.asarray(stratify).astype(str)
    if len(labels) != n:
        raise ValueError(f"stratify has {len(labels)} entries, expected {n}")
    strata, strata_inverse = np.unique(labels.astype(str), return_inverse=True)
    strata_inverse = strata_inverse.reshape(-1)
    # a per-stratum random offset makes tiny strata land in every split at the right rate
    offsets = hash_keys([f"stratum:{s}" for s in strata], seed)
    position = np.empty(n, dtype=np.float64)
    for s in range(len(strata)):
        rows = np.flatnonzero(strata_inverse == s)
        rows = rows[np.argsort(keys[rows], kind="stable")]
        position[rows] = (np.arange(len(rows)) + offsets[s]) / len(rows)
    return _by_position(position, f)


def _by_position(position: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Split name for positions in [0, 1): train below the first cut, val, then test."""
    index = np.searchsorted(np.cumsum(fractions)[:2], position, side="right")
    return np.array(SPLITS, dtype=object)[index]
