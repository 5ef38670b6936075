"""Reading ONNX files as data (no ONNX Runtime): a model file with errors that say what is
wrong, and its constants by name. For the readers that rebuild a network's weights from a
graph (:mod:`facefuse.models.sface_format`, :mod:`facefuse.models.dlib_shipped`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def load_onnx(path: str | Path | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """The model at ``path`` (or ``path`` itself) and a name for it in messages.

    Raises:
        ValueError: no such file, not an ONNX model, or a graph without nodes.
    """
    if isinstance(path, onnx.ModelProto):
        return path, "<ModelProto>"
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such file")
    try:
        model = onnx.load(str(p))
    except Exception as exc:  # protobuf raises DecodeError, onnx others
        raise ValueError(f"{p}: not an ONNX model ({type(exc).__name__}: {exc})") from None
    if not model.graph.node:
        raise ValueError(f"{p}: not an ONNX model (no graph nodes)")
    return model, str(p)


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every initializer of the model's graph, by name, as stored."""
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
