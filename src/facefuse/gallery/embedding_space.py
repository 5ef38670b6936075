"""Which embeddings an analyzer makes, for a gallery to record and check: a fingerprint that
changes whenever the weights or the fusion that make them change, their width, and their
decision threshold.

The fused identity networks (the default) are fingerprinted by their fusion (each part's
network, weight and centre, and the flip setting) and, per network, its JSON description and
the SHA-256 of its ONNX graph; the multi-task model's own identity head (``--identity
none``) by the model's weights (:func:`facefuse.runtime.model_files.weights_fingerprint`).
The fingerprint names what made the embeddings (``identity:dlib_resnet+sface:<16 hex>``,
``model:facefuse-mtl-small:<16 hex>``) so that a mismatch reads plainly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facefuse.files import file_sha256
from facefuse.inference.analyzer import FaceAnalyzer
from facefuse.inference.identity import FusedIdentity
from facefuse.runtime.model_files import model_base, weights_fingerprint


@dataclass(frozen=True)
class EmbeddingSpace:
    """What a gallery records about its embeddings."""

    fingerprint: str
    dim: int
    threshold: float


def identity_fingerprint(identity: FusedIdentity) -> str:
    """The fingerprint of a fused identity's embeddings (see the module's docstring)."""
    digest = hashlib.sha256()
    fusion = {"flip": identity.flip,
              "parts": [[p.network, p.weight, np.asarray(p.centre, np.float32).tobytes().hex()]
                        for p in identity.parts]}
    digest.update(json.dumps(fusion, sort_keys=True).encode())
    for net in identity.networks:
        digest.update(net.path.read_bytes())
        digest.update(file_sha256(net.path.parent / net.spec.graph).encode())
    names = "+".join(n.name for n in identity.networks)
    return f"identity:{names}:{digest.hexdigest()[:16]}"


def model_fingerprint(model: str | Path) -> str:
    """The fingerprint of a multi-task model's own identity embeddings: its weights'."""
    return f"model:{model_base(model).name}:{weights_fingerprint(model)}"


def embedding_fingerprint(analyzer: FaceAnalyzer, model: str | Path | None = None) -> str:
    """The fingerprint of the embeddings ``analyzer`` makes: its fused identity's, else
    (``analyzer.identity`` None) that of the model loaded from ``model`` (None: the shipped
    model)."""
    if analyzer.identity is not None:
        return identity_fingerprint(analyzer.identity)
    if model is None:
        from facefuse.weights import shipped_model_path

        model = shipped_model_path()
    return model_fingerprint(model)


def embedding_space(analyzer: FaceAnalyzer, model: str | Path | None = None
                    ) -> EmbeddingSpace:
    """The embeddings ``analyzer`` makes (it must report the ``embedding`` task); ``model``
    as in :func:`embedding_fingerprint`.

    Raises:
        ValueError: the analyzer makes no embedding.
    """
    if "embedding" not in analyzer.tasks and "identity" not in analyzer.tasks:
        raise ValueError("the analyzer reports no embedding (ask for the 'embedding' task)")
    fingerprint = embedding_fingerprint(analyzer, model)
    threshold = float(analyzer.verification_threshold)
    if analyzer.identity is not None:
        return EmbeddingSpace(fingerprint, analyzer.identity.dim, threshold)
    from facefuse.assets import demo_image_path

    face = analyzer.analyze(demo_image_path()).largest_face()  # the head's width, measured
    if face is None or "embedding" not in face.predictions:
        raise ValueError(f"the model {model or 'shipped'} gives no identity embedding (it "
                         f"has no identity head; use the shipped identity networks, "
                         f"--identity shipped)")
    return EmbeddingSpace(fingerprint, len(face.predictions["embedding"]), threshold)
