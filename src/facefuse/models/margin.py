"""Margin-based identity heads (ArcFace, CosFace) and their losses.

The head is a cosine classifier: ``logits = scale * cos(theta)`` between L2-normalised
features and L2-normalised class centres. At inference the logits rank classes and the
normalised feature is the identity embedding. In training, the loss adds the margin to the
target class before the softmax: ArcFace ``cos(theta + m)``, CosFace ``cos(theta) - m``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from facefuse.models.heads import HEADS
from facefuse.models.masked import masked_mean

MARGIN_TYPES = ("arcface", "cosface")


class CosineClassifier(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, embedding: int = 0, scale: float = 30.0
                 ) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(in_dim, embedding), nn.BatchNorm1d(embedding)) \
            if embedding else nn.Identity()
        width = embedding or in_dim
        self.centres = nn.Parameter(torch.randn(out_dim, width) * 0.01)
        self.scale = scale
        self.in_dim, self.out_dim = in_dim, out_dim

    def embedding(self, features: torch.Tensor) -> torch.Tensor:
        """The L2-normalised identity embedding."""
        return F.normalize(self.embed(features), dim=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * self.embedding(features) @ F.normalize(self.centres, dim=1).T


@HEADS.register("cosine")
def cosine_head(in_dim: int, outputs: int, hidden=(), dropout: float = 0.0,
                embedding: int = 0, scale: float = 30.0) -> nn.Module:
    if hidden:
        raise ValueError("a cosine head takes 'embedding', not hidden layers")
    return CosineClassifier(in_dim, outputs, embedding, scale)


def margin_loss(kind: str, scale: float = 30.0, margin: float | None = None):
    """A masked loss for cosine-head logits with an additive angular (ArcFace) or cosine
    (CosFace) margin on the target class."""
    if kind not in MARGIN_TYPES:
        raise ValueError(f"margin type must be one of {MARGIN_TYPES}, got {kind!r}")
    m = margin if margin is not None else (0.5 if kind == "arcface" else 0.35)

    def loss(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # every row is computed and the unlabelled ones weighted 0: no host sync
        cos = (output.float() / scale).clamp(-1 + 1e-7, 1 - 1e-7)
        y = torch.where(mask, target.long(), 0)
        one_hot = F.one_hot(y, cos.shape[1]).bool()
        if kind == "arcface":
            theta = torch.acos(cos)
            target_logit = torch.cos(theta + m)
            # keep the function monotonic past theta + m > pi (the usual easy-margin fix)
            target_logit = torch.where(theta + m < torch.pi, target_logit,
                                       cos - m * math.sin(m))
        else:
            target_logit = cos - m
        logits = torch.where(one_hot, target_logit, cos) * scale
        return masked_mean(F.cross_entropy(logits, y, reduction="none"), mask)

    return loss
