"""Test helper: write small dlib ResNet descriptor files in dlib's real serialisation.

Written from the format description (the same one the reader follows) and checked against
the bytes of the real ``dlib_face_recognition_resnet_model_v1.dat``: versions of every
wrapper first (outermost first; 1 for tags and skips, 2 for layers, 3 for the layer above
the input), the input layer, then each layer's kind, fields, three bools, three tensors (and,
for the layer above the input, a packed sample-expansion factor), innermost first.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from facefuse.models.dlib_weights import (
    AffineSpec,
    ConvSpec,
    DlibResnetWeights,
    LossInfo,
    PoolSpec,
    ResidualBlock,
)


def pack_int(value: int) -> bytes:
    """dlib's packed integer: control byte (size, sign bit) and little-endian magnitude."""
    magnitude = abs(int(value))
    size = max(1, (magnitude.bit_length() + 7) // 8)  # dlib writes zero as one 0x00 byte
    return bytes([size | (0x80 if value < 0 else 0)]) + magnitude.to_bytes(size, "little")


def pack_float(value: float, digits: int = 24) -> bytes:
    """A float as packed mantissa and exponent (``mantissa * 2**exponent``), as dlib writes
    it: the ``frexp`` mantissa scaled to ``digits`` bits (24 for a float, 53 for a double),
    then whole zero bytes dropped from its low end (at most eight; zero becomes ``0, 11``
    for a double)."""
    if digits == 24:
        value = float(np.float32(value))
    m, e = math.frexp(float(value))
    mantissa, exponent = int(m * (1 << digits)), e - digits
    for _ in range(8):
        if mantissa & 0xFF:
            break
        mantissa >>= 8
        exponent += 8
    return pack_int(mantissa) + pack_int(exponent)


def pack_string(text: str) -> bytes:
    return pack_int(len(text)) + text.encode("ascii")


def pack_tensor(values: np.ndarray, dims: tuple[int, int, int, int] | None = None) -> bytes:
    values = np.asarray(values, dtype="<f4")
    dims = dims or (values.size, 1, 1, 1)
    assert math.prod(dims) == values.size
    return pack_int(2) + b"".join(pack_int(d) for d in dims) + values.tobytes()


def pack_alias(dims: tuple[int, ...]) -> bytes:
    return pack_int(1) + b"".join(pack_int(d) for d in dims)


def _multipliers() -> bytes:
    return b"".join(pack_float(v, digits=53) for v in (1.0, 1.0, 1.0, 0.0))  # doubles


def conv_details(spec: ConvSpec, kind: str = "con_4") -> bytes:
    w = spec.weight
    use_bias = spec.bias is not None
    assert use_bias or kind == "con_5", "con_4 always holds biases"
    params = np.concatenate([w.ravel(), spec.bias.ravel() if use_bias else np.zeros(0)])
    out = (pack_string(kind) + pack_tensor(params)
           + b"".join(pack_int(v) for v in (w.shape[0], w.shape[2], w.shape[3], *spec.stride,
                                              *spec.padding))
           + pack_alias(w.shape) + pack_alias((1, w.shape[0], 1, 1)) + _multipliers())
    return out + (b"1" if use_bias else b"0") if kind == "con_5" else out


def affine_details(spec: AffineSpec) -> bytes:
    c = spec.scale.size
    return (pack_string("affine_") + pack_tensor(np.concatenate([spec.scale, spec.shift]))
            + pack_alias((1, c, 1, 1)) * 2 + pack_int(0))


def pool_details(spec: PoolSpec) -> bytes:
    kind = "max_pool_2" if spec.kind == "max" else "avg_pool_2"
    return pack_string(kind) + b"".join(pack_int(v) for v in (*spec.kernel, *spec.stride,
                                                              *spec.padding))


def fc_details(weight: np.ndarray, bias: np.ndarray | None) -> bytes:
    outputs, inputs = weight.shape
    params = weight.T.ravel()
    if bias is not None:
        params = np.concatenate([params, bias])
    b_alias = (1, outputs, 1, 1) if bias is not None else (0, 0, 0, 0)
    return (pack_string("fc_2") + pack_int(outputs) + pack_int(inputs)
            + pack_tensor(params, (inputs + (bias is not None), outputs, 1, 1))
            + pack_alias((inputs, outputs, 1, 1)) + pack_alias(b_alias)
            + pack_int(0 if bias is not None else 1) + _multipliers())


MARKER = None  # a tag or skip wrapper
RELU = pack_string("relu_")


def layer_stream(w: DlibResnetWeights, conv_kinds: dict[int, str] | None = None
                 ) -> list[bytes | None]:
    """Each layer's details, innermost first; ``None`` for tags and skips.
    ``conv_kinds`` maps a convolution's index to its kind (default ``con_4``)."""
    kinds = conv_kinds or {}
    n_conv = 0

    def conv(spec: ConvSpec) -> bytes:
        nonlocal n_conv
        n_conv += 1
        return conv_details(spec, kinds.get(n_conv - 1, "con_4"))

    relu = RELU
    items: list[bytes | None] = [conv(w.stem_conv), affine_details(w.stem_affine), relu]
    if w.stem_pool is not None:
        items.append(pool_details(w.stem_pool))
    for b in w.blocks:
        items += [MARKER, conv(b.conv_a), affine_details(b.affine_a), relu, conv(b.conv_b),
                  affine_details(b.affine_b)]
        if b.shortcut is not None:
            items += [MARKER, MARKER, pool_details(b.shortcut)]
        items += [pack_string("add_prev_"), relu]
    items += [pool_details(w.head_pool), fc_details(w.fc, w.fc_bias)]
    return items


def dlib_bytes(w: DlibResnetWeights, *, file_version: int = 1,
               conv_kinds: dict[int, str] | None = None, cached_state: bool = True) -> bytes:
    """The whole file. ``cached_state`` writes a non-empty cached-output tensor in every
    layer (as a trained, used network may hold), which the reader must skip."""
    items = layer_stream(w, conv_kinds)
    head = (pack_int(file_version) + pack_string(w.loss.kind) + pack_float(w.loss.margin)
            + pack_float(w.loss.distance_threshold))
    versions = [1 if item is MARKER else (3 if i == 0 else 2) for i, item in enumerate(items)]
    out = [head, *(pack_int(v) for v in reversed(versions))]
    out.append(pack_string("input_rgb_image_sized")
               + b"".join(pack_float(m) for m in w.means)
               + pack_int(w.chip_size[0]) + pack_int(w.chip_size[1]))
    empty = pack_tensor(np.zeros(0, np.float32), (0, 0, 0, 0))
    state = pack_tensor(np.arange(6, dtype=np.float32), (1, 2, 3, 1)) if cached_state else empty
    for i, item in enumerate(items):
        if item is MARKER:
            continue
        nxt = items[i + 1] if i + 1 < len(items) else MARKER
        # the third flag is set on a layer whose output the relu above it overwrites
        flags = b"111" if nxt is not MARKER and nxt.startswith(RELU) else b"110"
        out.append(item + flags + empty + state + empty)
        if i == 0:
            out.append(pack_int(1))
    return b"".join(out)


def write_dlib(w: DlibResnetWeights, path: Path, **options: object) -> Path:
    path.write_bytes(dlib_bytes(w, **options))  # type: ignore[arg-type]
    return path


def tiny_weights(seed: int = 0, fc_bias: bool = False, stem_bias: bool = True,
                 chip: int = 37) -> DlibResnetWeights:
    """A tiny dlib-style ResNet with random weights.

    Stem 5x5/2 conv (4 filters) and 3x3/2 max pool; blocks: identity (4), downsampling to 6
    (conv 3x3/2 without padding against a 2x2/2 average-pooled shortcut: on a 37-pixel
    chip that adds a 3x3 map into the top-left of a 4x4 one, and 4 channels into 6), a
    non-downsampling widening to 8 (identity shortcut zero-filled in channels), and a last
    downsampling block; global average pool and a 8 -> 5 fc.
    """
    rng = np.random.default_rng(seed)

    def arr(*shape: int, scale: float = 0.3) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def conv(cin: int, cout: int, k: int, stride: int, bias: bool = True) -> ConvSpec:
        pad = k // 2 if stride == 1 else 0
        return ConvSpec(arr(cout, cin, k, k), arr(cout, scale=0.1) if bias else None,
                        (stride, stride), (pad, pad))

    def affine(c: int) -> AffineSpec:
        return AffineSpec(1.0 + arr(c, scale=0.2), arr(c, scale=0.1))

    avg = PoolSpec("avg", (2, 2), (2, 2), (0, 0))
    layout = [(4, 4, False), (4, 6, True), (6, 8, False), (8, 8, True)]
    blocks = tuple(ResidualBlock(conv(cin, cout, 3, 2 if down else 1), affine(cout),
                                 conv(cout, cout, 3, 1), affine(cout), avg if down else None)
                   for cin, cout, down in layout)
    return DlibResnetWeights(
        means=(122.782, 117.001, 104.298), chip_size=(chip, chip),
        stem_conv=conv(3, 4, 5, 2, bias=stem_bias), stem_affine=affine(4),
        stem_pool=PoolSpec("max", (3, 3), (2, 2), (0, 0)), blocks=blocks,
        head_pool=PoolSpec("avg", (0, 0), (1, 1), (0, 0)),
        fc=arr(5, 8), fc_bias=arr(5, scale=0.1) if fc_bias else None,
        loss=LossInfo("loss_metric_2", 0.04, 0.6))
