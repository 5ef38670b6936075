"""Tiny training configs, runs and checkpoints on fake data, which tests in several folders
start from (an MTL config, a one-epoch run, a seeded checkpoint, the Li and Zhu protocol)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

import facefuse.train.mtl as mtl
from facefuse.config import load_config
from facefuse.models.checkpoint import save_checkpoint
from facefuse.models.multitask import HeadSpec, ModelSpec, build_model
from tests.fakes import write_utkface

LABELS = {"age": [], "gender": ["male", "female"]}
PEOPLE, PER_PERSON = 6, 10


def write_config(tmp: Path, data: Path, extra: str = "") -> Path:
    """A tiny MTL config over the fake datasets under ``data`` (``extra`` YAML appended);
    its run goes to ``tmp/run``."""
    cfg = tmp / "mtl.yaml"
    cfg.write_text(f"""kind: mtl
output: {tmp / 'run'}
cache_dir: {tmp / 'cache'}
data_root: {data}
device: cpu
workers: 1
trunk: tiny_cnn
image_size: 32
sampling: {{utkface: 2.0, fer2013: 1.0, celeba: 1.0, lfw: 1.0, 300w: 1.0}}
epoch_size: 96
identity_embedding: 8
optim: {{epochs: 2}}
batch_size: 16
{extra}""")
    return cfg


def trained_start(tmp: Path, data: Path, tasks: str) -> Path:
    """A one-epoch run of ``tasks`` (YAML list) moved to ``tmp/src``, to fine-tune from:
    returns its final checkpoint's path (``tmp/run`` is free again)."""
    first = write_config(tmp, data, f"tasks: {tasks}\noptim: {{epochs: 1}}\n")
    mtl.train_mtl(load_config(mtl.MTLConfig, first))
    (tmp / "run").rename(tmp / "src")
    return tmp / "src" / "final"


def age_only_run(tmp: Path, images: int) -> Path:
    """A tiny age model trained for one epoch on ``images`` fake UTKFace photos; its config."""
    write_utkface(tmp / "data", n=images)
    cfg = write_config(tmp, tmp / "data", "datasets: [utkface]\ntasks: [age]\n"
                       "sampling: {utkface: 1.0}\noptim: {epochs: 1}\n")
    mtl.train_mtl(load_config(mtl.MTLConfig, cfg))
    return cfg


def tiny_checkpoint(path: Path, seed: int, heads: dict | None = None, **meta) -> Path:
    """A tiny age+gender checkpoint with seed-dependent weights (and batch-norm statistics)."""
    torch.manual_seed(seed)
    model = build_model(ModelSpec("tiny_cnn", {"image_size": 32},
                                  heads or {"age": HeadSpec(1), "gender": HeadSpec(2)}))
    model.train()
    with torch.no_grad():  # move the running statistics away from their initial values
        model(torch.randn(4, 3, 32, 32) + seed)
    meta = {"tasks": LABELS, "input_size": 32, "normalisation": {"mean": [0.5] * 3,
                                                                 "std": [0.5] * 3}} | meta
    save_checkpoint(model, path, **meta)
    return path


def write_manifest(root: Path) -> Path:
    """The Li and Zhu manifest: ``PEOPLE`` tinted people of ``PER_PERSON`` photos each, with
    identity, age, gender and race on every photo."""
    rng = np.random.default_rng(0)
    lines = ["image,identity,age,gender,race"]
    for p in range(PEOPLE):
        tint = rng.integers(0, 256, 3)
        for k in range(PER_PERSON):
            arr = np.clip(rng.normal(tint, 30, (20, 20, 3)), 0, 255).astype(np.uint8)
            path = root / "img" / f"p{p}_{k}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path)
            lines.append(f"img/p{p}_{k}.png,person{p},{10 + 15 * p + k},{p % 2},{p % 5}")
    (root / "faces.csv").write_text("\n".join(lines) + "\n")
    return root / "faces.csv"


def tiny_config(tmp_path: Path) -> Path:
    """A tiny Li and Zhu experiment config (three seeds, one CNN epoch) over a fresh
    manifest under ``tmp_path/data``; its report goes to ``tmp_path/report``."""
    manifest = write_manifest(tmp_path / "data")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"""kind: li_zhu
output: {tmp_path / 'report'}
cache_dir: {tmp_path / 'cache'}
device: cpu
workers: 1
seeds: [0, 1, 2]
data: {{manifest: {manifest}, identity_fractions: [0.6, 0.2, 0.2]}}
extractor:
  image_size: 16
  channels: [4, 8, 8]
  feature_dims: {{identity: 20}}
  default_feature_dim: 5
  batch_size: 16
  optim: {{epochs: 1}}
probe: {{hidden: [8, 8], epochs: 2, batch_size: 16}}
""")
    return cfg


def write_dmm_config(tmp: Path, body: str) -> Path:
    """``tmp/dmm.yaml``: a DMM-CNN run on the fake data in ``tmp/data`` writing under
    ``tmp`` (report, cache), on the CPU with one worker; ``body``: the rest of the YAML."""
    cfg = tmp / "dmm.yaml"
    cfg.write_text(f"""kind: dmm_cnn
output: {tmp / 'report'}
cache_dir: {tmp / 'cache'}
data_root: {tmp / 'data'}
device: cpu
workers: 1
{body}""")
    return cfg
