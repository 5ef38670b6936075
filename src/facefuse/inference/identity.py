"""Identity networks run on aligned faces, and their fused embedding.

An identity network is an ONNX graph with a JSON description beside it (``NAME.json`` next
to ``NAME.onnx``, written by ``facefuse model import``): its input size, the five-point
template a face is aligned onto (left eye, right eye, nose tip, left and right mouth corner,
in input pixels), the input normalisation (applied to pixels / 255, RGB), the embedding's
width, and the weights' licence and provenance. It needs numpy, OpenCV and ONNX Runtime only.

A fused identity (:class:`FusedIdentity`, read from a ``facefuse-identity-1`` JSON file)
combines several networks: each network's descriptor, less a centre vector, is scaled to
unit length and weighted, and the concatenation is scaled to unit length again. The cosine
of two fused embeddings is then the weighted mean of the networks' cosines (weights
``w_i ** 2 / sum w ** 2``), which is what the fusion is fitted as; the decision threshold is
on that cosine. ``facefuse.train.identity_fusion`` fits the weights, centres and threshold on
training identities.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facefuse.identity_format import FUSION_FORMAT, NetworkSpec, read_described_json
from facefuse.inference.alignment import similarity_transform
from facefuse.runtime.graph import session_options

log = logging.getLogger(__name__)

def align_to_template(rgb: np.ndarray, five_points: np.ndarray, template: np.ndarray,
                      size: int) -> np.ndarray:
    """``rgb`` warped by the similarity transform taking ``five_points`` (image pixels) onto
    ``template`` (pixels of a ``size`` x ``size`` crop); bilinear, black outside the image."""
    import cv2

    points = np.asarray(five_points, np.float64).reshape(-1, 2)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        raise ValueError(f"alignment needs five finite (x, y) points, got {points.shape}")
    m = similarity_transform(points, np.asarray(template, np.float64))
    return cv2.warpAffine(np.ascontiguousarray(rgb), m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


class IdentityNetwork:
    """One identity network: aligns faces by five points and computes their descriptors
    through ONNX Runtime.

    Args:
        path: the network's JSON (its ONNX graph beside it).
        threads: ONNX Runtime intra-op threads (None: its default).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self.spec = NetworkSpec.read(self.path)
        self.threads = threads
        self._session: Any = None
        self._mean = np.asarray(self.spec.mean, np.float32).reshape(1, 3, 1, 1)
        self._std = np.asarray(self.spec.std, np.float32).reshape(1, 3, 1, 1)
        self._template = np.asarray(self.spec.template, np.float64)

    @property
    def name(self) -> str:
        return self.spec.name

    def prepare(self) -> None:
        """Open the ONNX Runtime session (done on first use otherwise)."""
        if self._session is not None:
            return
        import onnxruntime as ort

        # session_options folds SFace's int8 weights once, at load (76 -> 41 ms a face)
        options = session_options(self.threads)
        graph = self.path.parent / self.spec.graph
        self._session = ort.InferenceSession(str(graph), options,
                                             providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._outputs = [o.name for o in self._session.get_outputs()]

    def align(self, rgb: np.ndarray, five_points: np.ndarray) -> np.ndarray:
        """The network's input crop of one face (uint8 RGB, ``input_size`` square)."""
        return align_to_template(rgb, five_points, self._template, self.spec.input_size)

    def descriptors(self, crops: Sequence[np.ndarray], flip: bool = False) -> np.ndarray:
        """Raw descriptors (N, dim) of aligned crops; with ``flip``, the mean of each crop's
        and its mirror image's."""
        views = self.descriptor_views(crops, mirrored=flip)
        return views.mean(0) if flip else views[0]

    @property
    def blocks(self) -> dict[str, int]:
        """The pooled intermediate features the graph gives besides the descriptor (name ->
        width; ``facefuse model import`` writes them), which other tasks' heads read."""
        return {str(k): int(v) for k, v in (self.spec.meta.get("blocks") or {}).items()}

    def descriptor_views(self, crops: Sequence[np.ndarray], mirrored: bool = True
                         ) -> np.ndarray:
        """(views, N, dim): the crops' raw descriptors, and with ``mirrored`` their mirror
        images' as a second view (one run of the graph)."""
        return self.run(crops, mirrored)[0]

    def run(self, crops: Sequence[np.ndarray], mirrored: bool = False
            ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """:meth:`descriptor_views` and, from the same run, each pooled block of the
        unmirrored crops, (N, width)."""
        views = 2 if mirrored else 1
        if len(crops) == 0:
            return (np.zeros((views, 0, self.spec.dim), np.float32),
                    {k: np.zeros((0, w), np.float32) for k, w in self.blocks.items()})
        self.prepare()
        size = self.spec.input_size
        for i, c in enumerate(crops):
            if c.shape != (size, size, 3) or c.dtype != np.uint8:
                raise ValueError(f"crop {i}: expected a {size}x{size}x3 uint8 array, got "
                                 f"{c.shape} {c.dtype}")
        x = np.stack(crops).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        x = (x - self._mean) / self._std
        if mirrored:
            x = np.concatenate([x, x[..., ::-1]])
        arrays = self._session.run(None, {self._input: np.ascontiguousarray(x)})
        out = arrays[0].reshape(len(x), -1).astype(np.float32)
        if out.shape[1] != self.spec.dim:
            raise ValueError(f"{self.path}: the graph gives {out.shape[1]}-d descriptors, "
                             f"its description says {self.spec.dim}")
        named = dict(zip(self._outputs, arrays, strict=True))
        blocks = {}
        for name, width in self.blocks.items():
            if f"block_{name}" not in named:
                raise ValueError(f"{self.path}: its description names the block {name!r}, "
                                 f"which the graph does not give")
            blocks[name] = named[f"block_{name}"][:len(crops)].reshape(len(crops), width)
        return out.reshape(views, len(crops), self.spec.dim), blocks

    def embed(self, images: Sequence[np.ndarray], points: Sequence[np.ndarray],
              flip: bool = False) -> np.ndarray:
        """Raw descriptors of faces given as (image, five points) pairs."""
        return self.descriptors([self.align(im, p) for im, p in zip(images, points,
                                                                    strict=True)], flip)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class FusionPart:
    """One network's share of a fused embedding."""

    network: str
    weight: float
    centre: np.ndarray


class FusedIdentity:
    """The fused identity embedding of several networks, with its decision threshold.

    Args:
        networks: the identity networks, in part order.
        parts: each network's weight and centre (same order).
        threshold: the decision threshold on the fused cosine.
        flip: describe each face and its mirror image and average the two.
        meta: what the fusion's JSON says besides (its fit, its provenance).

    :meth:`read` loads one from its JSON.
    """

    def __init__(self, networks: Sequence[IdentityNetwork], parts: Sequence[FusionPart],
                 threshold: float, flip: bool = False, meta: dict | None = None) -> None:
        if not parts or len(parts) != len(networks):
            raise ValueError(f"a fused identity needs one part per network, got {len(parts)} "
                             f"parts for {len(networks)} networks")
        for part, net in zip(parts, networks, strict=True):
            if part.weight <= 0:
                raise ValueError(f"the weight of {part.network} must be positive, got "
                                 f"{part.weight}")
            if part.centre.shape != (net.spec.dim,):
                raise ValueError(f"the centre of {part.network} has shape {part.centre.shape}, "
                                 f"its network gives {net.spec.dim}-d descriptors")
        self.networks, self.parts = list(networks), tuple(parts)
        self.threshold, self.flip, self.meta = float(threshold), bool(flip), dict(meta or {})

    @classmethod
    def read(cls, path: str | Path, threads: int | None = None) -> FusedIdentity:
        """A fused identity from its JSON (format ``facefuse-identity-1``); each part's
        network JSON lies beside it as ``<network>.json``.

        Raises:
            FileNotFoundError: the JSON or a network's files are missing.
            ValueError: the JSON is not a fused identity's, or a field is wrong.
        """
        path = Path(path)
        doc = read_described_json(path, FUSION_FORMAT, "a fused identity description")
        try:
            parts = [FusionPart(str(p["network"]), float(p["weight"]),
                                np.asarray(p["centre"], np.float32)) for p in doc["parts"]]
            threshold, flip = float(doc["threshold"]), bool(doc.get("flip", False))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: a field is missing or malformed ({exc!r})") from exc
        for part in parts:
            if Path(part.network).name != part.network:
                raise ValueError(f"{path}: network name {part.network!r} is not a plain name")
        networks = [IdentityNetwork(path.parent / f"{p.network}.json", threads) for p in parts]
        try:
            return cls(networks, parts, threshold, flip, doc)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc

    @classmethod
    def unfitted(cls, networks: Sequence[IdentityNetwork], flip: bool = False
                 ) -> FusedIdentity:
        """Equal weights, no centring, threshold 0: for describing faces before a fusion
        is fitted (:meth:`descriptors` is what matters then)."""
        return cls(networks, [FusionPart(n.name, 1.0, np.zeros(n.spec.dim, np.float32))
                              for n in networks], 0.0, flip)

    @property
    def dim(self) -> int:
        return sum(n.spec.dim for n in self.networks)

    def prepare(self) -> None:
        """Open every network's session now."""
        for net in self.networks:
            net.prepare()

    def descriptors(self, images: Sequence[np.ndarray], points: Sequence[np.ndarray]
                    ) -> list[np.ndarray]:
        """Each network's raw descriptors (N, dim_k) of faces given as (image, five points)
        pairs, in part order."""
        if len(images) != len(points):
            raise ValueError(f"{len(images)} images for {len(points)} point sets")
        return [net.embed(images, points, self.flip) for net in self.networks]

    def fuse(self, descriptors: Sequence[np.ndarray]) -> np.ndarray:
        """Unit fused embeddings from each network's raw descriptors (in part order)."""
        total = np.sqrt(sum(p.weight ** 2 for p in self.parts))
        blocks = [_unit(_unit(np.asarray(d, np.float32)) - p.centre) * (p.weight / total)
                  for p, d in zip(self.parts, descriptors, strict=True)]
        return _unit(np.concatenate(blocks, axis=1))

    def embed(self, images: Sequence[np.ndarray], points: Sequence[np.ndarray]) -> np.ndarray:
        """Unit fused embeddings (N, dim) of faces given as (image, five points) pairs."""
        if not len(images):
            return np.zeros((0, self.dim), np.float32)
        return self.fuse(self.descriptors(images, points))

    def describe(self, images: Sequence[np.ndarray], points: Sequence[np.ndarray]
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """:meth:`embed` and, from the same runs, every network's features by name:
        ``<network>:features`` (its raw descriptor of the unmirrored crop) and
        ``<network>:<block>`` (each pooled block), (N, width) each."""
        if len(images) != len(points):
            raise ValueError(f"{len(images)} images for {len(points)} point sets")
        descriptors, features = [], {}
        for net in self.networks:
            crops = [net.align(im, p) for im, p in zip(images, points, strict=True)]
            views, blocks = net.run(crops, mirrored=self.flip)
            descriptors.append(views.mean(0) if self.flip else views[0])
            features[f"{net.name}:features"] = views[0]
            features.update({f"{net.name}:{k}": v for k, v in blocks.items()})
        if not len(images):
            return np.zeros((0, self.dim), np.float32), features
        return self.fuse(descriptors), features
