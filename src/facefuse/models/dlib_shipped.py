"""dlib's ResNet as a trainable module, rebuilt from the graph that facefuse ships
(``weights/identity/dlib_resnet.onnx``: dlib's weights stored as float16): an
identity-pretrained trunk that needs neither dlib's ``.dat`` file nor the package that holds
it. ``trunk: dlib_resnet`` with ``trunk_options: {weights: shipped}`` in a config.

The graph keeps the module's parameter names for the convolutions (``module.<name>``, a
float16 copy cast back to float32), the affines as the constant operands of their ``Mul``
and ``Add`` nodes, and the fc layer as the constant of ``/fc/MatMul`` (transposed).
Reading it needs the ``onnx`` package (the ``train`` extra).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

SHIPPED_GRAPH = Path(__file__).resolve().parents[1] / "weights" / "identity" / "dlib_resnet.onnx"


def _graph_values(graph: object) -> dict[str, np.ndarray]:
    """Every constant of ``graph`` by name: initializers, ``Constant`` nodes, and the outputs
    of ``Cast`` nodes whose input is a constant (float16 storage cast to float32)."""
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}  # type: ignore[attr-defined]
    for node in graph.node:  # type: ignore[attr-defined]
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
        elif node.op_type == "Cast" and node.input[0] in values:
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
        ValueError: the graph lacks a parameter of the module, or its shape differs.
    """
    import onnx

    path = Path(graph)
    if not path.is_file():
        raise FileNotFoundError(f"no dlib graph at {path}")
    g = onnx.load(str(path)).graph
    values = _graph_values(g)
    nodes = {n.name: n for n in g.node}
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
