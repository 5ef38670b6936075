"""Heads: from a feature vector to one task's outputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLPHead(nn.Module):
    """``len(hidden)`` fully connected ReLU layers, then an output layer (the paper's
    "2 FC layers plus an output layer" is ``hidden=(h1, h2)``)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (),
                 dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)
