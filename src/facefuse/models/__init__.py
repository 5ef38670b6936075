"""Models: trunks (image -> feature vector), heads (feature vector -> task outputs), the
multi-task model that joins them, and checkpoints.

Trunk families register themselves on import; to add one, copy ``compact_cnn.py`` and import
it below.
"""

from facefuse.models import compact_cnn, margin, paper_cnn, timm_trunks  # noqa: F401  (registers)
from facefuse.models.multitask import ModelSpec, MultiTaskModel, build_model
from facefuse.models.trunks import TRUNKS

__all__ = ["TRUNKS", "ModelSpec", "MultiTaskModel", "build_model"]
