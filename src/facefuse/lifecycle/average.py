"""Average the weights of checkpoints of one architecture into a new checkpoint (a model
soup; :mod:`facefuse.models.averaging` says when it works and what the result carries).

The result has no age calibration (its sources' maps were fitted to other outputs): run
``facefuse model calibrate`` on it before shipping. :func:`scan_mixing_shares` scores the
means of two checkpoints at several shares on the validation split, to choose the share
(``benchmarks/soup_scan.py`` prints it as the model card's table).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from facefuse.data.cache import TrainingCache
from facefuse.data.loader import CacheLoader
from facefuse.models.averaging import average_weights, mean_checkpoint
from facefuse.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from facefuse.runtime.model_files import checkpoint_paths
from facefuse.train.loop import predict, score


def average_checkpoints(paths: Sequence[str | Path], out: str | Path,
                        weights: Sequence[float] | None = None, force: bool = False
                        ) -> tuple[Path, Checkpoint]:
    """Write the weighted mean of the checkpoints at ``paths`` to ``out`` (.safetensors and
    .json); returns the weights file and the averaged checkpoint.

    Raises:
        FileExistsError: ``out`` exists and ``force`` is not set (nothing is read or written).
        FileNotFoundError, ValueError: as :func:`facefuse.models.averaging.average_weights`.
    """
    if not force and any(f.exists() for f in checkpoint_paths(out)):
        raise FileExistsError(f"{out} exists; force (--force) overwrites it")
    averaged = average_weights(paths, weights)
    return save_checkpoint(averaged.model, out, **averaged.meta), averaged


def scan_mixing_shares(a: str | Path, b: str | Path, cache: TrainingCache,
                       tasks: Sequence[str], alphas: Sequence[float], split: str = "val"
                       ) -> list[dict]:
    """Score the mean ``(1 - alpha) * A + alpha * B`` on the cache's ``split`` (validation by
    default, so the choice leaves the test split unseen; no flip, no calibration) for each
    alpha: one row per alpha, ``{"alpha": alpha, TASK: {metric: value}, ...}``. Alpha 0 is
    A itself, alpha 1 is B.

    Raises:
        ValueError: an alpha outside [0, 1], or checkpoints that cannot be averaged.
    """
    if not alphas or any(not 0 <= x <= 1 for x in alphas):
        raise ValueError(f"alphas must lie in [0, 1], got {list(alphas)}")
    loader = CacheLoader(cache, cache.rows(split), 256, shuffle=False, tasks=list(tasks))
    sources = [load_checkpoint(a), load_checkpoint(b)]  # read once for every alpha
    rows = []
    for alpha in alphas:
        if alpha == 0 or alpha == 1:  # a source itself (averaging refuses a zero weight)
            model = sources[int(alpha)].model
        else:
            model = mean_checkpoint(sources, [1 - alpha, alpha], names=[str(a), str(b)]).model
        preds = predict(model, loader, list(tasks))
        rows.append({"alpha": alpha, **{t: score(t, p["pred"], p["target"])
                                        for t, p in preds.items()}})
    return rows
