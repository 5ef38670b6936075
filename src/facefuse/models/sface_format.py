"""Read OpenCV Zoo's SFace face recogniser from its ONNX file (no torch here).

The published file (``face_recognition_sface_2021dec_int8bq.onnx``, Apache-2.0, OpenCV Zoo)
stores its conv and linear weights block-quantised: int8 values with one float32 scale and one
int8 zero point per block of (usually) 64 elements along an axis, expanded at run time by
``DequantizeLinear`` (opset 21, ``block_size`` attribute). This module

- dequantises such initializers exactly as ONNX Runtime does
  (:func:`dequantize_initializers`), or rewrites a whole graph into a plain float32 one
  (:func:`dequantized_model`), for any graph with weight-only ``DequantizeLinear`` nodes;
- reads SFace's float32 weights into :class:`SFaceWeights` (:func:`read_sface`), keyed by the
  parameter names of :class:`facefuse.models.sface.SFaceNet`, after checking the graph's layer
  sequence against :data:`SFACE_UNITS`.

The graph: ``(x - 127.5) * (1/128)`` on RGB 112x112 pixels, then 27 conv units
(Conv without bias, BatchNormalization with eps 1e-3, PReLU): a full 3x3 conv, then 13
depthwise-3x3 / pointwise-1x1 pairs, with no residual additions; then BatchNormalization
(eps 2e-5), Dropout (0.4), Flatten, Gemm 50,176 -> 128 and a last BatchNormalization.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from facefuse.models.onnx_compress import replace_repeated
from facefuse.models.onnx_files import initializers, load_onnx

logger = logging.getLogger(__name__)

__all__ = [
    "SFACE_UNITS",
    "ConvUnitSpec",
    "SFaceWeights",
    "dequantize",
    "dequantize_initializers",
    "dequantized_model",
    "read_sface",
]


@dataclass(frozen=True)
class ConvUnitSpec:
    """One conv unit (Conv, BatchNorm, PReLU) of the SFace trunk, as the graph has it."""

    name: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    groups: int
    eps: float = 1e-3


def _sface_units() -> tuple[ConvUnitSpec, ...]:
    units = [ConvUnitSpec("conv_1", 3, 32, 3, 1, 1, 1)]
    # (index, in, out, depthwise stride): conv_k_dw is depthwise 3x3 on `in`, conv_k is 1x1.
    pairs = [(2, 32, 64, 1), (3, 64, 128, 2), (4, 128, 128, 1), (5, 128, 256, 2),
             (6, 256, 256, 1), (7, 256, 512, 2), (8, 512, 512, 1), (9, 512, 512, 1),
             (10, 512, 512, 1), (11, 512, 512, 1), (12, 512, 512, 1), (13, 512, 1024, 2),
             (14, 1024, 1024, 1)]
    for k, cin, cout, stride in pairs:
        units.append(ConvUnitSpec(f"conv_{k}_dw", cin, cin, 3, stride, 1, cin))
        units.append(ConvUnitSpec(f"conv_{k}", cin, cout, 1, 1, 0, 1))
    return tuple(units)


SFACE_UNITS: tuple[ConvUnitSpec, ...] = _sface_units()
"""SFace's 27 conv units in graph order (112 -> 56 -> 28 -> 14 -> 7 pixels)."""

SFACE_FEATURE_DIM = 128
SFACE_IMAGE_SIZE = 112
SFACE_FINAL_CHANNELS = 1024


@dataclass
class SFaceWeights:
    """SFace's float32 weights and what the graph says around them.

    ``tensors`` is ordered as the graph runs and keyed by
    :class:`~facefuse.models.sface.SFaceNet` state-dict names:
    ``body.<unit>.conv.weight``, ``body.<unit>.bn.{weight,bias,running_mean,running_var}``,
    ``body.<unit>.act.weight`` (PReLU slopes, one per channel), ``bn1.*`` (the batch norm on
    the final 7x7 map), ``fc.weight`` (128, 50176), ``fc.bias`` and ``fc_bn.*``.
    ``input_mean`` and ``input_scale`` are the graph's own pixel normalisation,
    ``(x - input_mean) * input_scale`` on 0..255 RGB values.
    """

    source: str
    units: tuple[ConvUnitSpec, ...]
    tensors: dict[str, np.ndarray]
    input_mean: float
    input_scale: float
    bn1_eps: float
    fc_bn_eps: float
    dropout: float = 0.0
    opset: int = 0

    @property
    def normalisation(self) -> dict[str, list[float]]:
        """The input normalisation in 0..1 units: ``(pixels/255 - mean) / std``."""
        mean = self.input_mean / 255.0
        std = 1.0 / (self.input_scale * 255.0)
        return {"mean": [mean] * 3, "std": [std] * 3}

    def num_parameters(self) -> int:
        """Learnable values (BN running statistics excluded)."""
        return sum(int(v.size) for k, v in self.tensors.items() if "running_" not in k)


# --------------------------------------------------------------------------------------------
# Dequantisation (any graph)
# --------------------------------------------------------------------------------------------


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _expand_blocks(param: np.ndarray, shape: tuple[int, ...], axis: int,
                   block_size: int) -> np.ndarray:
    """Repeat each block's ``param`` ``block_size`` times along ``axis``, cut to ``shape``
    (a last partial block keeps its own scale and zero point)."""
    if param.ndim != len(shape):
        raise ValueError(f"block parameters of rank {param.ndim} for a tensor of rank "
                         f"{len(shape)}")
    length = shape[axis]
    if param.shape[axis] != -(-length // block_size):
        raise ValueError(f"{param.shape[axis]} blocks along axis {axis} do not cover "
                         f"{length} values in blocks of {block_size}")
    for i, (p, s) in enumerate(zip(param.shape, shape, strict=True)):
        if i != axis and p != s:
            raise ValueError(f"block parameters of shape {param.shape} do not fit a tensor "
                             f"of shape {shape}")
    return np.take(np.repeat(param, block_size, axis=axis), np.arange(length), axis=axis)


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None = None,
               axis: int = 1, block_size: int = 0) -> np.ndarray:
    """``(q - zero_point) * scale`` as ``DequantizeLinear`` (opset 21) computes it:
    per tensor (scalar scale), per axis (1-D scale along ``axis``) or per block
    (``block_size`` > 0: scale and zero point have ``q``'s rank, one entry per block along
    ``axis``). The result has the scale's dtype (float32 here)."""
    q = np.asarray(q)
    scale = np.asarray(scale)
    zp = np.zeros_like(scale, dtype=np.int32) if zero_point is None else np.asarray(zero_point)
    if zp.shape != scale.shape:
        raise ValueError(f"zero point of shape {zp.shape} and scale of shape {scale.shape}")
    axis = axis % max(q.ndim, 1)
    if block_size:
        scale = _expand_blocks(scale, q.shape, axis, block_size)
        zp = _expand_blocks(zp, q.shape, axis, block_size)
    elif scale.ndim == 1 and scale.size > 1:
        if scale.size != q.shape[axis]:
            raise ValueError(f"{scale.size} scales for axis {axis} of length {q.shape[axis]}")
        view = [1] * q.ndim
        view[axis] = -1
        scale, zp = scale.reshape(view), zp.reshape(view)
    # ONNX Runtime subtracts in integers, converts, then multiplies in the scale's precision.
    diff = q.astype(np.int32) - zp.astype(np.int32)
    return (diff.astype(scale.dtype) * scale).astype(scale.dtype)


def _dequantize_nodes(model: onnx.ModelProto,
                      inits: dict[str, np.ndarray]) -> list[tuple[onnx.NodeProto, np.ndarray]]:
    out: list[tuple[onnx.NodeProto, np.ndarray]] = []
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx"):
            continue
        names = [n for n in node.input if n]
        missing = [n for n in names if n not in inits]
        if missing:
            if names and names[0] in inits:
                raise ValueError(f"DequantizeLinear {node.name or node.output[0]!r}: input "
                                 f"{missing[0]!r} is not an initializer")
            continue  # dequantises an activation: not a weight
        q = inits[names[0]]
        scale = inits[node.input[1]]
        zp = inits[node.input[2]] if len(node.input) > 2 and node.input[2] else None
        try:
            value = dequantize(q, scale, zp, axis=int(_attr(node, "axis", 1)),
                               block_size=int(_attr(node, "block_size", 0)))
        except ValueError as exc:
            raise ValueError(f"DequantizeLinear {node.output[0]!r}: {exc}") from None
        out.append((node, value))
    return out


def dequantize_initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Dequantise every ``DequantizeLinear`` whose inputs are all initializers.

    Returns ``{node output name: float array}`` in graph order (the name the graph's
    consumers read). Handles per-tensor, per-axis and block quantisation (a last partial
    block included). Raises ValueError when a quantised weight's scale or zero point is not
    an initializer or the shapes do not agree.
    """
    inits = initializers(model)
    return {node.output[0]: value for node, value in _dequantize_nodes(model, inits)}


def _fold_reshapes(graph: onnx.GraphProto, consts: dict[str, np.ndarray]) -> int:
    """Replace Reshape nodes of a constant by the reshaped constant (in ``consts``)."""
    folded = 0
    keep: list[onnx.NodeProto] = []
    for node in graph.node:
        if (node.op_type == "Reshape" and node.domain in ("", "ai.onnx")
                and node.input[0] in consts and len(node.input) > 1
                and node.input[1] in consts and not _attr(node, "allowzero", 0)):
            data, shape = consts[node.input[0]], consts[node.input[1]].astype(np.int64)
            target = [data.shape[i] if s == 0 else int(s) for i, s in enumerate(shape)]
            consts[node.output[0]] = data.reshape(target)
            folded += 1
        else:
            keep.append(node)
    replace_repeated(graph.node, keep)
    return folded


def dequantized_model(model: onnx.ModelProto, fold_reshapes: bool = True) -> onnx.ModelProto:
    """A copy of ``model`` with every weight ``DequantizeLinear`` replaced by its float
    initializer (and, with ``fold_reshapes``, every Reshape of such a constant folded), the
    quantised initializers no longer read removed, and graph inputs that nothing reads
    dropped. The result is a plain float graph that computes what ONNX Runtime computes on
    the quantised one (to about 2e-6 for SFace)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = initializers(out)
    done = _dequantize_nodes(out, inits)
    new: dict[str, np.ndarray] = {node.output[0]: value for node, value in done}
    replace_repeated(graph.node, [n for n in graph.node
                      if not (n.op_type == "DequantizeLinear" and n.output[0] in new)])
    if fold_reshapes:
        consts = {**inits, **new}
        before = set(consts)
        _fold_reshapes(graph, consts)
        new.update({k: v for k, v in consts.items() if k not in before})
    used = {name for node in graph.node for name in node.input}
    used |= {o.name for o in graph.output}
    used |= _subgraph_inputs(graph)
    replace_repeated(graph.initializer,
         [init for init in graph.initializer if init.name in used]
         + [numpy_helper.from_array(v, name=k) for k, v in new.items() if k in used])
    present = {init.name for init in graph.initializer}
    removed = set(inits) - present
    # inputs no node reads (the SFace file declares its float weights' old names as inputs)
    replace_repeated(graph.input, [i for i in graph.input
                                   if i.name not in removed and i.name in used])
    replace_repeated(graph.value_info,
         [v for v in graph.value_info if v.name not in present and v.name in used])
    logger.info("dequantised %d initializers, removed %d quantised tensors", len(done),
                len(removed))
    return out


def _subgraph_inputs(graph: onnx.GraphProto) -> set[str]:
    names: set[str] = set()
    for node in graph.node:
        for a in node.attribute:
            subs = list(a.graphs) + ([a.g] if a.HasField("g") else [])
            for sub in subs:
                names |= {n for sn in sub.node for n in sn.input}
                names |= _subgraph_inputs(sub)
    return names


# --------------------------------------------------------------------------------------------
# SFace
# --------------------------------------------------------------------------------------------


class _Walker:
    """Follows a single-input chain of nodes from the graph input, checking op types."""

    def __init__(self, graph: onnx.GraphProto, consts: dict[str, np.ndarray],
                 source: str) -> None:
        self.source = source
        self.consts = consts
        self.nodes = [n for n in graph.node if n.op_type != "Constant"]
        for n in graph.node:
            if n.op_type == "Constant":
                self.consts[n.output[0]] = numpy_helper.to_array(_attr(n, "value"))
        self.pos = 0
        self.current = ""

    def fail(self, what: str) -> ValueError:
        return ValueError(f"{self.source}: not the SFace graph: {what}")

    def take(self, op: str) -> onnx.NodeProto:
        if self.pos >= len(self.nodes):
            raise self.fail(f"the graph ends where a {op} was expected")
        node = self.nodes[self.pos]
        if node.op_type != op:
            raise self.fail(f"node {self.pos} ({node.name or node.output[0]!r}) is "
                            f"{node.op_type}, expected {op}")
        if self.current and node.input[0] != self.current:
            raise self.fail(f"{op} {node.output[0]!r} does not read {self.current!r}")
        self.pos += 1
        self.current = node.output[0]
        return node

    def peek(self) -> str:
        return self.nodes[self.pos].op_type if self.pos < len(self.nodes) else ""

    def const(self, node: onnx.NodeProto, i: int) -> np.ndarray:
        if len(node.input) <= i or not node.input[i]:
            raise self.fail(f"{node.op_type} {node.output[0]!r} lacks input {i}")
        name = node.input[i]
        if name not in self.consts:
            raise ValueError(f"{self.source}: initializer {name!r} (input {i} of "
                             f"{node.op_type} {node.output[0]!r}) is missing")
        return np.asarray(self.consts[name], dtype=np.float32)


def _bn(walk: _Walker, node: onnx.NodeProto, prefix: str, channels: int,
        out: dict[str, np.ndarray]) -> float:
    for i, key in enumerate(("weight", "bias", "running_mean", "running_var"), start=1):
        value = walk.const(node, i)
        if value.shape != (channels,):
            raise walk.fail(f"{node.input[i]!r} has shape {value.shape}, expected "
                            f"({channels},)")
        out[f"{prefix}.{key}"] = value
    return float(_attr(node, "epsilon", 1e-5))


def _conv_unit(walk: _Walker, spec: ConvUnitSpec, out: dict[str, np.ndarray]) -> ConvUnitSpec:
    conv = walk.take("Conv")
    if len(conv.input) > 2 and conv.input[2]:
        raise walk.fail(f"conv {conv.output[0]!r} has a bias (BN is expected unfolded)")
    w = walk.const(conv, 1)
    want = (spec.out_channels, spec.in_channels // spec.groups, spec.kernel, spec.kernel)
    if w.shape != want:
        raise walk.fail(f"conv {conv.output[0]!r} weight has shape {w.shape}, expected "
                        f"{want} ({spec.name})")
    strides = list(_attr(conv, "strides", [1, 1]))
    pads = list(_attr(conv, "pads", [0, 0, 0, 0]))
    group = int(_attr(conv, "group", 1))
    dil = list(_attr(conv, "dilations", [1, 1]))
    if (strides != [spec.stride] * 2 or pads != [spec.padding] * 4 or group != spec.groups
            or dil != [1, 1] or _attr(conv, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")):
        raise walk.fail(f"conv {conv.output[0]!r} has strides {strides}, pads {pads}, group "
                        f"{group}, dilations {dil}; {spec.name} expects stride {spec.stride}, "
                        f"padding {spec.padding}, groups {spec.groups}")
    out[f"body.{spec.name}.conv.weight"] = w
    bn = walk.take("BatchNormalization")
    eps = _bn(walk, bn, f"body.{spec.name}.bn", spec.out_channels, out)
    prelu = walk.take("PRelu")
    slope = walk.const(prelu, 1)
    if slope.size != spec.out_channels:
        raise walk.fail(f"PRelu {prelu.output[0]!r} has {slope.size} slopes, expected "
                        f"{spec.out_channels}")
    out[f"body.{spec.name}.act.weight"] = slope.reshape(-1)
    return ConvUnitSpec(spec.name, spec.in_channels, spec.out_channels, spec.kernel,
                        spec.stride, spec.padding, spec.groups, eps)


def read_sface(path: str | Path | onnx.ModelProto) -> SFaceWeights:
    """Load SFace from its ONNX file (block-quantised int8 or float) as float32 weights.

    Raises ValueError naming the file and the problem when it is not an ONNX model, its graph
    is not SFace's layer sequence, or an initializer is missing.
    """
    model, source = load_onnx(path)
    try:
        plain = dequantized_model(model)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    graph = plain.graph
    consts = initializers(plain)
    walk = _Walker(graph, consts, source)
    data_inputs = [i.name for i in graph.input if i.name not in consts]
    sub = walk.take("Sub")
    if sub.input[0] not in data_inputs:
        raise walk.fail(f"the first node reads {sub.input[0]!r}, not a graph input")
    mean = walk.const(sub, 1)
    mul = walk.take("Mul")
    scale = walk.const(mul, 1)
    if mean.size != 1 or scale.size != 1:
        raise walk.fail("the input normalisation is not by scalars")
    tensors: dict[str, np.ndarray] = {}
    units = tuple(_conv_unit(walk, spec, tensors) for spec in SFACE_UNITS)
    bn1 = walk.take("BatchNormalization")
    bn1_eps = _bn(walk, bn1, "bn1", SFACE_FINAL_CHANNELS, tensors)
    dropout = 0.0
    if walk.peek() == "Dropout":
        node = walk.take("Dropout")
        if len(node.input) > 1 and node.input[1]:
            dropout = float(walk.const(node, 1))
        else:
            dropout = float(_attr(node, "ratio", 0.5))
    walk.take("Flatten")
    gemm = walk.take("Gemm")
    w, b = walk.const(gemm, 1), walk.const(gemm, 2)
    if int(_attr(gemm, "transB", 0)) != 1 or int(_attr(gemm, "transA", 0)) != 0:
        raise walk.fail("the Gemm does not take (out, in) weights (transB=1)")
    if float(_attr(gemm, "alpha", 1.0)) != 1.0 or float(_attr(gemm, "beta", 1.0)) != 1.0:
        raise walk.fail("the Gemm scales its terms (alpha/beta != 1)")
    fc_in = SFACE_FINAL_CHANNELS * 7 * 7
    if w.shape != (SFACE_FEATURE_DIM, fc_in) or b.shape != (SFACE_FEATURE_DIM,):
        raise walk.fail(f"the Gemm has weight {w.shape} and bias {b.shape}, expected "
                        f"({SFACE_FEATURE_DIM}, {fc_in}) and ({SFACE_FEATURE_DIM},)")
    tensors["fc.weight"], tensors["fc.bias"] = w, b
    fc_bn = walk.take("BatchNormalization")
    fc_bn_eps = _bn(walk, fc_bn, "fc_bn", SFACE_FEATURE_DIM, tensors)
    if walk.pos != len(walk.nodes):
        raise walk.fail(f"{len(walk.nodes) - walk.pos} nodes after the final batch norm")
    if [o.name for o in graph.output] != [walk.current]:
        raise walk.fail(f"the graph output is not the final batch norm {walk.current!r}")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    weights = SFaceWeights(source=source, units=units, tensors=tensors,
                           input_mean=float(mean.reshape(-1)[0]),
                           input_scale=float(scale.reshape(-1)[0]), bn1_eps=bn1_eps,
                           fc_bn_eps=fc_bn_eps, dropout=dropout, opset=opset)
    logger.info("read SFace from %s: %d tensors, %d parameters", source, len(tensors),
                weights.num_parameters())
    return weights
