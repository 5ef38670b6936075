"""The model shipped inside the package (safetensors + JSON metadata, see docs/MODEL_CARD.md).
"""

from __future__ import annotations

from pathlib import Path

SHIPPED_MODEL = "facefuse-mtl-small"
SHIPPED_REFINER = "facefuse-landmark-refiner"


def shipped_model_path() -> Path:
    """Path (without suffix) of the shipped multi-task model."""
    base = Path(__file__).parent / SHIPPED_MODEL
    if not base.with_suffix(".safetensors").is_file() or not base.with_suffix(".json").is_file():
        raise FileNotFoundError(
            f"the shipped model {base}.safetensors/.json is missing from this installation; "
            f"pass --model CHECKPOINT (train one with `facefuse train`)")
    return base


def shipped_refiner_path() -> Path:
    """Path (without suffix) of the shipped landmark refiner (see docs/MODEL_CARD.md)."""
    base = Path(__file__).parent / SHIPPED_REFINER
    if not base.with_suffix(".safetensors").is_file() or not base.with_suffix(".json").is_file():
        raise FileNotFoundError(
            f"the shipped landmark refiner {base}.safetensors/.json is missing from this "
            f"installation; pass landmark_refiner=None (--landmark-refiner none) or a refiner "
            f"fitted with `facefuse fit-landmarks`")
    return base
