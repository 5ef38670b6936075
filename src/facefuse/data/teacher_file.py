"""The identity teacher's file: a face-recognition teacher's descriptor per training-cache
row, keyed by the cache's sample ids (``tools/teacher_embeddings.py`` writes it,
:class:`facefuse.train.distill.TeacherEmbeddings` reads it for distillation).

An ``.npz`` without pickles: ``sample_id`` (the JSON list of sample ids, as bytes),
``embedding`` (float32, N x D) and ``meta`` (JSON bytes: the teacher, its licence, the cache,
the splits, timing). numpy only, so the teacher's own environment (dlib, without torch) can
write it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facefuse.files import atomic_path

WRITER = "tools/teacher_embeddings.py"


def write_teacher_file(path: str | Path, sample_ids: Sequence[str], vectors: np.ndarray,
                       info: dict) -> Path:
    """Write the descriptors ``vectors`` of the rows ``sample_ids`` with ``info`` (through
    the package's atomic writer); returns ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: no ".npz" added
        np.savez(f, sample_id=np.frombuffer(json.dumps(list(sample_ids)).encode(), np.uint8),
                 embedding=np.asarray(vectors, np.float32),
                 meta=np.frombuffer(json.dumps(info).encode(), np.uint8))
    return Path(path)


def read_teacher_file(path: str | Path) -> tuple[list[str], np.ndarray, dict]:
    """(sample ids, float32 descriptors N x D, meta) of a teacher file, checked.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when it is not such a file, its rows and vectors disagree, or a
            descriptor holds a non-finite value.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"identity teacher file {path} does not exist (write it "
                                f"with {WRITER})")
    try:
        with np.load(path, allow_pickle=False) as data:
            ids = json.loads(data["sample_id"].tobytes().decode())
            emb = np.asarray(data["embedding"], dtype=np.float32)
            meta = json.loads(data["meta"].tobytes().decode())
    except (KeyError, ValueError, OSError) as e:
        raise ValueError(f"{path}: not an identity teacher file ({e})") from e
    if emb.ndim != 2 or len(ids) != len(emb) or not len(emb):
        raise ValueError(f"{path}: {len(ids)} sample ids for embeddings of shape {emb.shape}")
    if not np.isfinite(emb).all():
        raise ValueError(f"{path}: embeddings hold non-finite values")
    return ids, emb, meta
