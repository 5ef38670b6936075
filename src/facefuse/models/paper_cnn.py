"""The per-task CNN of Li and Zhu: three conv layers (5x5, 5x5, 3x3), a high-level feature
layer (200 units for identity, 50 for the other tasks in the paper) and, outside the trunk,
an output layer. Weights start Gaussian (He-scaled normal by default, or a fixed std)."""

from __future__ import annotations

import math

import torch
from torch import nn

from facefuse.models.trunks import TRUNKS


class LiZhuCNN(nn.Module):
    """conv5x5-pool, conv5x5-pool, conv3x3-pool, FC feature layer.

    Args:
        image_size: input side in pixels (square, 3 channels).
        channels: output channels of the three conv layers.
        feature_dim: units of the high-level feature layer.
        init_std: std of the Gaussian init; ``None`` scales it per layer as sqrt(2/fan_in).
        dropout: dropout before the feature layer.
    """

    def __init__(self, image_size: int = 64, channels: tuple[int, int, int] = (32, 64, 128),
                 feature_dim: int = 50, init_std: float | None = None,
                 dropout: float = 0.25) -> None:
        super().__init__()
        if image_size < 16:
            raise ValueError(f"LiZhuCNN needs images of at least 16 px, got {image_size}")
        c1, c2, c3 = channels
        self.conv = nn.Sequential(
            nn.Conv2d(3, c1, 5, padding=2), nn.BatchNorm2d(c1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2), nn.BatchNorm2d(c2), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.BatchNorm2d(c3), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        side = image_size // 8
        self.feature = nn.Sequential(nn.Flatten(), nn.Dropout(dropout),
                                     nn.Linear(c3 * side * side, feature_dim),
                                     nn.ReLU(inplace=True))
        self.feature_dim = feature_dim
        self.image_size = image_size
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                nn.init.normal_(m.weight, 0.0, init_std or math.sqrt(2.0 / fan_in))
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and (x.shape[-1] != self.image_size
                                           or x.shape[-2] != self.image_size):
            raise ValueError(f"LiZhuCNN built for {self.image_size}px input, got "
                             f"{tuple(x.shape[-2:])}")
        return self.feature(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


@TRUNKS.register("lizhu_cnn")
def lizhu_cnn(**options: object) -> LiZhuCNN:
    return LiZhuCNN(**options)  # type: ignore[arg-type]


@TRUNKS.register("tiny_cnn")
def tiny_cnn(image_size: int = 32, feature_dim: int = 16) -> LiZhuCNN:
    """A very small LiZhuCNN for tests."""
    return LiZhuCNN(image_size=image_size, channels=(4, 8, 8), feature_dim=feature_dim)
