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


def _empty(output: torch.Tensor) -> torch.Tensor:
    return output.sum() * 0.0


@LOSSES.register("cross_entropy")
def cross_entropy(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over class logits ``(N, C)`` and class indices ``(N,)``."""
    if not mask.any():
        return _empty(output)
    return F.cross_entropy(output[mask].float(), target[mask].long())


@LOSSES.register("l1")
def l1(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of ``(N,)`` or ``(N, 1)`` predictions."""
    if not mask.any():
        return _empty(output)
    return F.l1_loss(output.reshape(len(output), -1)[mask, 0].float(), target[mask].float())


@LOSSES.register("binary_cross_entropy")
def binary_cross_entropy(output: torch.Tensor, target: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
    """Per-label sigmoid BCE over ``(N, K)`` logits and 0/1 targets; entries of -1 (missing)
    are masked individually, rows without any label by ``mask``."""
    entries = (target >= 0) & mask[:, None]
    if not entries.any():
        return _empty(output)
    return F.binary_cross_entropy_with_logits(output[entries].float(),
                                              target[entries].float())


@LOSSES.register("landmark_l1")
def landmark_l1(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 over ``(N, K*2)`` or ``(N, K, 2)`` coordinates; NaN targets are masked."""
    out = output.reshape(len(output), -1).float()
    tgt = target.reshape(len(target), -1).float()
    entries = ~torch.isnan(tgt) & mask[:, None]
    if not entries.any():
        return _empty(output)
    return F.l1_loss(out[entries], tgt[entries])
