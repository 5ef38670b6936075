"""Partial fine-tuning of an identity network: a trainable copy of its last blocks (a *tail*)
with linear heads, on the map the frozen network gives at the cut; and a tail's regression
output written as an ONNX graph that the analyzer's identity heads run
(:class:`facefuse.runtime.graph_head.GraphHead`).

``benchmarks/identity_finetune.py`` trains and compares tails on cached maps (the frozen
part runs once); ``docs/MODEL_CARD.md`` ("Partial fine-tuning") has its figures.
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn


class IdentityTail(nn.Module):
    """A network's blocks from ``from_block`` on (copied), average-pooled, batch-normalised
    (started from the frozen tail's statistics), then one linear layer of ``n_out`` outputs.

    Args:
        network: the identity network (its ``blocks`` take ``(x, size)``, like dlib's).
        from_block: the first block of the tail.
        in_size: the rows and columns of the map entering it.
        pool_mean, pool_std: the frozen tail's pooled features' statistics.
        n_out: the head's outputs.
        trainable: whether the blocks train (False: a probe, only the head does).
    """

    def __init__(self, network: nn.Module, from_block: int, in_size: tuple[int, int],
                 pool_mean: np.ndarray, pool_std: np.ndarray, n_out: int,
                 trainable: bool) -> None:
        super().__init__()
        if not 0 <= from_block < len(network.blocks):
            raise ValueError(f"from_block must be within [0, {len(network.blocks) - 1}], got "
                             f"{from_block}")
        self.blocks = copy.deepcopy(network.blocks[from_block:])
        sizes = [tuple(in_size)]
        for b in self.blocks:
            sizes.append(b.out_size(sizes[-1]))
        self.sizes = sizes[:-1]
        self.norm = nn.BatchNorm1d(len(pool_mean))
        with torch.no_grad():
            self.norm.running_mean.copy_(torch.as_tensor(pool_mean))
            self.norm.running_var.copy_(torch.as_tensor(pool_std) ** 2)
        self.head = nn.Linear(len(pool_mean), n_out)
        for p in self.blocks.parameters():
            p.requires_grad_(trainable)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The tail's average-pooled output, before the normalisation."""
        for b, s in zip(self.blocks, self.sizes, strict=True):
            x = b(x, s)
        return x.mean(dim=(2, 3))

    def head_of(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_of(self.pooled(x))


class _ValueOutput(nn.Module):
    """One output column of a tail, in the task's units, from the flattened map."""

    def __init__(self, tail: IdentityTail, column: int, centre: float, scale: float,
                 map_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.tail, self.column, self.map_shape = tail, column, map_shape
        self.centre, self.scale = float(centre), float(scale)

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        out = self.tail(flat.reshape(-1, *self.map_shape))[:, self.column]
        return self.centre + self.scale * out


def write_value_graph(tail: IdentityTail, column: int, centre: float, scale: float,
                      map_shape: tuple[int, int, int], path: str | Path,
                      compression: str = "int8-block", check: np.ndarray | None = None
                      ) -> dict:
    """Write output ``column`` of ``tail`` (``centre + scale * output``: an age in years)
    as an ONNX graph at ``path``: input ``tail_in`` (N, C*H*W) float32, output ``value``
    (N,). Large weights are stored as ``compression`` (``int8-block``, ``float16`` or
    ``float32``; :mod:`facefuse.models.onnx_compress`), written through
    :func:`facefuse.files.atomic_path`. Returns the graph's size and its parity with
    ``tail`` on ``check`` (flattened maps; default 64 random ones).

    Raises:
        ValueError: an unknown compression, or a column outside the head.
    """
    import onnx
    import onnxruntime as ort

    from facefuse.files import atomic_path
    from facefuse.models.onnx_compress import compress_initializers

    if compression not in ("int8-block", "float16", "float32"):
        raise ValueError(f"unknown compression {compression!r}; valid: int8-block, float16, "
                         f"float32")
    if not 0 <= column < tail.head.out_features:
        raise ValueError(f"column {column} is outside the head's {tail.head.out_features} "
                         f"outputs")
    module = _ValueOutput(copy.deepcopy(tail).eval(), column, centre, scale, map_shape).eval()
    width = int(np.prod(map_shape))
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(2, width),), buffer, input_names=["tail_in"],
                          output_names=["value"], opset_version=17, dynamo=False,
                          dynamic_axes={"tail_in": {0: "batch"}, "value": {0: "batch"}})
    model = onnx.load_from_string(buffer.getvalue())
    if compression != "float32":
        model = compress_initializers(model, compression)  # type: ignore[arg-type]
    graph = model.SerializeToString()
    if check is None:
        check = np.abs(np.random.default_rng(0).normal(size=(64, width))).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(np.asarray(check, np.float32))).numpy()
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    got = session.run(None, {"tail_in": np.asarray(check, np.float32)})[0].reshape(-1)
    with atomic_path(path) as tmp:
        tmp.write_bytes(graph)
    return {"graph_bytes": len(graph), "weights_storage": compression,
            "parameters": int(sum(p.numel() for p in tail.blocks.parameters())
                              + tail.norm.num_features * 2 + tail.head.in_features + 1),
            "parity_max_abs": float(np.abs(want - got).max()), "parity_inputs": len(check)}
