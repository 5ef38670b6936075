"""Losses by name, each masked: rows without the task's label contribute nothing.

Every loss takes ``(output, target, mask)`` and returns a scalar: the mean over labelled
rows, or an exact zero (still attached to the graph) when a batch has none.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from facefuse.models.masked import masked_mean
from facefuse.registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: Registry[LossFn] = Registry("loss")


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


@LOSSES.register("distribution_l1")
def distribution_l1(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                    sigma_bins: float = 2.0) -> torch.Tensor:
    """DLDL-v2's loss for a :class:`facefuse.models.heads.DistributionHead`'s ``(N, 1 + K)``
    output and targets scaled to 0..1: the L1 error of the expectation (column 0) plus the
    cross-entropy between the bins' softmax and a Gaussian label distribution around the
    target (standard deviation ``sigma_bins`` bins), divided by ``K - 1`` so that the sum
    keeps the scale of the plain ``l1`` loss (task weights mean the same for either head).
    """
    if output.ndim != 2 or output.shape[1] < 3:
        raise ValueError(f"distribution_l1 needs (N, 1 + bins) outputs with at least 2 bins, "
                         f"got {tuple(output.shape)}")
    bins = output.shape[1] - 1
    out = output.float()
    safe = torch.where(mask, target.float().reshape(len(target)), 0.0)
    centres = torch.linspace(0.0, 1.0, bins, device=out.device)
    sigma = sigma_bins / (bins - 1)
    label = torch.exp(-0.5 * ((centres[None] - safe[:, None]) / sigma) ** 2)
    label = label / label.sum(dim=1, keepdim=True)
    cross_entropy = -(label * F.log_softmax(out[:, 1:], dim=1)).sum(dim=1)
    return masked_mean((out[:, 0] - safe).abs() + cross_entropy / (bins - 1), mask)
