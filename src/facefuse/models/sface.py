"""SFace (OpenCV Zoo's face recogniser) as a trainable PyTorch trunk.

The network reproduces the published ONNX graph layer for layer (see
:mod:`facefuse.models.sface_format`): a 3x3 conv, then 13 depthwise-3x3 / pointwise-1x1
pairs (each conv followed by an unfolded BatchNorm with eps 1e-3 and a per-channel PReLU;
no residual additions), stages at 112, 56, 28, 14 and 7 pixels; then BatchNorm on the 7x7x1024
map, Dropout, a 50,176 -> 128 linear layer and a last BatchNorm. The 128-d output is the
(unnormalised) face feature, compared by cosine.

Unlike the graph, the module holds no pixel normalisation: feed RGB 112x112 images as
``(pixels/255 - mean) / std`` with :data:`SFACE_NORMALISATION`, which equals the graph's
``(pixels - 127.5) / 128``. Any batch size works (the published file has a fixed batch of 1).

``build_trunk("sface")`` gives random weights; ``build_trunk("sface", weights=path)`` or
:meth:`SFaceNet.from_weights` loads the ONNX file's (nothing is ever downloaded).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import IO

import torch
from torch import nn

from facefuse.models.sface_format import (
    SFACE_FEATURE_DIM,
    SFACE_IMAGE_SIZE,
    SFACE_UNITS,
    ConvUnitSpec,
    SFaceWeights,
    read_sface,
)
from facefuse.models.trunks import TRUNKS

logger = logging.getLogger(__name__)

__all__ = ["SFACE_NORMALISATION", "SFaceNet", "export_sface", "normalise_pixels"]

SFACE_NORMALISATION: dict[str, list[float]] = {"mean": [127.5 / 255.0] * 3,
                                               "std": [128.0 / 255.0] * 3}
"""Per-channel mean and std (0..1 units) that turn RGB pixels into SFaceNet's input."""


def normalise_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """RGB pixels in 0..255, (N, 3, H, W) -> SFaceNet's input, ``(pixels - 127.5) / 128``."""
    mean = torch.tensor(SFACE_NORMALISATION["mean"], dtype=pixels.dtype, device=pixels.device)
    std = torch.tensor(SFACE_NORMALISATION["std"], dtype=pixels.dtype, device=pixels.device)
    return (pixels / 255.0 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


class ConvUnit(nn.Module):
    """Conv (no bias) -> BatchNorm -> PReLU (one slope per channel)."""

    def __init__(self, spec: ConvUnitSpec) -> None:
        super().__init__()
        self.conv = nn.Conv2d(spec.in_channels, spec.out_channels, spec.kernel, spec.stride,
                              spec.padding, groups=spec.groups, bias=False)
        self.bn = nn.BatchNorm2d(spec.out_channels, eps=spec.eps)
        self.act = nn.PReLU(spec.out_channels, init=0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


@TRUNKS.register("sface")
class SFaceNet(nn.Module):
    """SFace's MobileFaceNet-style trunk: (N, 3, 112, 112) normalised RGB -> (N, 128).

    Args:
        weights: an SFace ONNX file (int8 block-quantised or float) or weights read by
            :func:`~facefuse.models.sface_format.read_sface`; None for random init.
        drop_rate: dropout before the linear layer, active in training only (None: the
            graph's 0.4).
        image_size: the input side, 112 for the published weights (the linear layer then
            reads a 7x7 map); other multiples of 16 give a randomly initialised variant.
    """

    feature_dim: int = SFACE_FEATURE_DIM
    image_size: int = SFACE_IMAGE_SIZE

    def __init__(self, weights: str | Path | SFaceWeights | None = None,
                 drop_rate: float | None = None, image_size: int = SFACE_IMAGE_SIZE,
                 units: tuple[ConvUnitSpec, ...] = SFACE_UNITS, bn1_eps: float = 2e-5,
                 fc_bn_eps: float = 2e-5) -> None:
        super().__init__()
        if image_size % 16 or image_size <= 0:
            raise ValueError(f"SFaceNet's image_size must be a multiple of 16 (the published "
                             f"weights take {SFACE_IMAGE_SIZE}), got {image_size}")
        if weights is not None and image_size != SFACE_IMAGE_SIZE:
            raise ValueError(f"SFace's weights take {SFACE_IMAGE_SIZE}x{SFACE_IMAGE_SIZE} "
                             f"images, not {image_size}")
        if weights is not None and not isinstance(weights, SFaceWeights):
            weights = read_sface(weights)
        if weights is not None:
            units, bn1_eps, fc_bn_eps = weights.units, weights.bn1_eps, weights.fc_bn_eps
            if drop_rate is None:
                drop_rate = weights.dropout
        self.units = tuple(units)
        self.body = nn.Sequential(OrderedDict((u.name, ConvUnit(u)) for u in self.units))
        final = self.units[-1].out_channels
        self.bn1 = nn.BatchNorm2d(final, eps=bn1_eps)
        self.dropout = nn.Dropout(0.4 if drop_rate is None else drop_rate)
        side = image_size // 16
        self.fc = nn.Linear(final * side * side, SFACE_FEATURE_DIM)
        self.fc_bn = nn.BatchNorm1d(SFACE_FEATURE_DIM, eps=fc_bn_eps)
        self.feature_dim = SFACE_FEATURE_DIM
        self.image_size = image_size
        # a stage ends where the next unit downsamples, and at the last unit
        strides = [u.stride for u in self.units]
        self._stage_ends = tuple(i for i in range(len(self.units))
                                 if i == len(self.units) - 1 or strides[i + 1] > 1)
        if weights is not None:
            self.load_weights(weights)

    @classmethod
    def from_weights(cls, weights: SFaceWeights | str | Path,
                     drop_rate: float | None = None) -> SFaceNet:
        """Build the net with the weights of an SFace ONNX file (or already read ones)."""
        return cls(weights=weights, drop_rate=drop_rate)

    def load_weights(self, weights: SFaceWeights) -> None:
        """Copy ``weights`` (float32 arrays keyed by this module's state-dict names) in."""
        def layout(units: tuple[ConvUnitSpec, ...]) -> list[tuple]:
            return [(u.name, u.in_channels, u.out_channels, u.kernel, u.stride, u.padding,
                     u.groups) for u in units]

        if layout(weights.units) != layout(self.units):
            raise ValueError(f"{weights.source}: layer layout differs from this SFaceNet")
        state = {k: torch.from_numpy(v.copy()) for k, v in weights.tensors.items()}
        result = self.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        if missing or result.unexpected_keys:
            raise ValueError(f"{weights.source}: weights do not fit SFaceNet (missing "
                             f"{missing[:5]}, unexpected {result.unexpected_keys[:5]})")
        logger.info("loaded SFace weights from %s", weights.source)

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, self.image_size, self.image_size):
            raise ValueError(f"SFaceNet takes (N, 3, {self.image_size}, {self.image_size}) "
                             f"images, got {tuple(x.shape)}")
        return self.bn1(self.body(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The 128-d face feature (unnormalised, as the ONNX graph outputs it)."""
        return self.fc_bn(self.fc(self.dropout(torch.flatten(self._trunk(x), 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def forward_blocks(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The 128-d feature and, from the same pass, pooled intermediate features that
        other tasks' heads read: ``m14``, the 512x14x14 map average-pooled; ``m7``, the
        final 1024x7x7 map (after ``bn1``) average-pooled."""
        maps = self.forward_maps(x)
        last = maps[-1]
        feature = self.fc_bn(self.fc(self.dropout(torch.flatten(last, 1))))
        return feature, {"m14": maps[3].mean(dim=(2, 3)), "m7": last.mean(dim=(2, 3))}

    def forward_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Intermediate maps for probes: the output of each resolution stage
        (64x112x112, 128x56x56, 256x28x28, 512x14x14) and the final 1024x7x7 map (after
        ``bn1``, the map the linear layer reads)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"SFaceNet takes (N, 3, H, W) images, got {tuple(x.shape)}")
        maps: list[torch.Tensor] = []
        last = self._stage_ends[-1]
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self._stage_ends and i != last:
                maps.append(x)
        maps.append(self.bn1(x))
        return maps



def export_sface(net: SFaceNet, target: str | Path | IO[bytes], opset: int = 17) -> None:
    """Write ``net`` (in eval mode) as an ONNX graph: ``images`` (N, 3, 112, 112), normalised
    as :data:`SFACE_NORMALISATION`, -> ``features`` (N, 128), any batch size."""
    from facefuse.models.onnx_export import export_features

    export_features(net, net.image_size, target, opset)
