"""Reader of dlib's DNN serialisation for its ResNet face descriptor (numpy only).

Written from the file format (see ``docs`` of the identity networks), not from dlib's code.
The format, little-endian:

- a packed integer is one control byte (low 4 bits: number of magnitude bytes that follow,
  little-endian; top bit: sign) and those bytes;
- a float is two packed integers, mantissa and exponent: ``mantissa * 2**exponent``;
- a string is a packed length and its bytes; a bool is the byte ``'0'`` or ``'1'``;
- a tensor is a packed version (2), four packed dimensions and the float32 values;
- the file is a version (1), the loss layer (name, margin, distance threshold) and the network
  from the outermost layer inward. Every wrapper starts with its version, so the file holds
  all the versions first (outermost first), then the input layer, then each layer's details
  from the innermost outward. A layer (version 2; 3 for the one right above the input,
  which also ends with a packed sample-expansion factor) writes its kind as a string and that
  kind's fields, then three bools and three tensors of cached state. Tag and skip layers
  (version 1) write nothing else: their ids are not stored.

Tags and skips are told apart by position, as in dlib's ResNet templates: a lone version-1
wrapper is a tag on a residual block's input; two in a row are a tag on the block's output
and a skip back to the block's input (the downsampling block, whose shortcut pools the
input). ``add_prev_`` adds the most recent tag's output.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facefuse.models.dlib_weights import (  # noqa: F401 (the reader's API)
    AffineSpec,
    ConvSpec,
    DlibResnetWeights,
    LossInfo,
    PoolSpec,
    ResidualBlock,
)

logger = logging.getLogger(__name__)

FILE_VERSION = 1
LOSS_KINDS = ("loss_metric_2",)
INPUT_KINDS = ("input_rgb_image_sized",)
LAYER_KINDS = ("con_4", "con_5", "affine_", "relu_", "max_pool_2", "avg_pool_2", "add_prev_",
               "fc_2")
TENSOR_VERSION = 2
ALIAS_VERSION = 1
MARKER_VERSION = 1  # tag and skip layers
LAYER_VERSION = 2  # a layer above another layer
INPUT_LAYER_VERSION = 3  # the layer right above the input layer


@dataclass(frozen=True)
class _Marker:
    """A version-1 wrapper (tag or skip)."""


@dataclass(frozen=True)
class _Layer:
    kind: str
    spec: object  # ConvSpec | AffineSpec | PoolSpec | tuple (fc) | None


class _Reader:
    """Bounds-checked cursor over the file's bytes; every failure is a ValueError."""

    def __init__(self, data: bytes, path: str) -> None:
        self.data = data
        self.path = path
        self.pos = 0

    def fail(self, message: str) -> ValueError:
        return ValueError(f"{self.path}: {message} (at byte {self.pos})")

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"truncated file: {what} needs {n} bytes, "
                            f"{len(self.data) - self.pos} left")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int(self, what: str) -> int:
        control = self.take(1, what)[0]
        size = control & 0x0F
        if control & 0x70 or size > 8:
            self.pos -= 1
            raise self.fail(f"bad packed integer control byte 0x{control:02x} in {what}")
        value = int.from_bytes(self.take(size, what), "little")
        return -value if control & 0x80 else value

    def float(self, what: str) -> float:
        mantissa = self.int(what)
        exponent = self.int(what)
        try:
            return math.ldexp(float(mantissa), exponent)
        except OverflowError:
            raise self.fail(f"float out of range in {what}: {mantissa} * 2^{exponent}") from None

    def string(self, what: str) -> str:
        n = self.int(what)
        if n > 1024:
            raise self.fail(f"implausible string length {n} in {what}")
        raw = self.take(n, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"non-ASCII string in {what}: {raw[:40]!r}") from None

    def bool(self, what: str) -> bool:
        byte = self.take(1, what)
        if byte not in (b"0", b"1"):
            self.pos -= 1
            raise self.fail(f"bad bool byte {byte!r} in {what}")
        return byte == b"1"

    def _shape(self, what: str, version: int, kind: str,
               dimension: str) -> tuple[int, int, int, int]:
        """A packed version (``version`` expected) and four packed non-negative dimensions:
        the start of a tensor and the whole of an aliased tensor. ``kind`` and ``dimension``
        name them in the errors."""
        found = self.int(what)
        if found != version:
            raise self.fail(f"unsupported {kind} version {found} in {what}")
        dims = tuple(self.int(what) for _ in range(4))
        if min(dims) < 0:
            raise self.fail(f"negative {dimension} {dims} in {what}")
        return dims  # type: ignore[return-value]

    def tensor(self, what: str) -> np.ndarray:
        dims = self._shape(what, TENSOR_VERSION, "tensor", "tensor dimension")
        count = math.prod(dims)
        raw = self.take(4 * count, f"{what} values {dims}")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def alias(self, what: str) -> tuple[int, int, int, int]:
        return self._shape(what, ALIAS_VERSION, "aliased-tensor", "dimension")

    def ints(self, n: int, what: str) -> list[int]:
        return [self.int(what) for _ in range(n)]


def _read_conv(r: _Reader, kind: str) -> ConvSpec:
    params = r.tensor(f"{kind} parameters").reshape(-1)
    filters, rows, cols, sy, sx, py, px = r.ints(7, f"{kind} geometry")
    w_dims = r.alias(f"{kind} filter descriptor")
    b_dims = r.alias(f"{kind} bias descriptor")
    [r.float(f"{kind} learning-rate multipliers") for _ in range(4)]
    use_bias = r.bool(f"{kind} use-bias flag") if kind == "con_5" else True
    if w_dims[0] != filters or w_dims[2:] != (rows, cols):
        raise r.fail(f"{kind}: filter descriptor {w_dims} disagrees with {filters} filters "
                     f"of {rows}x{cols}")
    if min(filters, rows, cols, sy, sx) <= 0 or min(py, px) < 0:
        raise r.fail(f"{kind}: bad geometry filters={filters} kernel={rows}x{cols} "
                     f"stride={sy}x{sx} padding={py}x{px}")
    n_w = math.prod(w_dims)
    n_b = math.prod(b_dims) if use_bias else 0
    if use_bias and n_b != filters:
        raise r.fail(f"{kind}: bias descriptor {b_dims} does not hold {filters} biases")
    if params.size != n_w + n_b:
        raise r.fail(f"{kind}: tensor size mismatch: {params.size} values, expected "
                     f"{n_w} filter values + {n_b} biases")
    weight = params[:n_w].reshape(w_dims).copy()
    bias = params[n_w:].copy() if use_bias else None
    return ConvSpec(weight, bias, (sy, sx), (py, px))


def _read_affine(r: _Reader, kind: str) -> AffineSpec:
    params = r.tensor(f"{kind} parameters").reshape(-1)
    g_dims = r.alias(f"{kind} scale descriptor")
    b_dims = r.alias(f"{kind} shift descriptor")
    mode = r.int(f"{kind} mode")
    if mode != 0:
        raise r.fail(f"{kind}: unsupported mode {mode} (only per-channel, 0)")
    n = math.prod(g_dims)
    if math.prod(b_dims) != n or params.size != 2 * n:
        raise r.fail(f"{kind}: tensor size mismatch: {params.size} values for scale {g_dims} "
                     f"and shift {b_dims}")
    return AffineSpec(params[:n].copy(), params[n:].copy())


def _read_pool(r: _Reader, kind: str) -> PoolSpec:
    rows, cols, sy, sx, py, px = r.ints(6, f"{kind} geometry")
    if min(rows, cols, py, px) < 0 or min(sy, sx) <= 0 or (rows == 0) != (cols == 0):
        raise r.fail(f"{kind}: bad geometry kernel={rows}x{cols} stride={sy}x{sx} "
                     f"padding={py}x{px}")
    return PoolSpec("max" if kind.startswith("max") else "avg", (rows, cols), (sy, sx), (py, px))


def _read_fc(r: _Reader, kind: str) -> tuple[np.ndarray, np.ndarray | None]:
    outputs, inputs = r.ints(2, f"{kind} sizes")
    params = r.tensor(f"{kind} parameters").reshape(-1)
    w_dims = r.alias(f"{kind} weight descriptor")
    b_dims = r.alias(f"{kind} bias descriptor")
    bias_mode = r.int(f"{kind} bias mode")
    [r.float(f"{kind} learning-rate multipliers") for _ in range(4)]
    if bias_mode not in (0, 1):
        raise r.fail(f"{kind}: unknown bias mode {bias_mode}")
    if w_dims[:2] != (inputs, outputs) or w_dims[2:] != (1, 1):
        raise r.fail(f"{kind}: weight descriptor {w_dims} is not {inputs}x{outputs}")
    n_w = inputs * outputs
    n_b = outputs if bias_mode == 0 else 0
    if bias_mode == 0 and math.prod(b_dims) != outputs:
        raise r.fail(f"{kind}: bias descriptor {b_dims} does not hold {outputs} biases")
    if params.size != n_w + n_b:
        raise r.fail(f"{kind}: tensor size mismatch: {params.size} values, expected "
                     f"{inputs}x{outputs} weights + {n_b} biases")
    weight = params[:n_w].reshape(inputs, outputs).T.copy()
    bias = params[n_w:].copy() if bias_mode == 0 else None
    return weight, bias


def _read_details(r: _Reader) -> _Layer:
    kind = r.string("layer kind")
    if kind not in LAYER_KINDS:
        raise r.fail(f"unknown layer kind {kind!r} (known: {', '.join(LAYER_KINDS)})")
    spec: object = None
    if kind.startswith("con_"):
        spec = _read_conv(r, kind)
    elif kind.startswith("affine"):
        spec = _read_affine(r, kind)
    elif kind.endswith("pool_2"):
        spec = _read_pool(r, kind)
    elif kind.startswith("fc"):
        spec = _read_fc(r, kind)
    return _Layer(kind, spec)


def _read_cached_state(r: _Reader, kind: str) -> None:
    for _ in range(3):
        r.bool(f"{kind} layer state flags")
    for _ in range(3):
        r.tensor(f"{kind} cached state")


def _read_stream(r: _Reader) -> tuple[LossInfo, tuple[float, float, float], tuple[int, int],
                                      list[_Layer | _Marker]]:
    version = r.int("file version")
    if version != FILE_VERSION:
        raise r.fail(f"wrong version {version} (expected {FILE_VERSION})")
    loss_kind = r.string("loss layer kind")
    if loss_kind not in LOSS_KINDS:
        raise r.fail(f"unknown loss layer {loss_kind!r} (known: {', '.join(LOSS_KINDS)})")
    loss = LossInfo(loss_kind, r.float("loss margin"), r.float("loss distance threshold"))
    versions: list[int] = []
    while True:  # wrapper versions, outermost first, until the input layer's name
        start = r.pos
        value = r.int("layer version")
        if value in (MARKER_VERSION, LAYER_VERSION, INPUT_LAYER_VERSION):
            if versions and versions[-1] == INPUT_LAYER_VERSION:
                raise r.fail("a layer is nested inside the one that should wrap the input")
            versions.append(value)
            continue
        r.pos = start
        break
    if not versions or versions[-1] != INPUT_LAYER_VERSION:
        got = versions[-1] if versions else None
        raise r.fail(f"wrong version {got} for the layer above the input "
                     f"(expected {INPUT_LAYER_VERSION})")
    input_kind = r.string("input layer kind")
    if input_kind not in INPUT_KINDS:
        raise r.fail(f"unknown input layer {input_kind!r} (known: {', '.join(INPUT_KINDS)})")
    means = (r.float("input mean"), r.float("input mean"), r.float("input mean"))
    rows, cols = r.ints(2, "input chip size")
    if rows <= 0 or cols <= 0:
        raise r.fail(f"bad input chip size {rows}x{cols}")
    stream: list[_Layer | _Marker] = []
    for version in reversed(versions):  # innermost first
        if version == MARKER_VERSION:
            stream.append(_Marker())
            continue
        layer = _read_details(r)
        _read_cached_state(r, layer.kind)
        if version == INPUT_LAYER_VERSION:
            factor = r.int("sample expansion factor")
            if factor != 1:
                raise r.fail(f"unsupported sample expansion factor {factor}")
        stream.append(layer)
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} unexpected bytes after the network")
    return loss, means, (rows, cols), stream


class _Cursor:
    """Walks the innermost-first stream and checks it against the ResNet pattern."""

    def __init__(self, r: _Reader, stream: list[_Layer | _Marker]) -> None:
        self.r = r
        self.stream = stream
        self.i = 0
        self.labels: list[str] = []

    def peek(self) -> _Layer | _Marker | None:
        return self.stream[self.i] if self.i < len(self.stream) else None

    def describe(self, item: _Layer | _Marker | None) -> str:
        if item is None:
            return "the end of the network"
        return "a tag or skip" if isinstance(item, _Marker) else repr(item.kind)

    def expect(self, *prefixes: str) -> _Layer:
        item = self.peek()
        if not isinstance(item, _Layer) or not item.kind.startswith(prefixes):
            raise ValueError(f"{self.r.path}: unexpected {self.describe(item)} at layer "
                             f"{self.i} (counting from the input), expected "
                             f"{' or '.join(prefixes)}")
        self.i += 1
        self.labels.append(item.kind)
        return item

    def marker(self, label: str) -> bool:
        if isinstance(self.peek(), _Marker):
            self.i += 1
            self.labels.append(label)
            return True
        return False


def _check_channels(path: str, conv: ConvSpec, channels: int, where: str,
                    affine: object = None) -> None:
    if conv.in_channels != channels:
        raise ValueError(f"{path}: tensor size mismatch: {where} expects {conv.in_channels} "
                         f"input channels, gets {channels}")
    if isinstance(affine, AffineSpec) and affine.scale.size != conv.out_channels:
        raise ValueError(f"{path}: tensor size mismatch: the affine layer after {where} has "
                         f"{affine.scale.size} channels, the convolution {conv.out_channels}")


def _build(r: _Reader, loss: LossInfo, means: tuple[float, float, float],
           chip: tuple[int, int], stream: list[_Layer | _Marker]) -> DlibResnetWeights:
    c = _Cursor(r, stream)
    stem_conv = c.expect("con_").spec
    assert isinstance(stem_conv, ConvSpec)
    stem_affine = c.expect("affine").spec
    _check_channels(r.path, stem_conv, 3, "the first convolution", stem_affine)
    c.expect("relu")
    stem_pool = None
    item = c.peek()
    if isinstance(item, _Layer) and item.kind.startswith("max_pool"):
        stem_pool = c.expect("max_pool").spec
    channels = stem_conv.out_channels
    blocks: list[ResidualBlock] = []
    while c.marker("tag"):  # tag on the block input
        conv_a = c.expect("con_").spec
        affine_a = c.expect("affine").spec
        c.expect("relu")
        conv_b = c.expect("con_").spec
        affine_b = c.expect("affine").spec
        assert isinstance(conv_a, ConvSpec) and isinstance(conv_b, ConvSpec)
        where = f"block {len(blocks)}"
        _check_channels(r.path, conv_a, channels, f"{where}'s first convolution", affine_a)
        _check_channels(r.path, conv_b, conv_a.out_channels, f"{where}'s second convolution",
                        affine_b)
        shortcut = None
        if c.marker("tag"):  # tag on the block output, then a skip to the block input
            if not c.marker("skip"):
                raise ValueError(f"{r.path}: a tag in block {len(blocks)} is not followed by "
                                 f"a skip (found {c.describe(c.peek())})")
            shortcut = c.expect("avg_pool", "max_pool").spec
            assert isinstance(shortcut, PoolSpec)
            if shortcut.is_global:
                raise ValueError(f"{r.path}: global pool as the shortcut of {where}")
        c.expect("add_prev")
        c.expect("relu")
        block = ResidualBlock(conv_a, affine_a, conv_b, affine_b, shortcut)  # type: ignore
        channels = block.out_channels
        blocks.append(block)
    head_pool = c.expect("avg_pool").spec
    assert isinstance(head_pool, PoolSpec)
    if not head_pool.is_global:
        raise ValueError(f"{r.path}: the pool before the fc layer is not global")
    fc_weight, fc_bias = c.expect("fc").spec  # type: ignore[misc]
    if c.peek() is not None:
        raise ValueError(f"{r.path}: unexpected {c.describe(c.peek())} after the fc layer")
    if fc_weight.shape[1] != channels:
        raise ValueError(f"{r.path}: tensor size mismatch: fc takes {fc_weight.shape[1]} "
                         f"inputs, the network gives {channels}")
    return DlibResnetWeights(means, chip, stem_conv, stem_affine, stem_pool,  # type: ignore
                             tuple(blocks), head_pool, fc_weight, fc_bias, loss,
                             tuple(c.labels))


def read_dlib_resnet(path: str | Path) -> DlibResnetWeights:
    """Read a dlib ResNet descriptor file (e.g. ``dlib_face_recognition_resnet_model_v1.dat``).

    Raises ``ValueError`` naming the file for anything malformed or unsupported.
    """
    path = Path(path)
    data = path.read_bytes()
    r = _Reader(data, str(path))
    loss, means, chip, stream = _read_stream(r)
    weights = _build(r, loss, means, chip, stream)
    logger.info("read %s: %d convolutions, %d blocks, %d parameters", path,
                len(weights.convolutions), len(weights.blocks), weights.num_parameters())
    return weights
