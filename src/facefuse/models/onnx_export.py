"""ONNX export of a multi-task checkpoint, with a numerical parity check against PyTorch.

The graph takes ``images`` (N, 3, S, S), normalised as the checkpoint's metadata says, and
returns ``features`` (the trunk's vector), ``embedding`` (the identity vector before
normalisation, :meth:`MultiTaskModel.identity_vector`) and one output per task head, named
by task: the contract :class:`facefuse.runtime.model_graph.ModelGraph` runs without torch.
The export needs torch and onnx (the training extra); the parity check onnxruntime.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import IO

import numpy as np
import torch
from torch import nn

from facefuse.models.checkpoint import load_checkpoint
from facefuse.models.multitask import MultiTaskModel
from facefuse.runtime.model_files import graph_path, write_weights_and_json
from facefuse.runtime.model_graph import EMBEDDING, FEATURES


class _TupleOutputs(nn.Module):
    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model
        self.names = list(model.heads)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.model.forward_features(images)
        return (features, self.model.identity_vector(features),
                *(self.model.heads[n](features) for n in self.names))


def output_names(model: MultiTaskModel) -> list[str]:
    return [FEATURES, EMBEDDING, *model.heads]


def export_graph(model: MultiTaskModel, size: int, target: str | Path | IO[bytes],
                 opset: int = 17) -> list[str]:
    """Write ``model``'s ONNX graph (``images`` in; ``features``, ``embedding`` and one
    output per head out, any batch size) to a file path or a binary stream; returns the
    output names."""
    wrapper = _TupleOutputs(model).eval()
    names = output_names(model)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (torch.zeros(2, 3, size, size),),
                          target if not isinstance(target, Path) else str(target),
                          input_names=["images"], output_names=names, opset_version=opset,
                          dynamic_axes={"images": {0: "batch"},
                                        **{n: {0: "batch"} for n in names}},
                          dynamo=False)
    return names


def input_size(checkpoint_meta: dict, model: MultiTaskModel) -> int:
    return int(checkpoint_meta.get("input_size") or getattr(model.trunk, "image_size", 112))


def export_onnx(checkpoint: str | Path, out: str | Path, opset: int = 17,
                compression: str = "none", **meta: object) -> Path:
    """Write ``out`` (.onnx) and ``out`` with ``.json`` (the checkpoint's metadata, with
    ``onnx_outputs``, ``weights_storage`` and any ``meta`` added), atomically. ``compression``
    is how the graph stores its weights: ``none`` (float32) or one of
    :data:`facefuse.models.onnx_compress.MODES`."""
    ckpt = load_checkpoint(checkpoint)
    size = input_size(ckpt.meta, ckpt.model)
    out = graph_path(out)

    def write(file: str) -> None:
        export_graph(ckpt.model, size, Path(file), opset)
        if compression != "none":
            import onnx

            from facefuse.models.onnx_compress import compress_initializers

            onnx.save(compress_initializers(onnx.load(file), compression), file)

    doc = {**ckpt.meta, "input_size": size, "onnx_outputs": output_names(ckpt.model),
           "weights_storage": compression, **meta}
    write_weights_and_json(out, write, doc, suffix=".onnx")
    return out


def onnx_parity(checkpoint: str | Path, onnx_path: str | Path, batch: int = 4,
                seed: int = 0) -> dict[str, float]:
    """Max absolute difference per output between ONNX Runtime and PyTorch on random input."""
    from facefuse.runtime.graph import OnnxGraph

    ckpt = load_checkpoint(checkpoint)
    wrapper = _TupleOutputs(ckpt.model).eval()
    size = input_size(ckpt.meta, ckpt.model)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    got = OnnxGraph(graph_path(onnx_path)).run(x.numpy())
    with torch.no_grad():
        want = wrapper(x)
    names = output_names(ckpt.model)
    return {n: float(np.abs(got[n] - w.numpy()).max()) for n, w in zip(names, want, strict=True)}


def export_features(module: nn.Module, size: int, target: str | Path | IO[bytes],
                    opset: int = 17) -> None:
    """Write ``module`` (in eval mode; its mode is restored) as ONNX to ``target``:
    ``images`` (N, 3, size, size) -> ``features``, any batch size."""
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (torch.zeros(2, 3, size, size),),
                              str(target) if isinstance(target, Path) else target,
                              input_names=["images"], output_names=["features"],
                              opset_version=opset, dynamo=False,
                              dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}})
    finally:
        module.train(was_training)


def features_graph(module: nn.Module, size: int, opset: int = 17) -> bytes:
    """:func:`export_features` into memory: the graph's bytes."""
    buffer = io.BytesIO()
    export_features(module, size, buffer, opset)
    return buffer.getvalue()


class _BlockOutputs(nn.Module):
    """``features`` then each pooled block of a trunk's ``forward_blocks``, as a tuple."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features, blocks = self.module.forward_blocks(images)
        return (features, *blocks.values())


def block_names(module: nn.Module, size: int) -> list[str]:
    """The pooled blocks a trunk's ``forward_blocks`` gives (none without the method)."""
    if not hasattr(module, "forward_blocks"):
        return []
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            return list(module.forward_blocks(torch.zeros(1, 3, size, size))[1])
    finally:
        module.train(was_training)


def blocks_graph(module: nn.Module, size: int, opset: int = 17) -> tuple[bytes, list[str]]:
    """A trunk with ``forward_blocks`` as ONNX bytes: ``images`` -> ``features`` and one
    output per pooled block, named ``block_<name>``; returns the bytes and the block names.
    A trunk without the method gives :func:`features_graph` and no blocks."""
    names = block_names(module, size)
    if not names:
        return features_graph(module, size, opset), []
    outputs = ["features", *(f"block_{n}" for n in names)]
    buffer = io.BytesIO()
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(_BlockOutputs(module), (torch.zeros(2, 3, size, size),), buffer,
                              input_names=["images"], output_names=outputs,
                              opset_version=opset, dynamo=False,
                              dynamic_axes={"images": {0: "batch"},
                                            **{o: {0: "batch"} for o in outputs}})
    finally:
        module.train(was_training)
    return buffer.getvalue(), names
