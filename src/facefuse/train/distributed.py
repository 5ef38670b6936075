"""Distributed data parallel, only when ``torchrun`` set the environment (WORLD_SIZE > 1).

NCCL on CUDA, gloo on the CPU. Rank 0 does all writing; :func:`barrier` keeps ranks in step
around it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_as_main() -> bool:
    """Whether this process is rank 0 of a torchrun launch, or was not launched by torchrun
    (readable before :func:`init_distributed` joins the group)."""
    return int(os.environ.get("RANK", "0")) == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun; a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(),
                    int(os.environ.get("LOCAL_RANK", "0")))


def join(device: torch.device) -> tuple[torch.device, DistInfo]:
    """Join the process group (when launched by torchrun) and pick this rank's device: under
    DDP on CUDA, the GPU of the local rank."""
    info = init_distributed(device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    return device, info


T = TypeVar("T")


def from_rank0(info: DistInfo, value: T) -> T:
    """Rank 0's ``value`` on every rank (``value`` itself without DDP): decisions such as
    "is this run done already?" must be the same on every rank."""
    if not info.enabled:
        return value
    box: list[Any] = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(info: DistInfo, value: T) -> list[T]:
    """Every rank's ``value``, in rank order, on every rank (``[value]`` without DDP)."""
    if not info.enabled:
        return [value]
    box: list[Any] = [None] * info.world_size
    dist.all_gather_object(box, value)
    return box


def rank0_first(info: DistInfo, make: Callable[[], T]) -> T:
    """``make()`` on rank 0, then, once it returned, on the other ranks: e.g. building a
    cache that the other ranks then find built."""
    if info.is_main:
        value = make()
    barrier(info)
    if not info.is_main:
        value = make()
    return value


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
