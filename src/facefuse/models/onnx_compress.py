"""Weight compression for ONNX graphs that ONNX Runtime runs (the ship step).

Two storage modes; in both the graph still computes in float32, only the stored weights
shrink:

- ``"float16"``: each float32 initializer of at least ``min_elements`` values is stored as
  float16 and widened back by a ``Cast`` node (about 2x smaller).
- ``"int8-block"``: each float32 initializer of rank >= 2 and at least ``min_elements`` values
  is stored as int8 with one float32 scale and one int8 zero point per block of
  ``block_size`` values, expanded by ``DequantizeLinear`` with the ``block_size`` attribute
  (opset 21; about 3.7x smaller at block size 64), as OpenCV Zoo's ``*_int8bq.onnx`` files
  do. Weights of rank > 2 are blocked as (dim 0, the rest) and reshaped back after
  dequantisation. The default domain's opset is raised to 21 when lower (with ONNX's
  version converter).

Uses onnx and numpy; :func:`check_onnxruntime` imports onnxruntime when called.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

logger = logging.getLogger(__name__)

__all__ = [
    "MODES",
    "CompressionReport",
    "check_onnxruntime",
    "compress_initializers",
    "compress_with_report",
    "quantize_blocks",
    "serialized_size",
]

Mode = Literal["float16", "int8-block"]
MODES: tuple[str, ...] = ("float16", "int8-block")
BLOCK_OPSET = 21  # DequantizeLinear's block_size attribute
_FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class CompressionReport:
    """Serialized sizes before and after, and how many initializers were rewritten."""

    mode: str
    bytes_before: int
    bytes_after: int
    compressed: int
    kept: int

    @property
    def ratio(self) -> float:
        """``bytes_before / bytes_after``."""
        return self.bytes_before / max(self.bytes_after, 1)


def serialized_size(model: onnx.ModelProto) -> int:
    """Bytes of ``model`` serialized (what an .onnx file without external data holds)."""
    return model.ByteSize()


def quantize_blocks(weight: np.ndarray, axis: int = 1,
                    block_size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric int8 quantisation of a 2-D ``weight`` in blocks along ``axis``.

    Returns ``(q int8, scales float32, zero_points int8)``; scales and zero points have
    ``weight``'s shape except ``ceil(n / block_size)`` along ``axis`` (a last partial block
    has its own). Each block's range is widened to include 0, so its zero point is exact.
    ``DequantizeLinear(q, scales, zero_points, axis, block_size)`` gives the weight back to
    within half a step (``scale / 2``).
    """
    w = np.asarray(weight, dtype=np.float32)
    if w.ndim != 2 or axis not in (0, 1):
        raise ValueError(f"quantize_blocks takes a 2-D weight and axis 0 or 1, got shape "
                         f"{w.shape}, axis {axis}")
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    wt = w if axis == 1 else w.T
    rows, n = wt.shape
    blocks = -(-n // block_size)
    padded = np.zeros((rows, blocks * block_size), dtype=np.float32)
    padded[:, :n] = wt
    view = padded.reshape(rows, blocks, block_size)
    valid = (np.arange(blocks * block_size) < n).reshape(blocks, block_size)
    lo = np.minimum(np.where(valid, view, np.inf).min(axis=2), 0.0)
    hi = np.maximum(np.where(valid, view, -np.inf).max(axis=2), 0.0)
    scale = ((hi - lo) / 255.0).astype(np.float32)
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    zp = np.clip(np.round(-128.0 - lo / scale), -128, 127)
    q = np.clip(np.round(view / scale[:, :, None]) + zp[:, :, None], -128, 127)
    q = q.reshape(rows, -1)[:, :n].astype(np.int8)
    zp = zp.astype(np.int8)
    if axis == 0:
        return q.T.copy(), scale.T.copy(), zp.T.copy()
    return q, scale, zp


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _raise_opset(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    current = _opset(model)
    if current >= target:
        return model
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, target)
    except Exception as exc:  # the converter raises RuntimeError / its own errors
        raise ValueError(f"cannot raise the graph's opset from {current} to {target} for "
                         f"block quantisation: {exc}") from None
    converted.ir_version = max(converted.ir_version,
                               helper.find_min_ir_version_for(list(converted.opset_import)))
    logger.info("raised opset %d -> %d", current, target)
    return converted


class _Names:
    def __init__(self, graph: onnx.GraphProto) -> None:
        self.used = {i.name for i in graph.initializer} | {i.name for i in graph.input}
        self.used |= {o.name for o in graph.output}
        for node in graph.node:
            self.used.update(node.input)
            self.used.update(node.output)
            self.used.add(node.name)

    def new(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name


def _block_axis(graph: onnx.GraphProto, name: str, rank: int) -> int:
    """Block along the reduction axis where the consumer says which one it is."""
    if rank != 2:
        return 1
    for node in graph.node:
        if node.op_type == "MatMul" and len(node.input) > 1 and node.input[1] == name:
            return 0
        if (node.op_type == "Gemm" and len(node.input) > 1 and node.input[1] == name
                and not any(a.name == "transB" and a.i for a in node.attribute)):
            return 0
    return 1


def _candidates(model: onnx.ModelProto, mode: str, min_elements: int) -> list[str]:
    out = []
    for init in model.graph.initializer:
        if init.data_type != TensorProto.FLOAT or init.data_location == TensorProto.EXTERNAL:
            continue
        size = int(np.prod(init.dims)) if init.dims else 1
        if size < min_elements or (mode == "int8-block" and len(init.dims) < 2):
            continue
        out.append(init.name)
    return out


def compress_initializers(model: onnx.ModelProto, mode: Mode, min_elements: int = 1024,
                          block_size: int = 64, check: bool = True) -> onnx.ModelProto:
    """A copy of ``model`` with its large float32 initializers stored compactly.

    ``mode`` is ``"float16"`` or ``"int8-block"`` (see the module docstring); initializers
    with fewer than ``min_elements`` values (biases, norms, PReLU slopes) stay float32. The
    result's inputs, outputs and computation precision are the original's. With ``check``,
    the result passes ``onnx.checker`` and, when onnxruntime is installed, loads in it
    (ValueError otherwise). Initializers inside subgraphs are left as they are.
    """
    if mode not in MODES:
        raise ValueError(f"unknown compression mode {mode!r}; valid modes: {', '.join(MODES)}")
    if min_elements < 1 or block_size < 1:
        raise ValueError(f"min_elements and block_size must be positive, got {min_elements} "
                         f"and {block_size}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    names = _candidates(out, mode, min_elements)
    if mode == "int8-block" and names:
        out = _raise_opset(out, BLOCK_OPSET)
    graph = out.graph
    taken = _Names(graph)
    targets = set(names)
    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[TensorProto] = []
    skipped = 0
    for init in graph.initializer:
        if init.name not in targets:
            continue
        w = numpy_helper.to_array(init).astype(np.float32, copy=False)
        if mode == "float16":
            if np.abs(w).max(initial=0.0) > _FLOAT16_MAX or not np.isfinite(w).all():
                logger.warning("%s: values beyond float16's range; kept float32", init.name)
                targets.discard(init.name)
                skipped += 1
                continue
            stored = taken.new(f"{init.name}_fp16")
            new_inits.append(numpy_helper.from_array(w.astype(np.float16), stored))
            new_nodes.append(helper.make_node("Cast", [stored], [init.name], to=TensorProto.FLOAT,
                                              name=taken.new(f"{init.name}_cast")))
        else:
            new_nodes.extend(_block_nodes(graph, init.name, w, block_size, taken, new_inits))
    kept = [i for i in graph.initializer if i.name not in targets]
    replace_repeated(graph.initializer, kept + new_inits)
    replace_repeated(graph.input, [i for i in graph.input if i.name not in targets])
    replace_repeated(graph.node, new_nodes + list(graph.node))
    if check:
        try:
            onnx.checker.check_model(out)
        except onnx.checker.ValidationError as exc:
            raise ValueError(f"the {mode} graph fails onnx.checker: {exc}") from None
        check_onnxruntime(out)
    logger.info("%s: compressed %d initializers (%d kept float32 for range)", mode,
                len(targets), skipped)
    return out


def _block_nodes(graph: onnx.GraphProto, name: str, w: np.ndarray, block_size: int,
                 taken: _Names, new_inits: list[TensorProto]) -> list[onnx.NodeProto]:
    flat = w.reshape(w.shape[0], -1)
    axis = _block_axis(graph, name, w.ndim)
    block = min(block_size, flat.shape[axis])
    q, scale, zp = quantize_blocks(flat, axis, block)
    qn, sn, zn = (taken.new(f"{name}_quantized"), taken.new(f"{name}_scales"),
                  taken.new(f"{name}_zero_point"))
    new_inits += [numpy_helper.from_array(q, qn), numpy_helper.from_array(scale, sn),
                  numpy_helper.from_array(zp, zn)]
    out = name if w.ndim == 2 else taken.new(f"{name}_dequantized")
    nodes = [helper.make_node("DequantizeLinear", [qn, sn, zn], [out], axis=axis,
                              block_size=block, name=taken.new(f"{name}_dequantize"))]
    if w.ndim != 2:
        shape = taken.new(f"{name}_shape")
        new_inits.append(numpy_helper.from_array(np.asarray(w.shape, dtype=np.int64), shape))
        nodes.append(helper.make_node("Reshape", [out, shape], [name],
                                      name=taken.new(f"{name}_reshape")))
    return nodes


def replace_repeated(field: object, items: list) -> None:
    """Replace a repeated protobuf field's items by copies of ``items``."""
    copies = []
    for item in items:
        copy = type(item)()
        copy.CopyFrom(item)
        copies.append(copy)
    del field[:]  # type: ignore[index]
    field.extend(copies)  # type: ignore[attr-defined]


def check_onnxruntime(model: onnx.ModelProto) -> None:
    """Raise ValueError when onnxruntime (if installed) refuses to load ``model``."""
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - onnxruntime is a facefuse dependency
        logger.warning("onnxruntime not installed; compressed graph not checked")
        return
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        ort.InferenceSession(model.SerializeToString(), options,
                             providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ValueError(f"onnxruntime does not load the compressed graph: {exc}") from None


def compress_with_report(model: onnx.ModelProto, mode: Mode, min_elements: int = 1024,
                         block_size: int = 64,
                         check: bool = True) -> tuple[onnx.ModelProto, CompressionReport]:
    """:func:`compress_initializers` plus the serialized sizes before and after."""
    out = compress_initializers(model, mode, min_elements, block_size, check)
    before = {i.name for i in model.graph.initializer}
    after = {i.name for i in out.graph.initializer}
    report = CompressionReport(mode=mode, bytes_before=serialized_size(model),
                               bytes_after=serialized_size(out),
                               compressed=len(before - after), kept=len(before & after))
    return out, report
