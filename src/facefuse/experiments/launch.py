"""The start and end every experiment's run shares: its output folder locked (one run at a
time), the process group joined when launched by ``torchrun``, the config saved by rank 0;
at the end, the ranks meet and leave the group."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import torch

from facefuse.config import save_config
from facefuse.devices import resolve_device
from facefuse.train.distributed import DistInfo, barrier, join, shutdown
from facefuse.train.engine import run_lock


class ExperimentRun(NamedTuple):
    """Where a run writes, on which device, its place in the process group, and whether
    this process shows progress bars (rank 0 only)."""

    out: Path
    device: torch.device
    dist: DistInfo
    progress: bool


@contextmanager
def experiment_run(cfg: Any, progress: bool) -> Iterator[ExperimentRun]:
    """Run the body as ``cfg``'s experiment (``cfg.output``, ``cfg.device``).

    Raises:
        RunConflict: another process is running into the same output folder.
    """
    out = Path(cfg.output)
    with run_lock(out):
        device, dist = join(resolve_device(cfg.device))
        if dist.is_main:
            save_config(cfg, out / "config.yaml")
        yield ExperimentRun(out, device, dist, progress and dist.is_main)
        barrier(dist)
        shutdown(dist)
