"""Average the weights of checkpoints of one architecture into a new checkpoint (a model
soup; :mod:`facefuse.models.averaging` says when it works and what the result carries).

The result has no age calibration (its sources' maps were fitted to other outputs): run
``facefuse model calibrate`` on it before shipping.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from facefuse.models.averaging import average_weights
from facefuse.models.checkpoint import Checkpoint, save_checkpoint
from facefuse.runtime.model_files import checkpoint_paths


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
