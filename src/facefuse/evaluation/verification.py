"""Face verification on LFW View 2: 10-fold accuracy of a cosine-similarity threshold.

For each fold, the threshold that maximises accuracy on the other nine folds' pairs is
applied to that fold's pairs (the standard unrestricted protocol); the result is the mean
and standard deviation of the ten fold accuracies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facefuse.data.readers.lfw import VerificationPair


@dataclass(frozen=True)
class VerificationResult:
    accuracy: float
    std: float
    fold_accuracies: tuple[float, ...]
    thresholds: tuple[float, ...]
    pairs: int


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The similarity threshold with the highest accuracy (ties: the middle of the best
    interval)."""
    order = np.sort(np.unique(scores))
    candidates = np.concatenate([[order[0] - 1e-6], (order[:-1] + order[1:]) / 2,
                                 [order[-1] + 1e-6]])
    acc = np.array([np.mean((scores > t) == same) for t in candidates])
    best = np.flatnonzero(acc == acc.max())
    return float(candidates[best[len(best) // 2]])


def fold_accuracy(scores: np.ndarray, same: np.ndarray, test: np.ndarray
                  ) -> tuple[float, float]:
    """Accuracy on the ``test`` pairs of the threshold that is best on all the others,
    and that threshold."""
    t = best_threshold(scores[~test], same[~test])
    return float(np.mean((scores[test] > t) == same[test])), t


def verification_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray
                          ) -> VerificationResult:
    """10-fold (or k-fold by ``folds``) verification accuracy of similarity ``scores``."""
    scores, same, folds = np.asarray(scores, float), np.asarray(same, bool), np.asarray(folds)
    if not (len(scores) == len(same) == len(folds)) or len(scores) == 0:
        raise ValueError("scores, same and folds must be non-empty and of equal length")
    accs, thresholds = [], []
    for f in np.unique(folds):
        test = folds == f
        if (~test).sum() == 0:
            raise ValueError("verification needs at least two folds")
        acc, t = fold_accuracy(scores, same, test)
        accs.append(acc)
        thresholds.append(t)
    return VerificationResult(float(np.mean(accs)), float(np.std(accs)), tuple(accs),
                              tuple(thresholds), len(scores))


def pair_scores(pairs: Sequence[VerificationPair], embeddings: dict[str, np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cosine similarity, same-person flag and fold per pair, from embeddings by image path."""
    def unit(v: np.ndarray) -> np.ndarray:
        return v / max(float(np.linalg.norm(v)), 1e-12)

    scores = np.array([float(unit(embeddings[p.image_a]) @ unit(embeddings[p.image_b]))
                       for p in pairs])
    return scores, np.array([p.same for p in pairs]), np.array([p.fold for p in pairs])
