"""A learned verification metric: linear discriminant analysis (LDA) of face features,
fitted on people with several images, scored on LFW View 2 fold by fold.

LFW's unrestricted protocol lets a method use the identities of the nine training folds.
:func:`foldwise_lda_verification` fits one projection per test fold on every person who is
*not* in that fold (people of the other folds and people in no pair), scores all pairs with
it, fits the threshold on the other nine folds' pairs and scores the test fold, so no test
person's images ever shape the projection that scores them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facefuse.evaluation.verification import VerificationResult, fold_accuracy


@dataclass(frozen=True)
class LDAProjection:
    """``unit((x - mean) @ matrix)``: features to a space where cosine similarity
    separates people (within-person spread whitened, between-person spread kept)."""

    mean: np.ndarray
    matrix: np.ndarray

    def transform(self, features: np.ndarray) -> np.ndarray:
        z = (np.asarray(features, np.float64) - self.mean) @ self.matrix
        return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def fit_lda(features: np.ndarray, labels: Sequence[str], pca_dim: int = 256,
            out_dim: int = 64, shrinkage: float = 0.0) -> LDAProjection:
    """Whitened PCA to ``pca_dim`` dimensions, then the ``out_dim`` directions with the
    largest ratio of between-person to within-person variance.

    Args:
        features: (N, D) feature vectors.
        labels: a person label per row; every person needs two or more rows.
        shrinkage: blend of the within-person scatter with a scaled identity (0..1).

    Raises:
        ValueError: on mismatched lengths, a person with one row, fewer than two people,
            ``pca_dim`` above N - 1 or D, ``out_dim`` above ``pca_dim`` or people - 1.
    """
    x = np.asarray(features, np.float64)
    y = np.asarray(labels, dtype=object)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"features must be (N, D) with one label per row, got {x.shape} "
                         f"and {len(y)} labels")
    counts = Counter(y.tolist())
    single = [k for k, n in counts.items() if n < 2]
    if single:
        raise ValueError(f"{len(single)} people have one image (first: {single[0]!r}); "
                         "LDA needs two or more per person")
    if len(counts) < 2:
        raise ValueError("LDA needs two or more people")
    if not 1 <= pca_dim <= min(len(x) - 1, x.shape[1]):
        raise ValueError(f"pca_dim must be 1..{min(len(x) - 1, x.shape[1])}, got {pca_dim}")
    if not 1 <= out_dim <= min(pca_dim, len(counts) - 1):
        raise ValueError(f"out_dim must be 1..{min(pca_dim, len(counts) - 1)} "
                         f"(pca_dim and people - 1), got {out_dim}")
    if not 0.0 <= shrinkage < 1.0:
        raise ValueError(f"shrinkage must be in [0, 1), got {shrinkage}")
    mean = x.mean(0)
    centred = x - mean
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    keep = s[:pca_dim] > 1e-9 * s[0]
    pca = vt[:pca_dim][keep].T / (s[:pca_dim][keep] / np.sqrt(len(x)))
    w = centred @ pca
    _, person = np.unique(y, return_inverse=True)
    n = np.bincount(person).astype(np.float64)
    means = np.zeros((len(n), w.shape[1]))
    np.add.at(means, person, w)
    means /= n[:, None]
    residual = w - means[person]
    within = residual.T @ residual / len(w)
    within = (1 - shrinkage) * within + shrinkage * np.eye(len(within)) * \
        np.trace(within) / len(within)
    spread = means - w.mean(0)
    between = (spread * n[:, None]).T @ spread / len(w)
    inv_chol = np.linalg.inv(np.linalg.cholesky(within + 1e-9 * np.eye(len(within))))
    values, vectors = np.linalg.eigh(inv_chol @ between @ inv_chol.T)
    top = np.argsort(values)[::-1][:out_dim]
    return LDAProjection(mean, pca @ (inv_chol.T @ vectors[:, top]))


def foldwise_lda_verification(features: np.ndarray, people: Sequence[str],
                              person_fold: dict[str, int], pair_a: np.ndarray,
                              pair_b: np.ndarray, same: np.ndarray, pair_fold: np.ndarray,
                              pca_dim: int = 256, out_dim: int = 64, shrinkage: float = 0.0
                              ) -> tuple[VerificationResult, list[int]]:
    """View-2 accuracy with a projection fitted per test fold, never on its people.

    Args:
        features: (N, D) one row per image.
        people: the person of each row.
        person_fold: the View-2 fold of each person in a pair (people absent: no fold).
        pair_a, pair_b: row indices of each pair's two images; ``same`` and ``pair_fold``
            per pair.

    Returns:
        The 10-fold result and, per fold, how many people fitted its projection.

    Raises:
        ValueError: on mismatched lengths, or (from :func:`fit_lda`) a fold left with too
            few people for the settings.
    """
    features = np.asarray(features, np.float64)
    people_arr = np.asarray(people, dtype=object)
    if features.ndim != 2 or len(features) != len(people_arr):
        raise ValueError(f"features must be (N, D) with one person per row, got "
                         f"{features.shape} and {len(people_arr)} people")
    pair_a, pair_b = np.asarray(pair_a, int), np.asarray(pair_b, int)
    if not len(pair_a) == len(pair_b) == len(same) == len(pair_fold) or not len(pair_a):
        raise ValueError("pair_a, pair_b, same and pair_fold must be non-empty and of equal "
                         "length")
    counts = Counter(people_arr.tolist())
    fold_of_row = np.array([person_fold.get(p, -1) for p in people_arr])
    enough = np.array([counts[p] >= 2 for p in people_arr])
    same, pair_fold = np.asarray(same, bool), np.asarray(pair_fold)
    accs, thresholds, fitted = [], [], []
    for f in np.unique(pair_fold):
        train = enough & (fold_of_row != f)
        projection = fit_lda(features[train], people_arr[train], pca_dim, out_dim, shrinkage)
        z = projection.transform(features)
        scores = np.sum(z[pair_a] * z[pair_b], axis=1)
        acc, t = fold_accuracy(scores, same, pair_fold == f)
        accs.append(acc)
        thresholds.append(t)
        fitted.append(len(set(people_arr[train].tolist())))
    return (VerificationResult(float(np.mean(accs)), float(np.std(accs)), tuple(accs),
                               tuple(thresholds), len(same)), fitted)
