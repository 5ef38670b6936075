"""Fitting the heads of :mod:`facefuse.inference.identity_heads`: a linear head per task on
standardised identity-network features (logistic regression for classes and attributes,
ridge for age; scikit-learn), the late-fusion weight with the model's own heads chosen on
validation rows, and the heads file written atomically (JSON + safetensors).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from facefuse.runtime.linear_heads import HEADS_FORMAT, LinearHead, fuse_scores
from facefuse.runtime.model_files import write_weights_and_json

#: the late fusion's candidate weights (the identity head's share)
FUSION_WEIGHTS = np.linspace(0.0, 1.0, 21)
#: a class or attribute value never seen in training gets this logit offset
ABSENT_LOGIT = -30.0


def standardisation(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and scales (standard deviations; 1 for a constant column)."""
    x = np.asarray(x_train, np.float64)
    std = x.std(0)
    return x.mean(0), np.where(std > 1e-8, std, 1.0)


def _logistic(x: np.ndarray, y: np.ndarray, c: float, width: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """Weights (width, d) and biases (width,) of a logistic regression whose softmax gives
    the probability of each of ``width`` classes (classes absent from ``y`` never win)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    weight, bias = np.zeros((width, x.shape[1])), np.full(width, ABSENT_LOGIT)
    classes = np.unique(y)
    if len(classes) == 1:
        bias[int(classes[0])] = 0.0
        return weight, bias
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m = LogisticRegression(C=c, max_iter=1000).fit(x, y)
    if len(m.classes_) == 2:  # one logit z for the second class: softmax([0, z])
        weight[int(m.classes_[1])], bias[int(m.classes_[1])] = m.coef_[0], m.intercept_[0]
        bias[int(m.classes_[0])] = 0.0
    else:
        weight[m.classes_.astype(int)], bias[m.classes_.astype(int)] = m.coef_, m.intercept_
    return weight, bias


def fit_linear_head(task: str, x_train: np.ndarray, y_train: np.ndarray, output: str,
                    param: float, features: tuple[str, ...], labels: tuple[str, ...] = (),
                    value_range: tuple[float, float] | None = None) -> LinearHead:
    """One task's head, fitted on standardised training features.

    Args:
        output: ``softmax`` (classes: logistic regression with inverse penalty ``param``),
            ``sigmoid`` (one binary logistic regression per column of ``y_train``) or
            ``linear`` (ridge with penalty ``param``).
        features: the names of the feature blocks whose columns ``x_train`` holds, in order.
        labels: class or attribute names (one per output).

    Returns the head with fusion weight 1 (:func:`choose_fusion_weight` picks another).
    """
    from sklearn.linear_model import Ridge

    mean, scale = standardisation(x_train)
    x = (np.asarray(x_train, np.float64) - mean) / scale
    if output == "softmax":
        weight, bias = _logistic(x, np.asarray(y_train).astype(int), param, len(labels))
    elif output == "sigmoid":
        y = np.asarray(y_train).astype(int)
        weight, bias = np.zeros((y.shape[1], x.shape[1])), np.zeros(y.shape[1])
        for j in range(y.shape[1]):
            w2, b2 = _logistic(x, y[:, j], param, 2)
            weight[j], bias[j] = w2[1] - w2[0], b2[1] - b2[0]  # sigmoid of the logit gap
    elif output == "linear":
        m = Ridge(alpha=param).fit(x, np.asarray(y_train, np.float64))
        weight, bias = np.asarray(m.coef_, np.float64)[None], np.array([float(m.intercept_)])
    else:
        raise ValueError(f"unknown output {output!r}; valid: softmax, sigmoid, linear")
    return LinearHead(task, tuple(features), mean, scale, weight, bias, output, tuple(labels),
                      1.0, value_range)


def score(output: str, scores: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> float:
    """The task's headline figure of continuous ``scores``: accuracy (%) of the argmax,
    mean accuracy (%) of attributes at ``threshold``, or mean absolute error."""
    if output == "softmax":
        return float(100 * np.mean(scores.argmax(1) == y))
    if output == "sigmoid":
        return float(100 * np.mean((scores >= threshold) == (y > 0)))
    return float(np.mean(np.abs(scores - y)))


def choose_fusion_weight(output: str, ident: np.ndarray, own: np.ndarray, y: np.ndarray
                         ) -> tuple[float, float]:
    """The identity head's share in the late fusion that scores best on these (validation)
    rows, ties to the smaller share; and that score."""
    lower_is_better = output == "linear"
    best = None
    for w in FUSION_WEIGHTS:
        s = score(output, fuse_scores(output, ident, own, float(w)), y)
        key = (s if lower_is_better else -s, float(w))
        if best is None or key < best[0]:
            best = (key, float(w), s)
    assert best is not None
    return best[1], best[2]


def write_heads(path: str | Path, heads: Mapping[str, LinearHead], **meta: object) -> Path:
    """Write ``path.json`` and ``path.safetensors`` (atomically); returns the weights file.

    Fine-tuned tails (``tails``: their graphs lie beside the heads, the age tail among them)
    that ``path.json`` lists already are kept unless ``meta`` gives ``tails``: refitting the
    linear heads does not drop them. Their fusion weights were chosen against the previous
    heads, so a warning says so."""
    from safetensors.numpy import save_file

    old_doc = Path(f"{path}.json")
    if "tails" not in meta and old_doc.is_file():
        tails = json.loads(old_doc.read_text()).get("tails")
        if tails:
            warnings.warn(f"{old_doc} lists {len(tails)} fine-tuned tail(s) "
                          f"({', '.join(t.get('task', '?') for t in tails)}): kept, with "
                          f"fusion weights chosen against the previous heads", stacklevel=2)
            meta = {**meta, "tails": tails}

    tensors, tasks = {}, {}
    for task, h in heads.items():
        for k in ("mean", "scale", "weight", "bias"):
            tensors[f"{task}.{k}"] = np.ascontiguousarray(getattr(h, k), np.float32)
        tasks[task] = {"features": list(h.features), "output": h.output,
                       "labels": list(h.labels), "fusion_weight": h.fusion_weight,
                       "range": None if h.value_range is None else list(h.value_range),
                       "threshold": h.threshold}
    doc = {"format": HEADS_FORMAT, "tasks": tasks, **meta}
    return write_weights_and_json(path, lambda f: save_file(tensors, f), doc)
