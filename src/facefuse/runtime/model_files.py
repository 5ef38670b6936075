"""A model on disk: ``BASE.json`` (its metadata: tasks and label names, input size,
normalisation, calibration, thresholds, crop margin) beside its weights, ``BASE.safetensors``
(a PyTorch checkpoint, for training; :mod:`facefuse.models.checkpoint` reads it) and/or
``BASE.onnx`` (the graph inference runs; :mod:`facefuse.runtime.graph`).

A path may be given as ``BASE`` or with any of the three suffixes. Writers here are atomic
(:func:`facefuse.files.atomic_path`: temporary files first, synced, then renamed), so an
interrupted write leaves the old files whole.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from facefuse.files import atomic_path, file_sha256, json_text, write_json_atomic
from facefuse.identity_format import read_described_json

CHECKPOINT_FORMAT = "facefuse-checkpoint-1"
MODEL_SUFFIXES = (".safetensors", ".json", ".onnx")


def model_base(path: str | Path) -> Path:
    """``path`` without a model file suffix."""
    base = Path(path)
    return base.with_suffix("") if base.suffix in MODEL_SUFFIXES else base


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """The weights (``.safetensors``) and metadata (``.json``) files of a checkpoint."""
    base = model_base(path)
    return base.with_suffix(".safetensors"), base.with_suffix(".json")


def graph_path(path: str | Path) -> Path:
    """The ONNX graph (``.onnx``) of a model."""
    return model_base(path).with_suffix(".onnx")


def read_model_meta(path: str | Path) -> dict:
    """A model's JSON metadata, checked to be a facefuse checkpoint's.

    Raises:
        FileNotFoundError: no ``BASE.json``.
        ValueError: the file is not JSON, or not a facefuse checkpoint's metadata.
    """
    return read_described_json(checkpoint_paths(path)[1], CHECKPOINT_FORMAT,
                               "a facefuse checkpoint's metadata")


def weights_fingerprint(path: str | Path) -> str:
    """The first 16 hex digits of the SHA-256 of a model's weights file (its safetensors,
    else its ONNX graph): which weights made a set of features (a clip classifier records
    it)."""
    weights = checkpoint_paths(path)[0]
    if not weights.is_file():
        weights = graph_path(path)
    return file_sha256(weights)[:16]


def write_weights_and_json(path: str | Path, write_weights: Callable[[str], None],
                           doc: dict, suffix: str = ".safetensors") -> Path:
    """Write ``BASE<suffix>`` (``write_weights(file)``) and ``BASE.json`` (``doc``)
    atomically: temp files first, then renamed. Returns the weights file."""
    base = model_base(path)
    weights, info = base.with_suffix(suffix), base.with_suffix(".json")
    with atomic_path(info) as tmp_info, atomic_path(weights) as tmp_weights:
        write_weights(str(tmp_weights))
        tmp_info.write_text(json_text(doc))
    # (the weights are renamed first, their metadata second: both or neither are new)
    return weights


def update_model_meta(path: str | Path, changes: Mapping[str, object]) -> dict:
    """Set ``changes`` in a model's JSON metadata (a value of None removes its key) through
    the one atomic writer; returns the new metadata. The weights are not touched.

    Raises:
        FileNotFoundError, ValueError: as :func:`read_model_meta`.
    """
    doc = read_model_meta(path)
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    write_json_atomic(checkpoint_paths(path)[1], doc)
    return doc
