"""Heads: from a feature vector to one task's outputs, built by kind from a registry.

* ``mlp``: hidden fully connected ReLU layers, then an output layer.
* ``branched``: DMM-CNN's attribute head. Outputs are split into named groups (e.g.
  objective and subjective attributes); each group has its own branch of hidden layers
  (subjective attributes get a deeper one) and its own output layer; the group outputs are
  put back in the task's label order.
* ``distribution``: a regression head that predicts a distribution over value bins (deep
  label distribution learning, as in DLDL-v2 for age): softmax over ``outputs`` bins spread
  evenly over the scaled target range 0..1; the prediction is its expectation. The output
  is ``(N, 1 + bins)``: column 0 the expectation (what every regression decoder reads),
  then the bins' logits (what :func:`facefuse.train.losses.distribution_l1` trains).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from facefuse.registry import Registry

HEADS: Registry[Callable[..., nn.Module]] = Registry("head kind")


def _mlp(in_dim: int, out_dim: int, hidden: Sequence[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class MLPHead(nn.Module):
    """``len(hidden)`` fully connected ReLU layers, then an output layer (the paper's
    "2 FC layers plus an output layer" is ``hidden=(h1, h2)``)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (),
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.net = _mlp(in_dim, out_dim, hidden, dropout)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class BranchedHead(nn.Module):
    """One branch per group of outputs.

    Args:
        in_dim: feature width.
        out_dim: total outputs (every index in exactly one group).
        groups: group name -> output indices.
        branch_hidden: group name -> hidden widths of that group's branch.
        dropout: dropout after every hidden layer.
    """

    def __init__(self, in_dim: int, out_dim: int, groups: Mapping[str, Sequence[int]],
                 branch_hidden: Mapping[str, Sequence[int]], dropout: float = 0.0) -> None:
        super().__init__()
        flat = sorted(i for idx in groups.values() for i in idx)
        if flat != list(range(out_dim)):
            raise ValueError(f"branch groups must cover outputs 0..{out_dim - 1} exactly once")
        unknown = set(branch_hidden) - set(groups)
        if unknown:
            raise ValueError(f"branch_hidden names unknown groups {sorted(unknown)}")
        self.group_names = list(groups)
        self.branches = nn.ModuleDict({
            g: _mlp(in_dim, len(idx), branch_hidden.get(g, ()), dropout)
            for g, idx in groups.items()})
        order = torch.tensor([i for g in self.group_names for i in groups[g]])
        self.register_buffer("inverse", torch.argsort(order), persistent=False)
        self.groups = {g: list(idx) for g, idx in groups.items()}
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = torch.cat([self.branches[g](features) for g in self.group_names], dim=1)
        return out[:, self.inverse]


@HEADS.register("mlp")
def mlp_head(in_dim: int, outputs: int, hidden: Sequence[int] = (), dropout: float = 0.0,
             **options: object) -> nn.Module:
    if options:
        raise ValueError(f"mlp head takes no options, got {sorted(options)}")
    return MLPHead(in_dim, outputs, hidden, dropout)


@HEADS.register("branched")
def branched_head(in_dim: int, outputs: int, hidden: Sequence[int] = (), dropout: float = 0.0,
                  groups: Mapping[str, Sequence[int]] | None = None,
                  branch_hidden: Mapping[str, Sequence[int]] | None = None) -> nn.Module:
    if not groups:
        raise ValueError("a branched head needs 'groups'")
    return BranchedHead(in_dim, outputs, groups, branch_hidden or {}, dropout)


class DistributionHead(nn.Module):
    """A regression head over ``bins`` evenly spaced values in 0..1 (the scaled target range,
    e.g. ages 0..116 with 117 bins of one year).

    ``forward`` returns ``(N, 1 + bins)``: the softmax expectation first, then the logits.
    Averaging two outputs (test-time flip) averages the expectations, as for a plain
    regression head.
    """

    def __init__(self, in_dim: int, bins: int, hidden: Sequence[int] = (),
                 dropout: float = 0.0) -> None:
        super().__init__()
        if bins < 2:
            raise ValueError(f"a distribution head needs at least 2 bins, got {bins}")
        self.net = _mlp(in_dim, bins, hidden, dropout)
        self.register_buffer("centres", torch.linspace(0.0, 1.0, bins), persistent=False)
        self.in_dim, self.bins = in_dim, bins

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.net(features)
        expectation = torch.softmax(logits.float(), dim=1) @ self.centres
        return torch.cat([expectation[:, None].to(logits.dtype), logits], dim=1)


@HEADS.register("distribution")
def distribution_head(in_dim: int, outputs: int, hidden: Sequence[int] = (),
                      dropout: float = 0.0, **options: object) -> nn.Module:
    """``outputs`` is the number of bins."""
    if options:
        raise ValueError(f"distribution head takes no options, got {sorted(options)}")
    return DistributionHead(in_dim, outputs, hidden, dropout)
