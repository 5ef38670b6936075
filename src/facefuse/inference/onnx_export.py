"""ONNX export of a multi-task checkpoint, with a numerical parity check against PyTorch.

The exported graph takes ``images`` (N, 3, S, S), normalised as the checkpoint's metadata
says, and returns one output per task head, named by task (plus ``features``, the trunk's
vector). ``onnx`` (torch's exporter needs it) and ``onnxruntime`` (the parity check) are
dependencies of facefuse.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import IO

import numpy as np
import torch
from torch import nn

from facefuse.models.checkpoint import load_checkpoint
from facefuse.models.multitask import MultiTaskModel


class _TupleOutputs(nn.Module):
    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model
        self.names = list(model.heads)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.model.forward_features(images)
        return (features, *(self.model.heads[n](features) for n in self.names))


def export_graph(model: MultiTaskModel, size: int, target: str | Path | IO[bytes],
                 opset: int = 17) -> list[str]:
    """Write ``model``'s ONNX graph (``images`` in; ``features`` and one output per head
    out, any batch size) to a file path or a binary stream; returns the output names."""
    wrapper = _TupleOutputs(model).eval()
    names = ["features", *wrapper.names]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (torch.zeros(2, 3, size, size),),
                          target if not isinstance(target, Path) else str(target),
                          input_names=["images"], output_names=names, opset_version=opset,
                          dynamic_axes={"images": {0: "batch"},
                                        **{n: {0: "batch"} for n in names}},
                          dynamo=False)
    return names


def export_onnx(checkpoint: str | Path, out: str | Path, opset: int = 17) -> Path:
    """Write ``out`` (.onnx) and ``out`` with ``.json`` (the checkpoint's metadata)."""
    ckpt = load_checkpoint(checkpoint)
    size = int(ckpt.meta.get("input_size") or getattr(ckpt.model.trunk, "image_size", 112))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = export_graph(ckpt.model, size, out, opset)
    out.with_suffix(".json").write_text(json.dumps({**ckpt.meta, "onnx_outputs": names},
                                                   indent=1, default=str))
    return out


def onnx_parity(checkpoint: str | Path, onnx_path: str | Path, batch: int = 4,
                seed: int = 0) -> dict[str, float]:
    """Max absolute difference per output between ONNX Runtime and PyTorch on random input."""
    import onnxruntime as ort

    ckpt = load_checkpoint(checkpoint)
    wrapper = _TupleOutputs(ckpt.model).eval()
    size = int(ckpt.meta.get("input_size") or getattr(ckpt.model.trunk, "image_size", 112))
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        want = wrapper(x)
    names = ["features", *wrapper.names]
    return {n: float(np.abs(g - w.numpy()).max()) for n, g, w in zip(names, got, want, strict=True)}
