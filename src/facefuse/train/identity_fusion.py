"""Fitting the fused identity embedding (:class:`facefuse.inference.identity.FusedIdentity`)
on training identities.

Given each network's raw descriptors of the same training faces and the faces' identities:

1. each network's *centre* is the mean of its unit descriptors (its common component:
   dlib's descriptors of two random faces have a cosine near 0.8 before centring);
2. pairs are drawn: every same-person pair up to a cap, and as many different-person pairs;
3. a logistic regression on the pairs' centred cosines (one feature per network) gives each
   network a weight; a network whose coefficient is not positive is dropped and the rest
   refitted, so the fused cosine is a weighted mean of cosines with positive weights;
4. the threshold is the fused cosine that classifies the training pairs best.

Nothing here sees evaluation pairs: callers pass faces of training identities only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facefuse.evaluation.verification import best_threshold
from facefuse.files import write_json_atomic
from facefuse.identity_format import FUSION_FORMAT

log = logging.getLogger(__name__)


def unit_rows(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def centred(descriptors: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Unit descriptors less ``centre``, unit length again (as the fused embedding uses
    them)."""
    return unit_rows(unit_rows(descriptors) - centre)


def training_pairs(labels: Sequence[object], max_same: int = 20000, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, same)``: same-person pairs (all, or ``max_same`` drawn at random) and as many
    different-person pairs drawn at random.

    Raises:
        ValueError: fewer than two identities, or no identity with two faces.
    """
    labels = np.asarray(labels, dtype=object)
    _, ids = np.unique(labels.astype(str), return_inverse=True)
    if ids.max(initial=-1) < 1:
        raise ValueError("fitting a fusion needs faces of at least two identities")
    rng = np.random.default_rng(seed)
    same_i, same_j = [], []
    for k in np.unique(ids):
        members = np.flatnonzero(ids == k)
        a, b = np.triu_indices(len(members), 1)
        same_i.append(members[a])
        same_j.append(members[b])
    si, sj = np.concatenate(same_i), np.concatenate(same_j)
    if not len(si):
        raise ValueError("fitting a fusion needs an identity with two or more faces")
    if len(si) > max_same:
        keep = rng.choice(len(si), max_same, replace=False)
        si, sj = si[keep], sj[keep]
    di, dj = [], []
    while sum(len(x) for x in di) < len(si):
        a = rng.integers(0, len(ids), 2 * len(si))
        b = rng.integers(0, len(ids), 2 * len(si))
        ok = ids[a] != ids[b]
        di.append(a[ok])
        dj.append(b[ok])
    di_, dj_ = np.concatenate(di)[:len(si)], np.concatenate(dj)[:len(si)]
    i = np.concatenate([si, di_])
    j = np.concatenate([sj, dj_])
    same = np.concatenate([np.ones(len(si), bool), np.zeros(len(si), bool)])
    return i, j, same


def pair_cosines(parts: Sequence[np.ndarray], centres: Sequence[np.ndarray],
                 i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """(pairs, networks): each network's centred cosine of each pair."""
    cols = []
    for d, c in zip(parts, centres, strict=True):
        e = centred(d, c)
        cols.append((e[i] * e[j]).sum(1))
    return np.stack(cols, axis=1)


@dataclass(frozen=True)
class FusionFit:
    """The fitted fusion: kept networks, their weights and centres, the threshold."""

    networks: tuple[str, ...]
    weights: tuple[float, ...]
    centres: tuple[np.ndarray, ...]
    threshold: float
    train_accuracy: float
    pairs: int
    dropped: tuple[str, ...] = ()
    coefficients: dict[str, float] = field(default_factory=dict)

    def fused_scores(self, cosines: np.ndarray) -> np.ndarray:
        """The fused cosine from per-network cosines (columns in ``networks`` order)."""
        w2 = np.asarray(self.weights) ** 2
        return cosines @ (w2 / w2.sum())


def fit_fusion(names: Sequence[str], parts: Sequence[np.ndarray], labels: Sequence[object],
               max_same: int = 20000, seed: int = 0, centre: Sequence[bool] | None = None
               ) -> FusionFit:
    """Fit weights, centres and threshold (module docstring) on training faces.

    Args:
        names: network names, one per entry of ``parts``.
        parts: each network's raw descriptors of the same N faces, (N, D_k).
        labels: the N faces' identities.
        centre: per network, whether to centre its descriptors (default: all); an
            uncentred network gets a zero centre.
    """
    from sklearn.linear_model import LogisticRegression

    if len(names) != len(parts) or not parts:
        raise ValueError(f"{len(names)} names for {len(parts)} descriptor arrays")
    n = len(labels)
    for name, d in zip(names, parts, strict=True):
        if d.ndim != 2 or len(d) != n or not np.isfinite(d).all():
            raise ValueError(f"{name}: descriptors must be finite, (N={n}, D); got {d.shape}")
    centre = [True] * len(parts) if centre is None else list(centre)
    if len(centre) != len(parts):
        raise ValueError(f"centre has {len(centre)} entries for {len(parts)} networks")
    centres = [unit_rows(d).mean(0) if c else np.zeros(d.shape[1], np.float32)
               for d, c in zip(parts, centre, strict=True)]
    i, j, same = training_pairs(labels, max_same, seed)
    cos = pair_cosines(parts, centres, i, j)
    keep = list(range(len(names)))
    coefficients: dict[str, float] = {}
    while True:
        model = LogisticRegression(C=100.0, max_iter=1000).fit(cos[:, keep], same)
        coef = model.coef_[0]
        coefficients = {names[k]: round(float(c), 4) for k, c in zip(keep, coef, strict=True)}
        bad = [k for k, c in zip(keep, coef, strict=True) if c <= 0]
        if not bad or len(keep) == 1:
            break
        log.info("dropping %s (coefficient %s)", [names[k] for k in bad], coefficients)
        keep = [k for k in keep if k not in bad]
    coef = np.maximum(coef, 1e-6)
    weights = np.sqrt(coef / coef.sum())
    fused = cos[:, keep] @ (coef / coef.sum())
    threshold = best_threshold(fused, same)
    return FusionFit(tuple(names[k] for k in keep), tuple(float(w) for w in weights),
                     tuple(centres[k] for k in keep), threshold,
                     float(np.mean((fused > threshold) == same)), len(same),
                     tuple(names[k] for k in range(len(names)) if k not in keep),
                     coefficients)


def pair_accuracy(fit: FusionFit, names: Sequence[str], parts: Sequence[np.ndarray],
                  labels: Sequence[object], threshold: float | None = None, max_same: int = 20000,
                  seed: int = 1) -> float:
    """Accuracy of ``fit`` (at its threshold, or ``threshold``) on balanced pairs of other
    faces (``parts`` in ``names`` order; networks the fit dropped are ignored)."""
    i, j, same = training_pairs(labels, max_same, seed)
    keep = [list(names).index(n) for n in fit.networks]
    cos = pair_cosines([parts[k] for k in keep], fit.centres, i, j)
    t = fit.threshold if threshold is None else threshold
    return float(np.mean((fit.fused_scores(cos) > t) == same))


def balanced_threshold(fit: FusionFit, sets: Sequence[tuple[Sequence[np.ndarray],
                                                             Sequence[object]]],
                       names: Sequence[str], seed: int = 0) -> float:
    """The threshold with the best mean accuracy over several sets of training faces
    (each ``(parts, labels)``, pairs balanced within each), so that no one kind of photo
    decides it."""
    scored = []
    for parts, labels in sets:
        i, j, same = training_pairs(labels, seed=seed)
        keep = [list(names).index(n) for n in fit.networks]
        scored.append((fit.fused_scores(pair_cosines([parts[k] for k in keep], fit.centres,
                                                     i, j)), same))
    candidates = np.unique(np.concatenate([s for s, _ in scored]))
    candidates = np.quantile(candidates, np.linspace(0, 1, 2001))
    accuracy = np.mean([[np.mean((s > t) == same) for t in candidates]
                        for s, same in scored], axis=0)
    best = np.flatnonzero(accuracy == accuracy.max())
    return float(candidates[best[len(best) // 2]])


def write_fusion(path: str | Path, fit: FusionFit, flip: bool, **meta: object) -> Path:
    """Write ``fit`` as a fused identity JSON (atomically: a temp file, then renamed); the
    networks' JSONs must lie beside it."""
    doc = {"format": FUSION_FORMAT, "threshold": round(fit.threshold, 6), "flip": flip,
           "parts": [{"network": n, "weight": round(w, 6),
                      "centre": [round(float(v), 6) for v in c]}
                     for n, w, c in zip(fit.networks, fit.weights, fit.centres, strict=True)],
           "fit": {"pairs": fit.pairs, "train_accuracy": round(fit.train_accuracy, 5),
                   "dropped": list(fit.dropped), "coefficients": fit.coefficients},
           **meta}
    return write_json_atomic(path, doc)
