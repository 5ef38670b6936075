"""Identity distillation: pull the model's identity embedding towards a teacher's.

A face-recognition teacher trained on many identities describes every face image, labelled
or not; the student's identity embedding (the margin head's normalised feature, the vector
the analyzer returns and ``verify``/``search`` compare) is trained to point the same way:
``loss = mean(1 - cos(student, teacher))`` over the rows the teacher described. The
student's embedding width must equal the teacher's.

The targets are the teacher's descriptors *centred*: less their mean over the file, then
unit length. dlib's descriptors share a large common component (the mean vector's norm is
0.91 on the shipped model's training photos, and two random faces have a cosine of 0.83),
so uncentred, a student that matches every descriptor to a cosine of 0.93 still tells people
apart no better than before (LFW 71.3 %, measured); centred, two random faces have a cosine
near 0 and the loss weighs what separates people.

The teacher's descriptors are computed once, outside training, by
``tools/teacher_embeddings.py`` into an ``.npz`` keyed by the cache's sample ids
(:mod:`facefuse.data.teacher_file`); the trainer
looks each batch row up by its cache index (:func:`align_to_cache`), so the flip and the other
augmentations act on the student's input only (the teacher's descriptor of a face is close
to that of its mirror image; the tool can average the two with ``--flip``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facefuse.data.teacher_file import read_teacher_file
from facefuse.train.losses import masked_mean


@dataclass(frozen=True)
class TeacherEmbeddings:
    """Unit-length teacher descriptors by sample id, with the tool's metadata."""

    sample_id: np.ndarray  # (N,) object
    embedding: np.ndarray  # (N, D) float32
    meta: dict

    @property
    def dim(self) -> int:
        return int(self.embedding.shape[1])

    @classmethod
    def load(cls, path: str | Path, centre: bool = True) -> TeacherEmbeddings:
        """Read a teacher file (:mod:`facefuse.data.teacher_file`); with ``centre``, the
        descriptors less their mean (see the module docstring), unit length.

        Raises:
            FileNotFoundError: when ``path`` does not exist.
            ValueError: when it is not such a file, or its rows and vectors disagree.
        """
        ids, emb, meta = read_teacher_file(path)
        if centre:
            if len(emb) < 2:
                raise ValueError(f"{path}: centring needs at least 2 descriptors")
            mean = emb.mean(axis=0)
            meta = {**meta, "centred": True, "mean_norm": round(float(np.linalg.norm(mean)), 4)}
            emb = emb - mean
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        return cls(np.asarray(ids, dtype=object), emb / np.maximum(norms, 1e-12), meta)

    def align_to_cache(self, sample_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Targets and presence per cache row: ``(len(sample_ids), D)`` float32 (zeros where
        absent) and a boolean mask of the rows the teacher described."""
        position = {sid: i for i, sid in enumerate(self.sample_id.tolist())}
        where = np.array([position.get(s, -1) for s in sample_ids.tolist()], dtype=np.int64)
        present = where >= 0
        targets = np.zeros((len(sample_ids), self.dim), np.float32)
        targets[present] = self.embedding[where[present]]
        return targets, present


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor
                      ) -> torch.Tensor:
    """Mean cosine distance ``1 - cos(student, teacher)`` over the rows where ``mask`` is
    true (an exact zero, still on the graph, where none is)."""
    cos = F.cosine_similarity(student.float(), teacher.float(), dim=1)
    return masked_mean(1.0 - cos, mask)
