"""The weights of dlib's ResNet face descriptor as plain numpy values: each convolution,
affine, pooling and residual block, the loss layer's settings, and the whole network
(:class:`DlibResnetWeights`). :mod:`facefuse.models.dlib_format` reads them from dlib's file;
:mod:`facefuse.models.dlib_resnet` builds the PyTorch module from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class ConvSpec:
    """One convolution: ``weight`` (out, in, kh, kw) float32, ``bias`` (out,) or None."""

    weight: np.ndarray
    bias: np.ndarray | None
    stride: tuple[int, int]
    padding: tuple[int, int]

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1])

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.weight.shape[2]), int(self.weight.shape[3])


@dataclass(frozen=True, eq=False)
class AffineSpec:
    """A per-channel affine layer (batch norm folded): ``y = scale[c] * x + shift[c]``."""

    scale: np.ndarray
    shift: np.ndarray


@dataclass(frozen=True)
class PoolSpec:
    """A max or average pool; ``kernel == (0, 0)`` pools the whole map (global)."""

    kind: str  # "max" or "avg"
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]

    @property
    def is_global(self) -> bool:
        return self.kernel == (0, 0)


@dataclass(frozen=True, eq=False)
class ResidualBlock:
    """conv_a -> affine_a -> relu -> conv_b -> affine_b, plus the shortcut, then relu.

    ``shortcut`` is None for the identity or the pool applied to the block input (the
    downsampling blocks). The addition zero-fills the smaller operand, top-left aligned.
    """

    conv_a: ConvSpec
    affine_a: AffineSpec
    conv_b: ConvSpec
    affine_b: AffineSpec
    shortcut: PoolSpec | None

    @property
    def out_channels(self) -> int:
        return max(self.conv_b.out_channels, self.conv_a.in_channels)


@dataclass(frozen=True)
class LossInfo:
    """The loss layer on top: its kind, margin and distance threshold."""

    kind: str
    margin: float
    distance_threshold: float


@dataclass(frozen=True, eq=False)
class DlibResnetWeights:
    """Everything in a dlib ResNet descriptor file, in forward order.

    ``means`` are the input layer's R, G, B means (pixel units; the input layer computes
    ``(pixel - mean) / 256``); ``chip_size`` is (rows, cols). ``fc`` is (outputs, inputs).
    ``layer_kinds`` lists the layers innermost (input side) first, tags and skips included.
    """

    means: tuple[float, float, float]
    chip_size: tuple[int, int]
    stem_conv: ConvSpec
    stem_affine: AffineSpec
    stem_pool: PoolSpec | None
    blocks: tuple[ResidualBlock, ...]
    head_pool: PoolSpec
    fc: np.ndarray
    fc_bias: np.ndarray | None
    loss: LossInfo
    layer_kinds: tuple[str, ...] = ()

    @property
    def convolutions(self) -> tuple[ConvSpec, ...]:
        """Every convolution in forward order."""
        convs = [self.stem_conv]
        for block in self.blocks:
            convs += [block.conv_a, block.conv_b]
        return tuple(convs)

    @property
    def affines(self) -> tuple[AffineSpec, ...]:
        """Every affine layer in forward order."""
        affines = [self.stem_affine]
        for block in self.blocks:
            affines += [block.affine_a, block.affine_b]
        return tuple(affines)

    @property
    def feature_dim(self) -> int:
        return int(self.fc.shape[0])

    def num_parameters(self) -> int:
        """Learnable values: conv filters and biases, affine scales and shifts, fc."""
        total = sum(c.weight.size + (0 if c.bias is None else c.bias.size)
                    for c in self.convolutions)
        total += sum(a.scale.size + a.shift.size for a in self.affines)
        return int(total + self.fc.size + (0 if self.fc_bias is None else self.fc_bias.size))
