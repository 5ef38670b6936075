"""dlib's ResNet face descriptor as a trainable torch trunk (``dlib_resnet``).

The network is rebuilt from :class:`~facefuse.models.dlib_format.DlibResnetWeights` with
dlib's quirks: stride-2 convolutions and pools without padding (sizes shrink by floor), a
residual addition that zero-fills the smaller operand to the larger size in channels, height
and width (top-left aligned), a 2x2/2 average pool on the shortcut of downsampling blocks,
and per-channel affine layers (batch norm folded) in place of batch norm.

Input: (N, 3, H, W) RGB, normalised as ``(pixels / 255 - mean) / std`` with
:func:`dlib_normalisation` (``mean = file means / 255``, ``std = 256 / 255``), which is
dlib's ``(pixel - mean) / 256``. Output: the 128-d descriptor, not normalised, as dlib's
``compute_face_descriptor`` gives it (Euclidean distance, 0.6 threshold).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facefuse.models.dlib_format import read_dlib_resnet
from facefuse.models.dlib_weights import (
    AffineSpec,
    ConvSpec,
    DlibResnetWeights,
    LossInfo,
    PoolSpec,
    ResidualBlock,
)
from facefuse.models.trunks import TRUNKS

logger = logging.getLogger(__name__)

#: dlib's descriptor layout, input side first: (filters, downsample) per residual block.
DLIB_BLOCKS: tuple[tuple[int, bool], ...] = (
    (32, False), (32, False), (32, False),
    (64, True), (64, False), (64, False), (64, False),
    (128, True), (128, False), (128, False),
    (256, True), (256, False), (256, False),
    (256, True),
)


def dlib_normalisation(weights: DlibResnetWeights) -> dict[str, list[float]]:
    """The ``mean``/``std`` (0-1 pixel scale) that turn ``pixels / 255`` into dlib's input."""
    return {"mean": [float(m) / 255.0 for m in weights.means], "std": [256.0 / 255.0] * 3}


def zero_fill_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: pad both operands with zeros (after the end of the channel, row
    and column axes) to the larger size of each, then add."""
    size = tuple(max(p, q) for p, q in zip(a.shape[1:], b.shape[1:], strict=True))
    return _pad_to(a, tuple(a.shape[1:]), size) + _pad_to(b, tuple(b.shape[1:]), size)


def _pad_to(x: torch.Tensor, have: tuple[int, ...], want: tuple[int, ...]) -> torch.Tensor:
    """Zero-pad (C, H, W) ``have`` up to ``want`` at the end of each axis; sizes are Python
    ints, so an exported graph holds constant pads."""
    dc, dh, dw = (w - h for w, h in zip(want, have, strict=True))
    if dc == 0 and dh == 0 and dw == 0:
        return x
    return F.pad(x, (0, dw, 0, dh, 0, dc))


def _out_size(module: nn.Module, size: tuple[int, int]) -> tuple[int, int]:
    """Output rows and columns of a convolution or pool (floor, as dlib and torch)."""
    if isinstance(module, nn.Identity):
        return size
    k, s, p = (_pair(getattr(module, n)) for n in ("kernel_size", "stride", "padding"))
    return ((size[0] + 2 * p[0] - k[0]) // s[0] + 1, (size[1] + 2 * p[1] - k[1]) // s[1] + 1)


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class Affine(nn.Module):
    """Per-channel ``scale * x + shift`` (dlib's ``affine_`` in convolution mode)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)


def _conv(spec: ConvSpec) -> nn.Conv2d:
    return nn.Conv2d(spec.in_channels, spec.out_channels, spec.kernel, stride=spec.stride,
                     padding=spec.padding, bias=spec.bias is not None)


def _pool(spec: PoolSpec) -> nn.Module:
    if spec.padding != (0, 0):
        raise ValueError(f"pools with padding are not supported: {spec}")
    if spec.kind == "max":
        return nn.MaxPool2d(spec.kernel, spec.stride)
    return nn.AvgPool2d(spec.kernel, spec.stride)


class DlibResidualBlock(nn.Module):
    """conv -> affine -> relu -> conv -> affine, zero-fill added to the (pooled) input,
    then relu."""

    def __init__(self, spec: ResidualBlock) -> None:
        super().__init__()
        self.conv_a = _conv(spec.conv_a)
        self.affine_a = Affine(spec.conv_a.out_channels)
        self.conv_b = _conv(spec.conv_b)
        self.affine_b = Affine(spec.conv_b.out_channels)
        self.shortcut = nn.Identity() if spec.shortcut is None else _pool(spec.shortcut)
        self.downsample = spec.shortcut is not None
        self.in_channels = spec.conv_a.in_channels
        self.out_channels = max(self.in_channels, spec.conv_b.out_channels)

    def branch_sizes(self, size: tuple[int, int]) -> list[tuple[int, int]]:
        """Rows and columns after conv_a, conv_b and the shortcut for an input of ``size``."""
        after_a = _out_size(self.conv_a, size)
        return [after_a, _out_size(self.conv_b, after_a), _out_size(self.shortcut, size)]

    def out_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """Output rows and columns for an input of ``size``."""
        _, body, short = self.branch_sizes(size)
        return max(body[0], short[0]), max(body[1], short[1])

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """``size``: the input's rows and columns as Python ints (taken from ``x`` if
        omitted), so that the zero-fill pads are constants when traced."""
        size = size if size is not None else (int(x.shape[2]), int(x.shape[3]))
        y = F.relu(self.affine_a(self.conv_a(x)))
        y = self.affine_b(self.conv_b(y))
        _, body, short = self.branch_sizes(size)
        want = (self.out_channels, max(body[0], short[0]), max(body[1], short[1]))
        return F.relu(_pad_to(self.shortcut(x), (self.in_channels, *short), want)
                      + _pad_to(y, (self.conv_b.out_channels, *body), want))


class DlibResNet(nn.Module):
    """dlib's ResNet descriptor network (trunk contract: ``feature_dim``,
    ``forward_features``). Built from ``weights``' layout; parameters are randomly
    initialised unless loaded with :meth:`from_weights` or :meth:`load_weights`.

    Any input size works eagerly; a traced or ONNX-exported graph is fixed to
    ``image_size`` x ``image_size`` (the zero-fill pads become constants), batch free."""

    def __init__(self, weights: DlibResnetWeights | None = None, image_size: int = 150) -> None:
        super().__init__()
        spec = weights if weights is not None else dlib_resnet_skeleton()
        self.image_size = image_size
        self.stem_conv = _conv(spec.stem_conv)
        self.stem_affine = Affine(spec.stem_conv.out_channels)
        self.stem_pool = nn.Identity() if spec.stem_pool is None else _pool(spec.stem_pool)
        self.blocks = nn.ModuleList(DlibResidualBlock(b) for b in spec.blocks)
        self.fc = nn.Linear(spec.fc.shape[1], spec.fc.shape[0], bias=spec.fc_bias is not None)
        self.feature_dim = int(spec.fc.shape[0])
        self.stage_ends = _stage_ends(spec)
        self.normalisation = dlib_normalisation(spec)
        self.means = tuple(float(m) for m in spec.means)
        self.loss = spec.loss
        if weights is None:
            self.reset_parameters()
        self.start_block = 0  # >0: forward_features takes the map entering this block
        self.output = "descriptor"  # "pool": the 256-d pooled vector; "map": the last map
        self.feature_norm: nn.Module = nn.Identity()  # or BatchNorm1d: standardised features

    def freeze_prefix(self) -> None:
        """Stop training the stem and the blocks before ``start_block`` (what
        :meth:`prefix` computes, once, for a run that trains only the tail)."""
        for _, p in self.prefix_parameters():
            p.requires_grad_(False)

    def prefix_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """The named parameters :meth:`prefix` uses (the stem and the blocks before
        ``start_block``)."""
        yield from self.stem_conv.named_parameters(prefix="stem_conv")
        yield from self.stem_affine.named_parameters(prefix="stem_affine")
        for i in range(self.start_block):
            yield from self.blocks[i].named_parameters(prefix=f"blocks.{i}")

    def prefix(self, images: torch.Tensor) -> torch.Tensor:
        """What :meth:`forward_features` takes: the images themselves, or with
        ``start_block`` the map entering that block."""
        return self.map_before(images, self.start_block) if self.start_block else images

    def reset_parameters(self) -> None:
        """Random init for training from scratch (He normal convolutions, unit affines)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, Affine):
                nn.init.ones_(m.scale)
                nn.init.zeros_(m.shift)

    @classmethod
    def from_weights(cls, weights: DlibResnetWeights, image_size: int | None = None
                     ) -> DlibResNet:
        """The network of ``weights`` with every parameter loaded."""
        model = cls(weights, image_size=image_size or weights.chip_size[0])
        model.load_weights(weights)
        return model

    @classmethod
    def from_dat(cls, path: str | Path, image_size: int | None = None) -> DlibResNet:
        """Read a dlib ``.dat`` file and load it."""
        return cls.from_weights(read_dlib_resnet(path), image_size)

    def load_weights(self, weights: DlibResnetWeights) -> None:
        """Copy every tensor of ``weights`` in (shapes must match this network)."""
        pairs: list[tuple[nn.Conv2d, ConvSpec, Affine, AffineSpec]] = [
            (self.stem_conv, weights.stem_conv, self.stem_affine, weights.stem_affine)]
        if len(weights.blocks) != len(self.blocks):
            raise ValueError(f"{len(weights.blocks)} blocks in the weights, "
                             f"{len(self.blocks)} in the network")
        for mod, spec in zip(self.blocks, weights.blocks, strict=True):
            pairs += [(mod.conv_a, spec.conv_a, mod.affine_a, spec.affine_a),
                      (mod.conv_b, spec.conv_b, mod.affine_b, spec.affine_b)]
        with torch.no_grad():
            for conv, cspec, affine, aspec in pairs:
                _copy(conv.weight, cspec.weight)
                if conv.bias is not None:
                    _copy(conv.bias, cspec.bias)
                _copy(affine.scale, aspec.scale)
                _copy(affine.shift, aspec.shift)
            _copy(self.fc.weight, weights.fc)
            if self.fc.bias is not None:
                _copy(self.fc.bias, weights.fc_bias)
        self.normalisation = dlib_normalisation(weights)
        self.means = tuple(float(m) for m in weights.means)
        self.loss = weights.loss

    def block_sizes(self, size: tuple[int, int]) -> list[tuple[int, int]]:
        """Rows and columns at the stem's output and after each block, for an input of
        ``size``; ``ValueError`` when the input is too small for the network."""
        sizes = [_out_size(self.stem_pool, _out_size(self.stem_conv, size))]
        smallest = min(sizes[0])
        for block in self.blocks:
            smallest = min(smallest, *(min(s) for s in block.branch_sizes(sizes[-1])))
            sizes.append(block.out_size(sizes[-1]))
        if smallest < 1:
            raise ValueError(f"a {size[0]}x{size[1]} input is too small for dlib's network "
                             f"(sizes {sizes}); it was built for {self.image_size}")
        return sizes

    def _body(self, x: torch.Tensor, until: int | None = None
              ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The blocks' output and each stage's last map; with ``until``, the map entering
        block ``until`` instead (the blocks from there on are not run)."""
        sizes = self.block_sizes(self._input_size(x))
        x = self.stem_pool(F.relu(self.stem_affine(self.stem_conv(x))))
        maps: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            if i == until:
                break
            x = block(x, sizes[i])
            if i in self.stage_ends:
                maps.append(x)
        return x, maps

    def _input_size(self, x: torch.Tensor) -> tuple[int, int]:
        if torch.jit.is_tracing():  # export: a static input of image_size
            return (self.image_size, self.image_size)
        return (int(x.shape[2]), int(x.shape[3]))

    def map_before(self, x: torch.Tensor, block: int) -> torch.Tensor:
        """The feature map entering block ``block`` (0 to the number of blocks): what a
        fine-tuned copy of the blocks from there on (a tail) takes."""
        if not 0 <= block <= len(self.blocks):
            raise ValueError(f"block must be within [0, {len(self.blocks)}], got {block}")
        return self._body(x, until=block)[0]

    def forward_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps after each stage (dlib: 32, 64, 128, 256 filters, the last block),
        then the pooled vector that the fc layer takes (256-d)."""
        x, maps = self._body(x)
        return [*maps, x.mean(dim=(2, 3))]

    def forward_blocks(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The descriptor and, from the same pass, intermediate features that other tasks'
        heads read: ``pool``, the 256-d vector the fc layer takes; ``s3``, the third stage's
        128x8x8 map average-pooled; ``tail_in``, the 256x4x4 map entering the last block,
        flattened (the input of a fine-tuned copy of that block: ``facefuse.train.
        identity_tail``)."""
        last = len(self.blocks) - 1
        sizes = self.block_sizes(self._input_size(x))
        tail_in, maps = self._body(x, until=last)
        x = self.blocks[last](tail_in, sizes[last])
        pooled = x.mean(dim=(2, 3))
        return self.fc(pooled), {"pool": pooled, "s3": maps[2].mean(dim=(2, 3)),
                                 "tail_in": tail_in.flatten(1)}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The descriptor, exactly dlib's (not normalised), or what ``output`` names (then
        through ``feature_norm``). With ``start_block``, ``x`` is the map entering that
        block (:meth:`prefix` of the images), and only the blocks from there on run."""
        if self.start_block:
            sizes = self.block_sizes((self.image_size, self.image_size))
            for i in range(self.start_block, len(self.blocks)):
                x = self.blocks[i](x, sizes[i])
        else:
            x, _ = self._body(x)
        if self.output == "map":
            return self.feature_norm(x.flatten(1))
        pooled = x.mean(dim=(2, 3))
        return self.feature_norm(pooled if self.output == "pool" else self.fc(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


def _copy(param: torch.Tensor, value: np.ndarray | None) -> None:
    if value is None or tuple(param.shape) != value.shape:
        got = None if value is None else value.shape
        raise ValueError(f"shape mismatch: parameter {tuple(param.shape)}, weights {got}")
    param.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))


def _stage_ends(weights: DlibResnetWeights) -> tuple[int, ...]:
    """Index of the last block of each stage; a stage starts at a downsampling block or a
    change of filter count."""
    ends = []
    for i, block in enumerate(weights.blocks):
        if i + 1 == len(weights.blocks):
            ends.append(i)
            break
        nxt = weights.blocks[i + 1]
        if nxt.shortcut is not None or nxt.conv_b.out_channels != block.conv_b.out_channels:
            ends.append(i)
    return tuple(ends)


def dlib_resnet_skeleton(blocks: tuple[tuple[int, bool], ...] = DLIB_BLOCKS,
                         stem_filters: int = 32, feature_dim: int = 128,
                         chip_size: int = 150) -> DlibResnetWeights:
    """A zero-valued :class:`DlibResnetWeights` with dlib's layout (or ``blocks``)."""

    def conv(cin: int, cout: int, k: int, stride: int) -> ConvSpec:
        pad = k // 2 if stride == 1 else 0
        return ConvSpec(np.zeros((cout, cin, k, k), np.float32), np.zeros(cout, np.float32),
                        (stride, stride), (pad, pad))

    def affine(c: int) -> AffineSpec:
        return AffineSpec(np.ones(c, np.float32), np.zeros(c, np.float32))

    specs = []
    channels = stem_filters
    for filters, down in blocks:
        stride = 2 if down else 1
        pool = PoolSpec("avg", (2, 2), (2, 2), (0, 0)) if down else None
        specs.append(ResidualBlock(conv(channels, filters, 3, stride), affine(filters),
                                   conv(filters, filters, 3, 1), affine(filters), pool))
        channels = max(channels, filters)
    return DlibResnetWeights(
        means=(122.782, 117.001, 104.298), chip_size=(chip_size, chip_size),
        stem_conv=conv(3, stem_filters, 7, 2), stem_affine=affine(stem_filters),
        stem_pool=PoolSpec("max", (3, 3), (2, 2), (0, 0)), blocks=tuple(specs),
        head_pool=PoolSpec("avg", (0, 0), (1, 1), (0, 0)),
        fc=np.zeros((feature_dim, channels), np.float32), fc_bias=None,
        loss=LossInfo("loss_metric_2", 0.04, 0.6))


@TRUNKS.register("dlib_resnet")
def build_dlib_resnet(image_size: int = 150, dat: str | Path | None = None,
                      weights: str | None = None, start_block: int = 0,
                      output: str = "descriptor", standardise: bool = False) -> DlibResNet:
    """The ``dlib_resnet`` trunk: dlib's layout with random init, or loaded from ``dat`` (a
    ``dlib_face_recognition_resnet_model_v1.dat`` path; nothing is downloaded), or with
    ``weights: shipped`` from the dlib graph facefuse ships
    (:mod:`facefuse.models.dlib_shipped`). With ``start_block`` (1 to 13) the trunk takes
    the map entering that block (:meth:`DlibResNet.prefix`) and the blocks before it are
    frozen. ``output``: ``descriptor`` (the 128-d identity descriptor) or ``pool`` (the
    256-d vector the descriptor's fc layer takes, which keeps more of what identity
    ignores: hair, glasses, expression) or ``map`` (the last block's map before pooling,
    flattened: 256x2x2 at 150 px, which keeps where things are). ``standardise``: a batch
    norm on that output, so that heads get features of zero mean and unit variance (dlib's
    are neither)."""
    if dat is not None and weights is not None:
        raise ValueError("give dlib_resnet either dat or weights, not both")
    if weights not in (None, "shipped"):
        raise ValueError(f"dlib_resnet weights must be 'shipped' (or a dat path), "
                         f"got {weights!r}")
    if output not in ("descriptor", "pool", "map"):
        raise ValueError(f"dlib_resnet output must be 'descriptor', 'pool' or 'map', "
                         f"got {output!r}")
    if dat is not None:
        model = DlibResNet.from_dat(dat, image_size=image_size)
    else:
        model = DlibResNet(None, image_size=image_size)
    if weights == "shipped":
        from facefuse.models.dlib_shipped import load_shipped_graph

        load_shipped_graph(model)
    if output != "descriptor":
        rows, cols = model.block_sizes((image_size, image_size))[-1]
        model.output = output
        model.feature_dim = int(model.fc.in_features) * (rows * cols if output == "map" else 1)
        model.fc.requires_grad_(False)  # not on the path
    if standardise:
        model.feature_norm = nn.BatchNorm1d(model.feature_dim)
    if start_block:
        model.start_block = _checked_start(model, start_block)
        model.freeze_prefix()
    return model


def _checked_start(model: DlibResNet, start_block: int) -> int:
    if not 0 < start_block < len(model.blocks):
        raise ValueError(f"start_block must be within [1, {len(model.blocks) - 1}], "
                         f"got {start_block}")
    return start_block
