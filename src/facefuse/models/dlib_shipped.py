"""dlib's ResNet as a trainable module, rebuilt from the graph that facefuse ships
(``weights/identity/dlib_resnet.onnx``: dlib's weights stored as float16): an
identity-pretrained trunk that needs neither dlib's ``.dat`` file nor the package that holds
it. ``trunk: dlib_resnet`` with ``trunk_options: {weights: shipped}`` in a config.

The graph keeps the module's parameter names for the convolutions (``module.<name>``, a
float16 copy cast back to float32), the affines as the constant operands of their ``Mul``
and ``Add`` nodes, and the fc layer as the constant of ``/fc/MatMul`` (transposed).
Reading it needs the ``onnx`` package (the ``train`` extra); this module is imported only
when a trunk asks for these weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from facefuse.models.onnx_files import initializers, load_onnx

SHIPPED_GRAPH = Path(__file__).resolve().parents[1] / "weights" / "identity" / "dlib_resnet.onnx"


def _graph_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The graph's initializers by name, and the outputs of ``Cast`` nodes that read one
    (float16 storage cast to float32), all as float32."""
    values = initializers(model)
    for node in model.graph.node:
        if node.op_type == "Cast" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    return {k: np.asarray(v, dtype=np.float32) for k, v in values.items()}


def _scope(module: str) -> str:
    """The exporter's node scope of a module path: ``blocks.0.affine_a`` ->
    ``/blocks.0/affine_a`` (a list index stays joined to its list)."""
    scope = ""
    for part in module.split("."):
        scope += f".{part}" if part.isdigit() else f"/{part}"
    return scope


def load_shipped_graph(model: nn.Module, graph: str | Path = SHIPPED_GRAPH) -> nn.Module:
    """Load every parameter of ``model`` (a :class:`~facefuse.models.dlib_resnet.DlibResNet`)
    from the dlib graph at ``graph``, in place.

    Raises:
        FileNotFoundError: no graph at ``graph``.
        ValueError: not an ONNX file, or the graph lacks a parameter of the module, or its
            shape differs.
    """
    path = Path(graph)
    if not path.is_file():
        raise FileNotFoundError(f"no dlib graph at {path}")
    proto, _ = load_onnx(path)
    values = _graph_values(proto)
    nodes = {n.name: n for n in proto.graph.node}
    state = {}
    for key, param in model.state_dict().items():
        module, _, leaf = key.rpartition(".")
        if key == "fc.weight":
            source = nodes.get("/fc/MatMul")
            value = values.get(source.input[1]) if source is not None else None
            value = None if value is None else value.T
        elif leaf in ("scale", "shift"):
            source = nodes.get(f"{_scope(module)}/{'Mul' if leaf == 'scale' else 'Add'}")
            value = values.get(source.input[1]) if source is not None else None
        else:
            value = values.get(f"module.{key}")
        if value is None or value.size != param.numel():
            got = None if value is None else value.shape
            raise ValueError(f"{path.name} has no value of {tuple(param.shape)} for {key} "
                             f"(found {got}): not the graph of dlib's network")
        state[key] = torch.from_numpy(np.array(value, dtype=np.float32).reshape(param.shape))
    model.load_state_dict(state)
    return model
