"""Models: trunks (image -> feature vector), heads (feature vector -> task outputs), the
multi-task model that joins them, and checkpoints.

Trunk families register themselves on import; to add one, copy ``paper_cnn.py`` and import
it below.
"""

from facefuse.models import paper_cnn  # noqa: F401  (registers lizhu_cnn, tiny_cnn)
from facefuse.models.multitask import ModelSpec, MultiTaskModel, build_model
from facefuse.models.trunks import TRUNKS

__all__ = ["TRUNKS", "ModelSpec", "MultiTaskModel", "build_model"]
