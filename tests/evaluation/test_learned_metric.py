"""The learned verification metric: LDA beats cosine where nuisance dimensions dominate,
each fold's projection never sees that fold's people, and bad input is refused."""

import numpy as np
import pytest

import facefuse.evaluation.learned_metric as lm
from facefuse.evaluation.learned_metric import fit_lda, foldwise_lda_verification
from facefuse.evaluation.verification import verification_accuracy


def nuisance_faces(people=120, per_person=4, seed=0):
    """Identity lives in 4 weak dimensions; 20 loud dimensions are per-image noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, 4))
    rows, labels = [], []
    for k in range(people):
        for _ in range(per_person):
            rows.append(np.concatenate([centres[k] + 0.3 * rng.normal(size=4),
                                        5.0 * rng.normal(size=20)]))
            labels.append(f"p{k}")
    return np.array(rows), labels


def pairs_of(labels, folds=4, seed=1):
    """Per fold, matched and mismatched pairs among that fold's people only."""
    rng = np.random.default_rng(seed)
    names = sorted(set(labels), key=lambda s: int(s[1:]))
    fold_of = {n: i % folds for i, n in enumerate(names)}
    rows = {n: [i for i, m in enumerate(labels) if m == n] for n in names}
    a, b, same, fold = [], [], [], []
    for f in range(folds):
        mine = [n for n in names if fold_of[n] == f]
        for n in mine:
            other = mine[(mine.index(n) + 1 + rng.integers(len(mine) - 1)) % len(mine)]
            for i, j, is_same in ((rows[n][0], rows[n][1], True),
                                  (rows[n][2], rows[other][3], False)):
                a.append(i)
                b.append(j)
                same.append(is_same)
                fold.append(f)
    return fold_of, np.array(a), np.array(b), np.array(same), np.array(fold)


def test_lda_beats_cosine_on_nuisance_dimensions():
    x, labels = nuisance_faces()
    fold_of, a, b, same, fold = pairs_of(labels)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    cosine = verification_accuracy(np.sum(unit[a] * unit[b], 1), same, fold).accuracy
    learned, fitted = foldwise_lda_verification(x, labels, fold_of, a, b, same, fold,
                                                pca_dim=24, out_dim=4)
    assert cosine < 0.75
    assert learned.accuracy > 0.9
    assert fitted == [90, 90, 90, 90]  # each fold fitted on the other three folds' people


def test_each_fold_is_fitted_without_its_people(monkeypatch):
    x, labels = nuisance_faces(people=40)
    fold_of, a, b, same, fold = pairs_of(labels)
    seen = []
    real = lm.fit_lda

    def spy(features, labels, *rest):
        seen.append(set(labels))
        return real(features, labels, *rest)

    monkeypatch.setattr(lm, "fit_lda", spy)
    foldwise_lda_verification(x, labels, fold_of, a, b, same, fold, pca_dim=12, out_dim=4)
    assert len(seen) == 4
    for f, people in enumerate(seen):
        assert people and not any(fold_of[p] == f for p in people)


def test_people_outside_the_pairs_fit_every_fold():
    x, labels = nuisance_faces(people=44)
    fold_of, a, b, same, fold = pairs_of(labels[:160])  # p40..p43 are in no pair
    _, fitted = foldwise_lda_verification(x, labels, fold_of, a, b, same, fold,
                                          pca_dim=12, out_dim=4)
    assert fitted == [34, 34, 34, 34]


def test_projection_gives_unit_vectors_of_out_dim():
    x, labels = nuisance_faces(people=30)
    z = fit_lda(x, labels, pca_dim=10, out_dim=3).transform(x[:5])
    assert z.shape == (5, 3)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-9)


@pytest.mark.parametrize("kwargs, message", [
    ({"pca_dim": 0}, "pca_dim must be"),
    ({"pca_dim": 500}, "pca_dim must be"),
    ({"pca_dim": 10, "out_dim": 11}, "out_dim must be"),
    ({"pca_dim": 10, "out_dim": 0}, "out_dim must be"),
    ({"pca_dim": 10, "out_dim": 3, "shrinkage": 1.0}, "shrinkage"),
])
def test_bad_settings_are_refused(kwargs, message):
    x, labels = nuisance_faces(people=30)
    with pytest.raises(ValueError, match=message):
        fit_lda(x, labels, **kwargs)


def test_bad_data_is_refused():
    x, labels = nuisance_faces(people=30)
    with pytest.raises(ValueError, match="one label per row"):
        fit_lda(x, labels[:-1], pca_dim=10, out_dim=3)
    with pytest.raises(ValueError, match="one image"):
        fit_lda(x[:-3], labels[:-3], pca_dim=10, out_dim=3)
    with pytest.raises(ValueError, match="two or more people"):
        fit_lda(x[:4], labels[:4], pca_dim=3, out_dim=1)
    with pytest.raises(ValueError, match="out_dim must be"):  # 2 people: at most 1 direction
        fit_lda(x[:8], labels[:8], pca_dim=5, out_dim=2)


def test_foldwise_refuses_mismatched_pairs_and_rows():
    x, labels = nuisance_faces(people=40)
    fold_of, a, b, same, fold = pairs_of(labels)
    with pytest.raises(ValueError, match="equal"):
        foldwise_lda_verification(x, labels, fold_of, a, b[:-1], same, fold, 12, 4)
    with pytest.raises(ValueError, match="one person per row"):
        foldwise_lda_verification(x[:-1], labels, fold_of, a, b, same, fold, 12, 4)
