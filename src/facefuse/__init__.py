"""facefuse: multi-task facial computing (identity, age, gender, race, emotion, attributes,
landmarks): dataset readers, training, cross-task features and fusion, face analysis.

``from facefuse import FaceAnalyzer`` is the analyzer's short path; it is imported on first
use, so ``import facefuse`` (and the CLI's start) does not load torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["FaceAnalyzer", "FaceResult", "ImageResult", "__version__"]

_ANALYZER_NAMES = ("FaceAnalyzer", "FaceResult", "ImageResult")


def __getattr__(name: str) -> Any:
    if name in _ANALYZER_NAMES:
        from facefuse.inference import analyzer

        return getattr(analyzer, name)
    raise AttributeError(f"module 'facefuse' has no attribute {name!r}")
