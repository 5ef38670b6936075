"""Lightweight trunks from timm (random init: no weights are downloaded).

``forward_features`` is the pooled pre-logit vector (timm built with ``num_classes=0``).
"""

from __future__ import annotations

import torch
from torch import nn

from facefuse.models.trunks import TRUNKS

TIMM_TRUNKS = ("mobilenetv3_large_100", "mobilenetv3_small_100", "efficientnet_b0",
               "rexnet_100", "resnet18", "resnet50")


class TimmTrunk(nn.Module):
    def __init__(self, name: str, image_size: int = 112, drop_rate: float = 0.0) -> None:
        super().__init__()
        import timm

        self.model = timm.create_model(name, pretrained=False, num_classes=0,
                                       drop_rate=drop_rate)
        self.feature_dim = int(getattr(self.model, "head_hidden_size", None)
                               or self.model.num_features)
        self.image_size = image_size
        self.name = name

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


def _register(name: str) -> None:
    TRUNKS.add(name, lambda **options: TimmTrunk(name, **options))  # type: ignore[arg-type]


for _name in TIMM_TRUNKS:
    _register(_name)
