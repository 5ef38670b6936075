"""Ways to merge features from several sources into one vector, by name.

Each method is an ``nn.Module`` built from the list of source widths; ``forward(list of
(N, d_i) tensors) -> (N, out_dim)``. The fusion head puts the paper's "2 FC layers plus an
output layer" on top. ``concat`` is Li and Zhu's method; the others go past the paper (its
stated future work):

* ``normalized_concat``: each source standardised (batch norm without affine) and scaled
  by 1/sqrt(d_i), so every source brings the same energy whatever its width;
* ``gated``: per-sample sigmoid gates, one per source, computed from all sources;
* ``attention``: each source projected to a common width; softmax attention over sources
  per sample; the weighted sum;
* ``bilinear``: low-rank bilinear pooling: the concatenation plus, for every pair of
  sources, the Hadamard product of rank-r tanh projections;
* ``source_dropout``: concatenation where, in training, each whole source is dropped with
  probability p (and the rest rescaled), so the head cannot lean on one source.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations

import torch
from torch import nn

from facefuse.models.heads import MLPHead
from facefuse.registry import Registry

FUSIONS: Registry[Callable[[Sequence[int]], nn.Module]] = Registry("fusion method")


class Concat(nn.Module):
    def __init__(self, dims: Sequence[int]) -> None:
        super().__init__()
        self.out_dim = int(sum(dims))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, dim=1)


class NormalizedConcat(nn.Module):
    def __init__(self, dims: Sequence[int]) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.BatchNorm1d(d, affine=False) for d in dims)
        self.scales = [float(d) ** -0.5 for d in dims]
        self.out_dim = int(sum(dims))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        parts = zip(self.norms, xs, self.scales, strict=True)
        return torch.cat([n(x) * s for n, x, s in parts], dim=1)


class Gated(nn.Module):
    def __init__(self, dims: Sequence[int]) -> None:
        super().__init__()
        self.gate = nn.Linear(int(sum(dims)), len(dims))
        self.dims = list(dims)
        self.out_dim = int(sum(dims))

    def gates(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.sigmoid(self.gate(torch.cat(xs, dim=1)))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        g = self.gates(xs)
        return torch.cat([x * g[:, i:i + 1] for i, x in enumerate(xs)], dim=1)


class Attention(nn.Module):
    def __init__(self, dims: Sequence[int], width: int = 64) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(d, width) for d in dims)
        self.score = nn.Linear(width, 1)
        self.out_dim = width

    def projected(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """Sources projected to the common width: (N, sources, width)."""
        return torch.stack([torch.tanh(p(x)) for p, x in zip(self.proj, xs, strict=True)], dim=1)

    def weights(self, xs: list[torch.Tensor], h: torch.Tensor | None = None) -> torch.Tensor:
        """Attention over sources per sample: (N, sources), rows sum to 1."""
        h = self.projected(xs) if h is None else h
        return torch.softmax(self.score(h).squeeze(-1), dim=1)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        h = self.projected(xs)
        return (h * self.weights(xs, h).unsqueeze(-1)).sum(dim=1)


class LowRankBilinear(nn.Module):
    def __init__(self, dims: Sequence[int], rank: int = 32) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(d, rank) for d in dims)
        self.pairs = list(combinations(range(len(dims)), 2))
        self.out_dim = int(sum(dims)) + rank * len(self.pairs)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        p = [torch.tanh(f(x)) for f, x in zip(self.proj, xs, strict=True)]
        return torch.cat([*xs, *(p[i] * p[j] for i, j in self.pairs)], dim=1)


class SourceDropout(nn.Module):
    def __init__(self, dims: Sequence[int], p: float = 0.3) -> None:
        super().__init__()
        self.p = p
        self.out_dim = int(sum(dims))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        if not self.training or self.p == 0 or len(xs) == 1:
            return torch.cat(xs, dim=1)
        n = xs[0].shape[0]
        keep = (torch.rand(n, len(xs), device=xs[0].device) >= self.p).float()
        keep[keep.sum(1) == 0, 0] = 1.0  # never drop every source
        scale = len(xs) / keep.sum(1, keepdim=True)
        return torch.cat([x * keep[:, i:i + 1] * scale for i, x in enumerate(xs)], dim=1)


for _name, _cls in (("concat", Concat), ("normalized_concat", NormalizedConcat),
                    ("gated", Gated), ("attention", Attention), ("bilinear", LowRankBilinear),
                    ("source_dropout", SourceDropout)):
    FUSIONS.add(_name, _cls)


class FusionHead(nn.Module):
    """A fusion method followed by an MLP head."""

    def __init__(self, method: str, dims: Sequence[int], out_dim: int,
                 hidden: Sequence[int] = (128, 64), dropout: float = 0.2) -> None:
        super().__init__()
        if not dims:
            raise ValueError("fusion needs at least one source")
        self.fusion = FUSIONS.get(method)(list(dims))
        self.dims = list(dims)
        self.head = MLPHead(self.fusion.out_dim, out_dim, hidden, dropout)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        if [x.shape[1] for x in xs] != self.dims:
            raise ValueError(f"fusion built for source widths {self.dims}, got "
                             f"{[x.shape[1] for x in xs]}")
        return self.head(self.fusion(xs))
