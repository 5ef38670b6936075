"""A compact VGG-style CNN that trains on a CPU: four stages of two 3x3 conv-BN-ReLU layers
and a max-pool, global average pooling, a linear feature layer."""

from __future__ import annotations

import torch
from torch import nn

from facefuse.models.trunks import TRUNKS


class CompactCNN(nn.Module):
    def __init__(self, image_size: int = 64, widths: tuple[int, ...] = (32, 64, 128, 256),
                 feature_dim: int = 256, dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for w in widths:
            layers += [nn.Conv2d(c_in, w, 3, padding=1, bias=False), nn.BatchNorm2d(w),
                       nn.ReLU(inplace=True), nn.Conv2d(w, w, 3, padding=1, bias=False),
                       nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = w
        self.body = nn.Sequential(*layers)
        self.feature = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                     nn.Linear(c_in, feature_dim), nn.ReLU(inplace=True))
        self.feature_dim = feature_dim
        self.image_size = image_size
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


@TRUNKS.register("compact_cnn")
def compact_cnn(**options: object) -> CompactCNN:
    return CompactCNN(**options)  # type: ignore[arg-type]
