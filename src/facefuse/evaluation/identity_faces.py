"""Each photo's largest face described by every identity network, through the analyzer
(detector, five points, alignment per network) exactly as ``facefuse verify`` sees it: what
the identity fusion is fitted on and what LFW verification is scored on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facefuse.inference.identity import FusedIdentity, IdentityNetwork


class _RecordingIdentity(FusedIdentity):
    """A fused identity that keeps each batch's raw descriptors (per network: the crops' and
    their mirror images') as it embeds."""

    def __init__(self, networks: Sequence[IdentityNetwork]) -> None:
        base = FusedIdentity.unfitted(networks, flip=True)
        super().__init__(base.networks, base.parts, base.threshold, base.flip)
        self.recorded: list[list[np.ndarray]] = []

    def describe(self, images, points):  # type: ignore[override]
        """What the analyzer calls: the fused embeddings (of each face and its mirror image
        averaged), no pooled blocks; every network's two views recorded."""
        views = [net.descriptor_views([net.align(im, p) for im, p in zip(images, points,
                                                                          strict=True)])
                 for net in self.networks]
        self.recorded.append(views)
        return self.fuse([v.mean(0) for v in views]), {}

    def embed(self, images, points):  # type: ignore[override]
        return self.describe(images, points)[0]


@dataclass(frozen=True)
class FaceDescriptors:
    """Per photo: each network's raw descriptors of its largest face, as it is and mirrored
    (NaN rows where no face was found), the model's own identity embedding, whether a face
    was found and how (``found_by``)."""

    paths: tuple[str, ...]
    networks: tuple[str, ...]
    plain: tuple[np.ndarray, ...]
    mirrored: tuple[np.ndarray, ...]
    model_embedding: np.ndarray
    found: np.ndarray
    found_by: np.ndarray

    def descriptors(self, flip: bool) -> list[np.ndarray]:
        """Each network's descriptors: the mean of both views with ``flip``, else plain."""
        return [(p + m) / 2 if flip else p for p, m in zip(self.plain, self.mirrored,
                                                           strict=True)]

    def save(self, path: str | Path) -> None:
        np.savez(path, paths=np.array(self.paths), networks=np.array(self.networks),
                 model_embedding=self.model_embedding, found=self.found,
                 found_by=self.found_by.astype(str),
                 **{f"d_{n}": d for n, d in zip(self.networks, self.plain, strict=True)},
                 **{f"m_{n}": d for n, d in zip(self.networks, self.mirrored, strict=True)})

    @classmethod
    def load(cls, path: str | Path) -> FaceDescriptors:
        with np.load(path, allow_pickle=False) as z:
            networks = tuple(str(n) for n in z["networks"])
            return cls(tuple(str(p) for p in z["paths"]), networks,
                       tuple(z[f"d_{n}"] for n in networks),
                       tuple(z[f"m_{n}"] for n in networks), z["model_embedding"],
                       z["found"], z["found_by"])


def describe_largest_faces(paths: Sequence[str | Path], networks: Sequence[IdentityNetwork],
                           chunk: int = 32,
                           progress: Callable[[int], None] | None = None,
                           with_model: bool = False,
                           **analyzer_options: object) -> FaceDescriptors:
    """Run the analyzer (``analyzer_options``: detector, min_face, ...) on ``paths`` and keep
    every network's raw descriptors of each photo's largest face, as it is and mirrored;
    with ``with_model`` also
    the multi-task model's own embedding of it (a second pass; else an (N, 0) array).
    ``progress(n)`` is called after each chunk of ``n`` photos of each pass."""
    from facefuse.inference.analyzer import FaceAnalyzer

    recorder = _RecordingIdentity(networks)
    analyzer = FaceAnalyzer(tasks=["embedding"], identity=recorder, landmark_refiner=None,
                            identity_heads=None, **analyzer_options)  # type: ignore[arg-type]
    n = len(paths)
    dims = [net.spec.dim for net in networks]
    plain = [np.full((n, d), np.nan, np.float32) for d in dims]
    mirrored = [np.full((n, d), np.nan, np.float32) for d in dims]
    model = np.full((n, 0), np.nan, np.float32)
    found = np.zeros(n, bool)
    found_by = np.full(n, "none", dtype=object)
    for start in range(0, n, chunk):
        batch = [str(p) for p in paths[start:start + chunk]]
        recorder.recorded.clear()
        results = analyzer.analyze_many(batch)
        parts = [np.concatenate([r[k] for r in recorder.recorded], axis=1)
                 if recorder.recorded else np.zeros((2, 0, d), np.float32)
                 for k, d in enumerate(dims)]
        row = 0  # faces in analyzer order: image by image, detections in order
        for k, result in enumerate(results):
            if result.faces:
                largest = result.largest_face()
                assert largest is not None
                idx = row + largest.index
                for o, m, p in zip(plain, mirrored, parts, strict=True):
                    o[start + k], m[start + k] = p[0, idx], p[1, idx]
                found[start + k] = True
                found_by[start + k] = largest.found_by
            row += len(result.faces)
        if progress is not None:
            progress(len(batch))
    names = tuple(net.name for net in networks)
    if not with_model:
        return FaceDescriptors(tuple(str(p) for p in paths), names, tuple(plain),
                               tuple(mirrored), model, found, found_by.astype(str))
    # the model's own embedding needs a second pass without the identity networks
    own = FaceAnalyzer(tasks=["embedding"], identity=None, landmark_refiner=None,
                       **analyzer_options)  # type: ignore[arg-type]
    model_rows = []
    for start in range(0, n, chunk):
        for result in own.analyze_many([str(p) for p in paths[start:start + chunk]]):
            face = result.largest_face()
            model_rows.append(None if face is None else np.asarray(face.predictions[
                "embedding"], np.float32))
        if progress is not None:
            progress(len(paths[start:start + chunk]))
    width = next((len(r) for r in model_rows if r is not None), 0)
    model = np.stack([r if r is not None else np.full(width, np.nan, np.float32)
                      for r in model_rows]) if n else model
    return FaceDescriptors(tuple(str(p) for p in paths), names, tuple(plain), tuple(mirrored),
                           model, found, found_by.astype(str))
