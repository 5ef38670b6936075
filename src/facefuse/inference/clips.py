"""Clip-level classification from frame-embedding statistics (Savchenko): the clip's vector
is [mean, std, min, max] of its main face track's embeddings, fed to a linear classifier
(logistic regression on standardised features). Labels come from a manifest
``video,label[,split]``. The classifier is saved as JSON (no pickles)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facefuse.files import write_json_atomic


def read_clip_manifest(path: str | Path) -> list[dict[str, str]]:
    """Rows of ``video,label[,split]``; video paths resolve against the manifest's folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"clip manifest {path} does not exist")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not {"video", "label"} <= set(reader.fieldnames or []):
            raise ValueError(f"{path}: needs 'video' and 'label' columns, found "
                             f"{reader.fieldnames}")
        rows = []
        for lineno, row in enumerate(reader, start=2):
            if not row["video"] or not row["label"]:
                raise ValueError(f"{path}:{lineno}: empty video or label")
            rows.append({"video": str((path.parent / row["video"]).resolve()),
                         "label": row["label"].strip(),
                         "split": (row.get("split") or "").strip()})
    if not rows:
        raise ValueError(f"{path}: no clips listed")
    return rows


@dataclass
class ClipClassifier:
    """A linear classifier on clip features (standardised, then multinomial logistic).

    ``features`` records how its clip features were made (``facefuse video fit`` stores the
    model's weights fingerprint, test-time flip, frame sampling, crop margin and detector),
    so that ``video predict`` can refuse or warn about features made another way; empty for
    classifiers saved without it.
    """

    classes: list[str]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    features: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, features: np.ndarray, labels: list[str], c: float = 1.0, seed: int = 0
            ) -> ClipClassifier:
        from sklearn.linear_model import LogisticRegression

        x = np.asarray(features, dtype=np.float64)
        if len(set(labels)) < 2:
            raise ValueError("a clip classifier needs at least two labels")
        mean, scale = x.mean(0), x.std(0) + 1e-6
        clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
        clf.fit((x - mean) / scale, labels)
        # two classes: sklearn keeps one logit z for the second class; softmax([0, z]) is
        # its sigmoid(z), so the probabilities stay sklearn's
        coef = clf.coef_ if len(clf.classes_) > 2 else np.vstack([np.zeros_like(clf.coef_),
                                                                  clf.coef_])
        intercept = clf.intercept_ if len(clf.classes_) > 2 else np.array(
            [0.0, clf.intercept_[0]])
        return cls([str(c) for c in clf.classes_], mean, scale, coef, intercept)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, np.float64)
        if features.ndim != 2 or features.shape[1] != self.coef.shape[1]:
            raise ValueError(f"this clip classifier takes {self.coef.shape[1]} features a clip "
                             f"(fitted on another model's embeddings?), got shape "
                             f"{features.shape}")
        z = ((features - self.mean) / self.scale) @ self.coef.T \
            + self.intercept
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, features: np.ndarray) -> list[str]:
        return [self.classes[i] for i in self.predict_proba(features).argmax(1)]

    def save(self, path: str | Path) -> None:
        """Write the classifier as JSON (through the package's atomic writer)."""
        write_json_atomic(path, {
            "classes": self.classes, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
            "coef": self.coef.tolist(), "intercept": self.intercept.tolist(),
            "features": self.features})

    @classmethod
    def load(cls, path: str | Path) -> ClipClassifier:
        """Read a classifier :meth:`save` wrote.

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file is not a clip classifier (naming what is wrong).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"clip classifier {path} does not exist")
        try:
            d = json.loads(path.read_text())
            clf = cls([str(c) for c in d["classes"]], np.asarray(d["mean"], np.float64),
                      np.asarray(d["scale"], np.float64), np.asarray(d["coef"], np.float64),
                      np.asarray(d["intercept"], np.float64), dict(d.get("features") or {}))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError,
                ValueError) as exc:
            raise ValueError(f"{path} is not a clip classifier (written by `facefuse video "
                             f"fit`): {type(exc).__name__}: {exc}") from None
        k, dim = len(clf.classes), clf.mean.shape[-1] if clf.mean.ndim else -1
        if not (clf.coef.shape == (k, dim) and clf.intercept.shape == (k,)
                and clf.mean.shape == clf.scale.shape == (dim,)):
            raise ValueError(f"{path} is not a clip classifier: inconsistent shapes (classes "
                             f"{k}, mean {clf.mean.shape}, scale {clf.scale.shape}, coef "
                             f"{clf.coef.shape}, intercept {clf.intercept.shape})")
        return clf


@dataclass(frozen=True)
class ClipFit:
    """A classifier fitted on a manifest's clips, with its score on the ``test`` clips."""

    classifier: ClipClassifier
    train_clips: int
    test_clips: int
    test_accuracy: float | None


def fit_on_manifest(features: list[np.ndarray | None], rows: list[dict[str, str]],
                    c: float = 1.0, seed: int = 0) -> ClipFit:
    """Fit on the clips of ``rows`` (from :func:`read_clip_manifest`) whose split is not
    ``test`` and that have a feature (``features[i]`` is row ``i``'s, None where its video
    gave none), and score the ``test`` ones.

    Raises:
        ValueError: no clip to train on, or fewer than two labels among them.
    """
    usable = [(f, r) for f, r in zip(features, rows, strict=True) if f is not None]
    train = [(f, r) for f, r in usable if r["split"] != "test"]
    test = [(f, r) for f, r in usable if r["split"] == "test"]
    if not train:
        raise ValueError("no clip with a face to train on")
    clf = ClipClassifier.fit(np.stack([f for f, _ in train]), [r["label"] for _, r in train],
                             c=c, seed=seed)
    accuracy = None
    if test:
        pred = clf.predict(np.stack([f for f, _ in test]))
        accuracy = float(np.mean([p == r["label"] for p, (_, r) in zip(pred, test,
                                                                       strict=True)]))
    return ClipFit(clf, len(train), len(test), accuracy)
