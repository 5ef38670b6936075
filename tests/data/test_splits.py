from __future__ import annotations

import numpy as np
import pytest

from facefuse.data.splits import assign_splits, hash_keys


def ids(n: int) -> list[str]:
    return [f"s{i}" for i in range(n)]


def test_deterministic_and_seed_dependent() -> None:
    a = assign_splits(ids(500), seed=1)
    assert list(a) == list(assign_splits(ids(500), seed=1))
    assert list(a) != list(assign_splits(ids(500), seed=2))


def test_independent_of_input_order() -> None:
    names = ids(300)
    a = dict(zip(names, assign_splits(names, seed=3), strict=True))
    rev = names[::-1]
    b = dict(zip(rev, assign_splits(rev, seed=3), strict=True))
    assert a == b


def test_fractions_respected() -> None:
    s = assign_splits(ids(1000), (0.7, 0.2, 0.1), seed=0)
    counts = {k: int((s == k).sum()) for k in ("train", "val", "test")}
    assert counts == {"train": 700, "val": 200, "test": 100}


def test_stratification_keeps_label_shares() -> None:
    labels = np.array([0] * 900 + [1] * 100)
    s = assign_splits(ids(1000), seed=0, stratify=labels)
    for split, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert abs((labels[s == split] == 1).sum() - 100 * share) <= 1


def test_tiny_strata_reach_every_split() -> None:
    labels = np.arange(300)  # every sample its own stratum
    s = assign_splits(ids(300), seed=0, stratify=labels)
    assert {"train", "val", "test"} == set(s)


def test_groups_never_straddle_splits() -> None:
    rng = np.random.default_rng(0)
    groups = np.array([f"person{rng.integers(0, 60)}" for _ in range(600)], dtype=object)
    s = assign_splits(ids(600), seed=5, groups=groups)
    for g in set(groups):
        assert len(set(s[groups == g])) == 1
    share = (s == "train").mean()
    assert 0.6 < share < 0.95


def test_bad_fractions_and_lengths() -> None:
    with pytest.raises(ValueError, match="summing to 1"):
        assign_splits(ids(10), (0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="groups has 3 entries"):
        assign_splits(ids(10), groups=np.array(["a", "b", "c"]))


def test_hash_keys_uniform() -> None:
    k = hash_keys(ids(5000), 0)
    assert 0 <= k.min() and k.max() < 1
    assert abs(k.mean() - 0.5) < 0.02
