"""Which torch device a run uses, from a name a user typed (torch is imported when called:
the inference path checks device names without it, :mod:`facefuse.runtime.graph`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; ``cpu``, ``cuda`` and ``cuda:N``
    (or any other torch device name) are checked here, so a typo or a missing GPU is a
    ValueError that says so, not an error from deep inside the first model call."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: CUDA is not available on this machine (torch "
                             f"{torch.__version__}); use auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    return device
