"""The files that describe identity networks and their fusion (JSON beside ONNX graphs).

* A network: ``NAME.json`` (format :data:`NETWORK_FORMAT`) beside its graph ``NAME.onnx``:
  input size, the five-point alignment template (left eye, right eye, nose tip, left and right
  mouth corner, in input pixels), the normalisation applied to RGB pixels / 255, the
  descriptor width, licence and provenance. Written by ``facefuse model import``.
* A fusion: a JSON (format :data:`FUSION_FORMAT`) naming networks that lie beside it, each
  with a weight and a centre vector, and the decision threshold on the fused cosine. Fitted
  by :mod:`facefuse.train.identity_fusion`, read by :mod:`facefuse.inference.identity`.

Plain JSON and numpy: no torch, no ONNX Runtime.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facefuse.files import write_json_atomic

__all__ = ["ARCFACE_TEMPLATE_112", "FUSION_FORMAT", "NETWORK_FORMAT", "NetworkSpec",
           "read_described_json", "write_json_atomic"]

#: The ArcFace layout of five points (eye (image left), eye (image right), nose tip, mouth
#: corners) in a 112x112 crop: SFace's alignment, and the analyzer's ``align``.
ARCFACE_TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                 [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


def read_described_json(path: str | Path, fmt: str, what: str) -> dict:
    """The JSON document at ``path`` whose ``format`` is ``fmt`` (``what``, with its article,
    names it in errors: "an identity network description").

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: it is not JSON, or not a ``fmt`` document.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (expected {what})")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise ValueError(f"{path}: not {what} (format {found!r}, expected {fmt!r})")
    return doc


NETWORK_FORMAT = "facefuse-identity-network-1"
FUSION_FORMAT = "facefuse-identity-1"


@dataclass(frozen=True)
class NetworkSpec:
    """What an identity network's JSON says about it."""

    name: str
    graph: str
    input_size: int
    template: tuple[tuple[float, float], ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dim: int
    meta: dict

    @classmethod
    def read(cls, path: str | Path) -> NetworkSpec:
        """Read and check ``path`` (a network JSON).

        Raises:
            FileNotFoundError: the JSON or its graph is missing.
            ValueError: the JSON is not an identity network's, or a field is wrong.
        """
        path = Path(path)
        doc = read_described_json(path, NETWORK_FORMAT, "an identity network description")
        try:
            template = tuple((float(x), float(y)) for x, y in doc["template"])
            spec = cls(str(doc["name"]), str(doc["graph"]), int(doc["input_size"]), template,
                       tuple(float(v) for v in doc["mean"]),  # type: ignore[arg-type]
                       tuple(float(v) for v in doc["std"]),  # type: ignore[arg-type]
                       int(doc["dim"]), doc)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: a field is missing or malformed ({exc!r})") from exc
        if len(spec.template) != 5 or len(spec.mean) != 3 or len(spec.std) != 3 \
                or spec.input_size < 8 or spec.dim < 1 or min(spec.std) <= 0:
            raise ValueError(f"{path}: needs a 5-point template, 3 means, 3 positive stds, an "
                             f"input size of 8 or more and a positive dim")
        if Path(spec.graph).name != spec.graph:
            raise ValueError(f"{path}: graph {spec.graph!r} must be a file name beside it")
        if not (path.parent / spec.graph).is_file():
            raise FileNotFoundError(f"{path}: its graph {path.parent / spec.graph} is missing")
        return spec


