"""DMM-CNN (Mao, Yan, Xue, Wang): joint 40-attribute classification and landmark detection.

A shared trunk feeds two attribute branches (objective attributes, and a deeper branch for
subjective ones) and a landmark regression head. CelebA rows carry attributes, 300-W rows
carry landmarks; losses are masked per sample, so batches mix both. Attribute losses are
weighted per attribute, dynamically (:mod:`facefuse.train.dynamic_weights`), and decisions use
per-attribute thresholds chosen on validation data (:mod:`facefuse.train.thresholds`).

The ablation trains, per seed: the full model; without landmarks; with static weights; with
one attribute branch. "0.5 thresholds" re-scores the full model's own test probabilities
with fixed 0.5 thresholds (the thresholds are applied after training, so no retraining is
needed for that comparison). Each run is stored when done; a rerun resumes.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from facefuse.config import save_config
from facefuse.data.augment import AugmentSpec
from facefuse.data.cache import CacheSpec, TrainingCache, build_cache
from facefuse.data.loader import DEFAULT_MEAN, DEFAULT_STD, CacheLoader
from facefuse.data.readers import SplitConfig, read_dataset
from facefuse.data.table import SampleTable
from facefuse.devices import resolve_device
from facefuse.evaluation.metrics import (
    nme_per_face,
    per_attribute_accuracy,
    per_attribute_balanced_accuracy,
)
from facefuse.experiments import EXPERIMENTS, Experiment
from facefuse.models.checkpoint import save_checkpoint
from facefuse.models.multitask import HeadSpec, ModelSpec, MultiTaskModel, build_model
from facefuse.tasks import CELEBA_ATTRIBUTES
from facefuse.train.dynamic_weights import DynamicAttributeWeights
from facefuse.train.loop import OptimConfig, make_optimizer
from facefuse.train.losses import landmark_l1
from facefuse.train.thresholds import apply_thresholds, select_thresholds

log = logging.getLogger(__name__)

#: Default grouping. Objective: the presence of a visible object, colour or unambiguous
#: state (a hat, glasses, grey hair, an open mouth). Subjective: a judgement on shape or
#: appearance that annotators disagree on (attractive, young, oval face, big nose).
OBJECTIVE_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Bald", "Bangs", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Eyeglasses", "Goatee", "Gray_Hair", "Male", "Mouth_Slightly_Open", "Mustache",
    "No_Beard", "Sideburns", "Smiling", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie")  # fmt: skip
SUBJECTIVE_ATTRIBUTES: tuple[str, ...] = (
    "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Big_Lips", "Big_Nose",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Heavy_Makeup", "High_Cheekbones",
    "Narrow_Eyes", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Straight_Hair", "Wavy_Hair", "Young")  # fmt: skip

#: variant -> (two branches, landmarks, dynamic weights, adaptive thresholds, trained run)
VARIANTS: dict[str, tuple[bool, bool, bool, bool, str]] = {
    "full": (True, True, True, True, "full"),
    "no_landmarks": (True, False, True, True, "no_landmarks"),
    "static_weights": (True, True, False, True, "static_weights"),
    "fixed_threshold": (True, True, True, False, "full"),
    "one_branch": (False, True, True, True, "one_branch"),
}


@dataclass(frozen=True)
class DMMModelConfig:
    trunk: str = "compact_cnn"
    trunk_options: dict[str, Any] = field(default_factory=lambda: {
        "widths": [16, 32, 64, 128], "feature_dim": 256})
    objective: tuple[str, ...] = OBJECTIVE_ATTRIBUTES
    subjective: tuple[str, ...] = SUBJECTIVE_ATTRIBUTES
    objective_hidden: tuple[int, ...] = (128,)
    subjective_hidden: tuple[int, ...] = (256, 128)
    landmark_hidden: tuple[int, ...] = (256,)
    dropout: float = 0.2

    def __post_init__(self) -> None:
        names = list(self.objective) + list(self.subjective)
        unknown = sorted(set(names) - set(CELEBA_ATTRIBUTES))
        if unknown:
            raise ValueError(f"unknown attributes in the grouping: {unknown}")
        missing = sorted(set(CELEBA_ATTRIBUTES) - set(names))
        twice = sorted({n for n in names if names.count(n) > 1})
        if missing or twice:
            raise ValueError(f"the grouping must place each of the 40 attributes once "
                             f"(missing {missing}, twice {twice})")


@dataclass(frozen=True)
class DMMTrainConfig:
    optim: OptimConfig = OptimConfig(optimizer="adamw", lr=2e-3, weight_decay=1e-4,
                                     lr_decay=0.9, epochs=12)
    batch_size: int = 128
    landmark_weight: float = 1.0  # landmark L1 (normalised coords) vs mean attribute BCE
    temperature: float = 2.0  # dynamic weighting temperature
    threshold_objective: str = "accuracy"
    augment: bool = True


@dataclass(frozen=True)
class DMMConfig:
    kind: str = "dmm_cnn"
    output: str = "reports/dmm_cnn"
    cache_dir: str = ".facefuse-cache"
    data_root: str = "../shared/data"
    device: str = "auto"
    workers: int | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    image_size: int = 64
    center_crop: dict[str, float] = field(default_factory=lambda: {"celeba": 0.8})
    landmark_margin: float = 0.2
    split_seed: int = 0
    variants: tuple[str, ...] = tuple(VARIANTS)
    model: DMMModelConfig = DMMModelConfig()
    train: DMMTrainConfig = DMMTrainConfig()

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}")
        if "full" not in self.variants:
            raise ValueError("variants must include 'full' (the reference model)")


def model_spec(cfg: DMMConfig, two_branches: bool, landmarks: bool) -> ModelSpec:
    m = cfg.model
    if two_branches:
        groups = {"objective": [CELEBA_ATTRIBUTES.index(a) for a in m.objective],
                  "subjective": [CELEBA_ATTRIBUTES.index(a) for a in m.subjective]}
        attr = HeadSpec(40, (), m.dropout, "branched", {
            "groups": groups, "branch_hidden": {"objective": list(m.objective_hidden),
                                                "subjective": list(m.subjective_hidden)}})
    else:
        attr = HeadSpec(40, m.subjective_hidden, m.dropout)
    heads = {"attributes": attr}
    if landmarks:
        heads["landmarks"] = HeadSpec(136, m.landmark_hidden, m.dropout)
    options = {"image_size": cfg.image_size, **m.trunk_options}
    return ModelSpec(m.trunk, {k: tuple(v) if isinstance(v, list) else v
                               for k, v in options.items()}, heads)


def attribute_loss(logits: torch.Tensor, target: torch.Tensor,
                   weights: torch.Tensor) -> torch.Tensor:
    """Weighted BCE over the labelled entries: sum(w_j * bce_ij) / #labelled entries."""
    known = target >= 0
    if not known.any():
        return logits.sum() * 0.0
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.clamp(min=0).float(),
                                             reduction="none")
    return (bce * weights[None, :] * known).sum() / known.sum()


@torch.no_grad()
def collect(model: MultiTaskModel, loader: CacheLoader) -> dict[str, np.ndarray]:
    """Attribute probabilities and targets, landmark predictions and targets."""
    model.eval()
    probs, attr_t, lm_p, lm_t = [], [], [], []
    for batch in loader:
        out = model(batch.images)
        a = batch.masks["attributes"]
        if a.any():
            probs.append(torch.sigmoid(out["attributes"][a].float()).cpu().numpy())
            attr_t.append(batch.labels["attributes"][a].cpu().numpy())
        lm = batch.masks["landmarks"]
        if "landmarks" in out and lm.any():
            lm_p.append(out["landmarks"][lm].float().cpu().numpy().reshape(-1, 68, 2))
            lm_t.append(batch.labels["landmarks"][lm].cpu().numpy())
    res = {"probabilities": np.concatenate(probs), "attributes": np.concatenate(attr_t)}
    if lm_p:
        res["landmarks_pred"] = np.concatenate(lm_p)
        res["landmarks"] = np.concatenate(lm_t)
    return res


def per_attribute_val_loss(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    p = np.clip(probs, 1e-6, 1 - 1e-6)
    known = targets >= 0
    bce = -(targets * np.log(p) + (1 - targets) * np.log(1 - p))
    return np.maximum((bce * known).sum(0) / np.maximum(known.sum(0), 1), 1e-6)


def train_run(cfg: DMMConfig, cache: TrainingCache, name: str, seed: int,
              device: torch.device, folder: Path) -> dict[str, Any]:
    """Train one ablation run (or load its stored result)."""
    result_file = folder / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text()) | {
            "arrays": dict(np.load(folder / "predictions.npz"))}
    two_branches, landmarks, dynamic, _, _ = VARIANTS[name]
    t = cfg.train
    torch.manual_seed(seed)
    model = build_model(model_spec(cfg, two_branches, landmarks)).to(device)
    has_lm = cache.table.present("landmarks")
    use = cache.valid & (cache.table.present("attributes") | (has_lm & landmarks))
    rows = {s: np.flatnonzero(use & (cache.table.split == s)) for s in ("train", "val", "test")}
    tasks = ("attributes", "landmarks")
    augment = AugmentSpec(max_rotation=10, max_scale=0.1, max_shift=0.05) if t.augment \
        else None
    train = CacheLoader(cache, rows["train"], t.batch_size, seed=seed, device=device,
                        augment=augment, tasks=tasks)
    val = CacheLoader(cache, rows["val"], 512, shuffle=False, device=device, tasks=tasks)
    test = CacheLoader(cache, rows["test"], 512, shuffle=False, device=device, tasks=tasks)
    optimizer, scheduler = make_optimizer(model.parameters(), t.optim)
    weights = DynamicAttributeWeights(40, t.temperature)
    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    for epoch in range(1, t.optim.epochs + 1):
        model.train()
        w = torch.tensor(weights.weights, dtype=torch.float32, device=device)
        sums = {"attributes": 0.0, "landmarks": 0.0}
        steps = 0
        for batch in train:
            out = model(batch.images)
            loss = attribute_loss(out["attributes"], batch.labels["attributes"], w)
            sums["attributes"] += float(loss.detach())
            if landmarks and batch.masks["landmarks"].any():
                lm = landmark_l1(out["landmarks"], batch.labels["landmarks"],
                                 batch.masks["landmarks"])
                sums["landmarks"] += float(lm.detach())
                loss = loss + t.landmark_weight * lm
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
        scheduler.step()
        v = collect(model, val)
        val_loss = per_attribute_val_loss(v["probabilities"], v["attributes"])
        entry = {"epoch": epoch, "train_loss": {k: s / max(steps, 1) for k, s in sums.items()},
                 "val_attribute_loss": float(val_loss.mean()), "weights": weights.weights
                 .round(4).tolist()}
        if "landmarks" in v:
            entry["val_nme"] = float(nme_per_face(v["landmarks_pred"], v["landmarks"]).mean())
        if dynamic:
            weights.update(val_loss)
        history.append(entry)
        log.info("%s seed %d epoch %d: %s", name, seed, epoch, entry)
    v = collect(model, val)
    thresholds = select_thresholds(v["probabilities"], v["attributes"], t.threshold_objective)
    arrays = {f"test_{k}": a for k, a in collect(model, test).items()}
    arrays["thresholds"] = thresholds
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "predictions.npz", **arrays)
    save_checkpoint(model, folder / "model",
                    tasks={"attributes": list(CELEBA_ATTRIBUTES),
                           **({"landmarks": 68} if landmarks else {})},
                    thresholds=thresholds.round(2).tolist(),
                    attribute_groups={"objective": list(cfg.model.objective),
                                      "subjective": list(cfg.model.subjective)},
                    input_size=cfg.image_size,
                    normalisation={"mean": list(DEFAULT_MEAN), "std": list(DEFAULT_STD)},
                    crop={"landmark_margin": cfg.landmark_margin,
                          "center_crop": cfg.center_crop},
                    landmark_coordinates="0..1 of the input crop (x right, y down)",
                    training_data=cache.table.datasets(), seed=seed, variant=name)
    result = {"variant": name, "seed": seed, "seconds": round(time.perf_counter() - start, 1),
              "history": history, "rows": {k: int(len(r)) for k, r in rows.items()}}
    result_file.write_text(json.dumps(result, indent=1))
    return result | {"arrays": arrays}


def score_variant(name: str, run: dict[str, Any]) -> dict[str, Any]:
    """Metrics of one variant from its trained run's stored test predictions."""
    _, _, _, adaptive, _ = VARIANTS[name]
    a = run["arrays"]
    thresholds = a["thresholds"] if adaptive else np.full(40, 0.5)
    decisions = apply_thresholds(a["test_probabilities"], thresholds)
    acc = per_attribute_accuracy(decisions, a["test_attributes"])
    bal = per_attribute_balanced_accuracy(decisions, a["test_attributes"])
    out: dict[str, Any] = {"variant": name, "seed": run["seed"],
                           "mean_accuracy": float(np.nanmean(acc)),
                           "mean_balanced_accuracy": float(np.nanmean(bal)),
                           "per_attribute_accuracy": acc.tolist(),
                           "per_attribute_balanced_accuracy": bal.tolist(),
                           "thresholds": np.asarray(thresholds).tolist()}
    if "test_landmarks_pred" in a:
        nme = nme_per_face(a["test_landmarks_pred"], a["test_landmarks"])
        out.update(nme=float(nme.mean()), failure_rate=float((nme > 0.08).mean()),
                   nme_per_face=nme.tolist())
    return out


def load_table(cfg: DMMConfig) -> tuple[SampleTable, list[dict]]:
    splits = SplitConfig(seed=cfg.split_seed)
    results = [read_dataset(n, cfg.data_root, splits) for n in ("celeba", "300w")]
    counts = [{"dataset": r.name, "images": len(r.table), "skipped": len(r.skipped),
               **{s: int((r.table.split == s).sum()) for s in ("train", "val", "test")}}
              for r in results]
    return SampleTable.concat([r.table for r in results]), counts


def run_dmm(cfg: DMMConfig, progress: bool = False) -> Path:
    """Train and score every variant for every seed; write the report folder."""
    from tqdm.auto import tqdm

    from facefuse.evaluation.dmm_report import write_report

    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    device = resolve_device(cfg.device)
    start = time.perf_counter()
    table, counts = load_table(cfg)
    cache = build_cache(table, cfg.cache_dir, CacheSpec(size=cfg.image_size,
                                                        landmark_margin=cfg.landmark_margin,
                                                        center_crop=cfg.center_crop),
                        name="dmm", workers=cfg.workers, progress=progress)
    trained = sorted({VARIANTS[v][4] for v in cfg.variants})
    bar = tqdm(total=len(trained) * len(cfg.seeds), desc="dmm_cnn", unit="run",
               disable=not progress)
    runs: dict[tuple[str, int], dict] = {}
    for seed in cfg.seeds:
        for name in trained:
            runs[(name, seed)] = train_run(cfg, cache, name, seed, device,
                                           out / "runs" / f"{name}-seed{seed}")
            bar.update(1)
    bar.close()
    scores = [score_variant(v, runs[(VARIANTS[v][4], s)]) for v in cfg.variants
              for s in cfg.seeds]
    positive_rate = _positive_rate(cache)
    write_report(out, cfg, scores, runs, positive_rate, counts,
                 {"total": time.perf_counter() - start}, device)
    return out


def _positive_rate(cache: TrainingCache) -> np.ndarray:
    train = cache.table.split == "train"
    attrs = cache.table.labels["attributes"][train & cache.table.present("attributes")]
    known = attrs >= 0
    return (attrs == 1).sum(0) / np.maximum(known.sum(0), 1)


EXPERIMENTS.add("dmm_cnn", Experiment(DMMConfig, run_dmm))
