"""Checkpoints: weights in safetensors, everything else in JSON beside them.

``<path>.safetensors`` holds the state dict; ``<path>.json`` holds the model spec (trunk,
options, heads), the task label names, input size, normalisation, the training data and any
extra metadata. Nothing is pickled, so loading an untrusted checkpoint runs no code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from facefuse.models.multitask import ModelSpec, MultiTaskModel, build_model
from facefuse.runtime.model_files import CHECKPOINT_FORMAT as FORMAT
from facefuse.runtime.model_files import checkpoint_paths, read_model_meta, write_weights_and_json


@dataclass
class Checkpoint:
    """A loaded model with its metadata."""

    model: MultiTaskModel
    meta: dict


def save_checkpoint(model: MultiTaskModel, path: str | Path, **meta: object) -> Path:
    """Write ``path.safetensors`` and ``path.json`` (atomically: temp files, then rename)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    doc = {"format": FORMAT, "spec": model.spec.to_dict(), **meta}
    return write_weights_and_json(path, lambda f: save_file(state, f), doc)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model from its JSON spec and load its safetensors weights."""
    weights = checkpoint_paths(path)[0]
    if not weights.is_file():
        raise FileNotFoundError(f"checkpoint file {weights} does not exist")
    meta = read_model_meta(path)
    model = build_model(ModelSpec.from_dict(meta["spec"]))
    state = load_file(str(weights), device=str(device))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights}: weights do not fit the spec (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return Checkpoint(model.to(device).eval(), meta)
