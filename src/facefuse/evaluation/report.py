"""Helpers for report folders: mean and spread, Markdown and CSV tables, environment."""

from __future__ import annotations

import csv
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def format_mean_std(values: Sequence[float], percent: bool, digits: int = 1) -> str:
    m, s = mean_std(values)
    scale = 100.0 if percent else 1.0
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(str(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def environment(device: object) -> dict[str, str]:
    """Versions and machine, for the record."""
    import torch

    import facefuse

    info = {"facefuse": facefuse.__version__, "python": sys.version.split()[0],
            "torch": torch.__version__, "numpy": np.__version__,
            "platform": platform.platform(), "processor": platform.machine(),
            "device": str(device)}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    import os

    info["cpus"] = str(os.cpu_count())
    return info
