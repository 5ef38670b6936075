"""The models shipped inside the package (docs/MODEL_CARD.md): the multi-task model (an ONNX
graph with its JSON metadata), the landmark refiner (safetensors + JSON, numpy) and the
identity networks (ONNX graphs, their JSON descriptions and their fusion).
"""

from __future__ import annotations

from pathlib import Path

SHIPPED_MODEL = "facefuse-mtl-small"
SHIPPED_REFINER = "facefuse-landmark-refiner"
#: the identity networks and their fusion (docs/MODEL_CARD.md, "Identity")
SHIPPED_IDENTITY = Path(__file__).parent / "identity" / "facefuse-identity.json"
#: heads on the identity networks' features for the other tasks (docs/MODEL_CARD.md)
SHIPPED_IDENTITY_HEADS = Path(__file__).parent / "identity" / "facefuse-identity-heads.json"


def _shipped(name: str, what: str, instead: str, weights: str = ".safetensors") -> Path:
    base = Path(__file__).parent / name
    if not base.with_suffix(weights).is_file() or not base.with_suffix(".json").is_file():
        raise FileNotFoundError(f"the shipped {what} {base}{weights}/.json is missing from "
                                f"this installation; {instead}")
    return base


def shipped_model_path() -> Path:
    """Path (without suffix) of the shipped multi-task model (its ``.onnx`` and ``.json``)."""
    return _shipped(SHIPPED_MODEL, "model",
                    "pass --model CHECKPOINT (train one with `facefuse train`)", ".onnx")


def shipped_refiner_path() -> Path:
    """Path (without suffix) of the shipped landmark refiner (see docs/MODEL_CARD.md)."""
    return _shipped(SHIPPED_REFINER, "landmark refiner",
                    "pass landmark_refiner=None (--landmark-refiner none) or a refiner "
                    "fitted with `facefuse fit-landmarks`")


def shipped_identity_path() -> Path:
    """The fused identity description shipped in the package (its networks beside it)."""
    if not SHIPPED_IDENTITY.is_file():
        raise FileNotFoundError(f"the shipped identity networks ({SHIPPED_IDENTITY}) are "
                                f"missing from this installation; pass identity=None "
                                f"(--identity none) to use the model's own embedding")
    return SHIPPED_IDENTITY


def shipped_identity_heads_path() -> Path:
    """The heads on the identity networks' features shipped in the package (their
    safetensors beside them)."""
    if not SHIPPED_IDENTITY_HEADS.is_file() or \
            not SHIPPED_IDENTITY_HEADS.with_suffix(".safetensors").is_file():
        raise FileNotFoundError(f"the shipped identity heads ({SHIPPED_IDENTITY_HEADS}) are "
                                f"missing from this installation; pass identity_heads=None "
                                f"(--identity-heads none) to use the model's heads alone")
    return SHIPPED_IDENTITY_HEADS
