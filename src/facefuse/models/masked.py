"""Masked reductions shared by model heads' own losses and the training losses (a batch may
mix datasets that each label only some tasks)."""

from __future__ import annotations

import torch


def masked_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the entries where ``weights`` is 1; an exact zero, still
    attached to the graph, where there are none. No boolean indexing and no ``.any()``: the
    result never waits for the GPU (a host sync per task and step would)."""
    weights = weights.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1.0)
