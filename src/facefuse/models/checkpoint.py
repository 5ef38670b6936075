"""Checkpoints: weights in safetensors, everything else in JSON beside them.

``<path>.safetensors`` holds the state dict; ``<path>.json`` holds the model spec (trunk,
options, heads), the task label names, input size, normalisation, the training data and any
extra metadata. Nothing is pickled, so loading an untrusted checkpoint runs no code.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from facefuse.models.multitask import ModelSpec, MultiTaskModel, build_model

FORMAT = "facefuse-checkpoint-1"


@dataclass
class Checkpoint:
    """A loaded model with its metadata."""

    model: MultiTaskModel
    meta: dict


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    base = Path(path)
    if base.suffix in (".safetensors", ".json"):
        base = base.with_suffix("")
    return base.with_suffix(".safetensors"), base.with_suffix(".json")


def weights_fingerprint(path: str | Path) -> str:
    """The first 16 hex digits of the SHA-256 of a checkpoint's weights file: which weights
    made a set of features (a clip classifier records it)."""
    from facefuse.files import file_sha256

    return file_sha256(checkpoint_paths(path)[0])[:16]


def write_weights_and_json(path: str | Path, write_weights: Callable[[str], None],
                           doc: dict) -> Path:
    """Write ``path.safetensors`` (``write_weights(file)``) and ``path.json`` (``doc``)
    atomically: temp files first, then renamed. Returns the weights file."""
    weights, info = checkpoint_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tmp_w, tmp_i = weights.with_suffix(".safetensors.tmp"), info.with_suffix(".json.tmp")
    write_weights(str(tmp_w))
    tmp_i.write_text(json.dumps(doc, indent=1, default=str))
    tmp_w.replace(weights)
    tmp_i.replace(info)
    return weights


def save_checkpoint(model: MultiTaskModel, path: str | Path, **meta: object) -> Path:
    """Write ``path.safetensors`` and ``path.json`` (atomically: temp files, then rename)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    doc = {"format": FORMAT, "spec": model.spec.to_dict(), **meta}
    return write_weights_and_json(path, lambda f: save_file(state, f), doc)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model from its JSON spec and load its safetensors weights."""
    weights, info = checkpoint_paths(path)
    for f in (weights, info):
        if not f.is_file():
            raise FileNotFoundError(f"checkpoint file {f} does not exist")
    meta = json.loads(info.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{info}: not a facefuse checkpoint (format {meta.get('format')!r})")
    model = build_model(ModelSpec.from_dict(meta["spec"]))
    state = load_file(str(weights), device=str(device))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights}: weights do not fit the spec (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return Checkpoint(model.to(device).eval(), meta)
