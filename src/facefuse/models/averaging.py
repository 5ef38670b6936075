"""Weight averaging of checkpoints of one architecture (a "model soup").

Two runs that share a start (a model and its own fine-tune, say) often sit in one basin of the
loss; the weighted mean of their weights then scores better than either, at no inference
cost. The shipped model is such a mean (docs/MODEL_CARD.md). Averaging unrelated runs
(different random starts) does not work: their units are not aligned, and the mean is noise.

Every checkpoint must have the same spec (trunk, options, heads), the same task label names,
input size and normalisation, and, where both record it, the same ``split_seed`` (the
splits they trained on); anything else is refused by name. Floating-point tensors
(weights and batch-norm statistics) are averaged in float64 and stored in the first
checkpoint's dtype; integer tensors (batch-norm step counters) come from the first.
The result's metadata is the first checkpoint's, without its ``calibration`` (a map fitted to
another model's outputs; fit a new one with ``facefuse model calibrate``), with
``averaged_from`` naming the sources and their weights. A ``verification_threshold`` stays
the first's (close for a mean of related runs; ``facefuse model ship`` sets the shipped one).

:func:`average_weights` reads the checkpoints from disk; :func:`mean_checkpoint` averages
checkpoints already loaded (several means of the same sources, as benchmarks/soup_scan.py
scores, without reading them again) and leaves them unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

from facefuse.models.checkpoint import Checkpoint, load_checkpoint

MUST_MATCH = ("spec", "tasks", "input_size", "normalisation")


def average_weights(paths: Sequence[str | Path], weights: Sequence[float] | None = None
                    ) -> Checkpoint:
    """The weighted mean of the checkpoints at ``paths`` (equal weights by default; weights
    must be positive and are scaled to sum to 1), as a :class:`Checkpoint` ready to save.

    Raises:
        ValueError: fewer than two paths, a weight count that does not match, a weight that
            is not positive, or checkpoints that differ in spec, labels, size or normalisation.
        FileNotFoundError: a checkpoint file is missing.
    """
    _shares(len(paths), weights)  # bad weights fail before anything is read
    return mean_checkpoint([load_checkpoint(p) for p in paths], weights,
                           names=[str(p) for p in paths])


def mean_checkpoint(sources: Sequence[Checkpoint], weights: Sequence[float] | None = None,
                    names: Sequence[str] | None = None) -> Checkpoint:
    """:func:`average_weights` of checkpoints already loaded (``names`` say where they came
    from, for the messages and ``averaged_from``); the sources are left unchanged."""
    share = _shares(len(sources), weights)
    names = list(names) if names is not None else [f"checkpoint {i}" for i in
                                                   range(len(sources))]
    first = sources[0]
    for name, other in zip(names[1:], sources[1:], strict=True):
        for key in MUST_MATCH:
            if first.meta.get(key) != other.meta.get(key):
                raise ValueError(f"{name} differs from {names[0]} in {key!r}: only checkpoints "
                                 "of one architecture and label set can be averaged")
        seeds = first.meta.get("split_seed"), other.meta.get("split_seed")
        if None not in seeds and seeds[0] != seeds[1]:  # absent in older checkpoints
            raise ValueError(f"{name} was trained on the splits of seed {seeds[1]}, {names[0]} "
                             f"on those of seed {seeds[0]}: their mean would have seen both "
                             "splits' training rows, leaving no clean validation or test split")
    states = [s.model.state_dict() for s in sources]
    mean = {}
    for key, tensor in states[0].items():
        if tensor.is_floating_point():
            acc = sum(w * s[key].double() for w, s in zip(share, states, strict=True))
            mean[key] = acc.to(tensor.dtype)
        else:
            mean[key] = tensor.clone()
    model = copy.deepcopy(first.model)
    model.load_state_dict(mean)
    meta = {k: v for k, v in first.meta.items() if k not in ("calibration", "format", "spec")}
    meta["averaged_from"] = [{"checkpoint": n, "weight": w}
                             for n, w in zip(names, share, strict=True)]
    return Checkpoint(model, meta)


def _shares(count: int, weights: Sequence[float] | None) -> list[float]:
    """``weights`` (equal when None) checked and scaled to sum to 1."""
    if count < 2:
        raise ValueError(f"averaging needs at least two checkpoints, got {count}")
    if weights is None:
        weights = [1.0] * count
    if len(weights) != count:
        raise ValueError(f"{len(weights)} weights for {count} checkpoints")
    if any(not w > 0 for w in weights):  # also refuses NaN
        raise ValueError(f"weights must be positive, got {list(weights)}")
    total = float(sum(weights))
    return [float(w) / total for w in weights]
