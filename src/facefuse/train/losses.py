"""Losses by name, each masked: rows without the task's label contribute nothing.

Every loss takes ``(output, target, mask)`` and returns a scalar: the mean over labelled
rows, or an exact zero (still attached to the graph) when a batch has none.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from facefuse.registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: Registry[LossFn] = Registry("loss")


def masked_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the entries where ``weights`` is 1; an exact zero, still
    attached to the graph, where there are none. No boolean indexing and no ``.any()``: the
    result never waits for the GPU (a host sync per task and step would)."""
    weights = weights.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


@LOSSES.register("cross_entropy")
def cross_entropy(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over class logits ``(N, C)`` and class indices ``(N,)``."""
    safe = torch.where(mask, target.long(), 0)  # masked rows may hold -1
    return masked_mean(F.cross_entropy(output.float(), safe, reduction="none"), mask)


@LOSSES.register("l1")
def l1(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of ``(N,)`` or ``(N, 1)`` predictions."""
    pred = output.reshape(len(output), -1)[:, 0].float()
    safe = torch.where(mask, target.float(), 0.0)  # masked rows may hold NaN
    return masked_mean((pred - safe).abs(), mask)


@LOSSES.register("binary_cross_entropy")
def binary_cross_entropy(output: torch.Tensor, target: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
    """Per-label sigmoid BCE over ``(N, K)`` logits and 0/1 targets; entries of -1 (missing)
    are masked individually, rows without any label by ``mask``."""
    entries = (target >= 0) & mask[:, None]
    safe = torch.where(entries, target.float(), 0.0)
    return masked_mean(F.binary_cross_entropy_with_logits(output.float(), safe,
                                                          reduction="none"), entries)


@LOSSES.register("landmark_l1")
def landmark_l1(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 over ``(N, K*2)`` or ``(N, K, 2)`` coordinates; NaN targets are masked."""
    out = output.reshape(len(output), -1).float()
    tgt = target.reshape(len(target), -1).float()
    entries = ~torch.isnan(tgt) & mask[:, None]
    return masked_mean((out - torch.where(entries, tgt, 0.0)).abs(), entries)
