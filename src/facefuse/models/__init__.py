"""Models: trunks (image -> feature vector), heads (feature vector -> task outputs), the
multi-task model that joins them, and checkpoints.

Trunk families register themselves on import; to add one, copy ``compact_cnn.py`` and import
it below.
"""

from facefuse.models import (  # noqa: F401  (registers)
    compact_cnn,
    dlib_resnet,
    margin,
    paper_cnn,
    sface,
    timm_trunks,
)
from facefuse.models.multitask import ModelSpec, MultiTaskModel, build_model
from facefuse.models.trunks import TRUNKS

__all__ = ["TRUNKS", "ModelSpec", "MultiTaskModel", "build_model"]
