"""DMM-CNN (Mao, Yan, Xue, Wang): joint 40-attribute classification and landmark detection.

A shared trunk feeds two attribute branches (objective attributes, and a deeper branch for
subjective ones) and a landmark regression head. CelebA rows carry attributes, 300-W rows
carry landmarks; losses are masked per sample, so batches mix both. Attribute losses are
weighted per attribute, dynamically (DWA over each attribute's validation loss,
:class:`facefuse.train.weighting.DynamicWeightAverage`), and decisions use per-attribute
thresholds chosen on validation data (:mod:`facefuse.train.thresholds`).

The ablation trains, per seed: the full model; without landmarks; with static weights; with
one attribute branch. "0.5 thresholds" re-scores the full model's own test probabilities
with fixed 0.5 thresholds (the thresholds are applied after training, so no retraining is
needed for that comparison). Each run is a recipe of the one training loop
(:mod:`facefuse.train.engine`): it keeps its state after every epoch and is stored when done,
so a rerun resumes (no finished run or epoch is trained again); under ``torchrun`` every run
trains with DDP, rank 0 writing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facefuse.config import to_dict
from facefuse.data.augment import AugmentSpec
from facefuse.data.cache import CacheSpec, TrainingCache, build_cache
from facefuse.data.loader import CacheLoader
from facefuse.data.readers import SplitConfig, read_dataset
from facefuse.data.table import SampleTable
from facefuse.evaluation.metrics import (
    nme_per_face,
    per_attribute_accuracy,
    per_attribute_balanced_accuracy,
)
from facefuse.experiments.launch import experiment_run
from facefuse.experiments.registry import EXPERIMENTS, Experiment
from facefuse.files import write_json_atomic
from facefuse.models.checkpoint import save_checkpoint
from facefuse.models.multitask import HeadSpec, ModelSpec, MultiTaskModel, build_model
from facefuse.tasks import CELEBA_ATTRIBUTES
from facefuse.train.distributed import (
    DistInfo,
    from_rank0,
    rank0_first,
)
from facefuse.train.engine import STATE_FILE, Engine, Loss, Recipe, static_weighting
from facefuse.train.frozen_prefix import prefix_inputs, start_block, trunk_normalisation
from facefuse.train.loop import OptimConfig, make_optimizer
from facefuse.train.losses import landmark_l1
from facefuse.train.mtl_data import hold_in_memory
from facefuse.train.thresholds import apply_thresholds, select_thresholds
from facefuse.train.weighting import DynamicWeightAverage

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

    @property
    def frozen_prefix(self) -> bool:
        """Whether the trunk trains from a start block, on its frozen prefix's maps."""
        return bool(self.trunk_options.get("start_block"))

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
    # the pretrained trunk's learning rate, as a fraction of the heads' (1: the same; 0: the
    # trunk stays as it was loaded, heads on its features)
    trunk_lr_scale: float = 1.0
    bf16: bool = True  # autocast on CUDA
    channels_last: bool = True  # on CUDA


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
    # datasets cropped the way the analyzer crops (its detector's face, the landmark box
    # widened by landmark_margin), as the shipped model trains; others: the rule above
    detector_crop: tuple[str, ...] = ()
    landmark_margin: float = 0.2
    split_seed: int = 0
    variants: tuple[str, ...] = tuple(VARIANTS)
    # the training cache's images in RAM (None: when they take at most a quarter of it)
    cache_in_memory: bool | None = None
    model: DMMModelConfig = DMMModelConfig()
    train: DMMTrainConfig = DMMTrainConfig()

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}")
        if "full" not in self.variants:
            raise ValueError("variants must include 'full' (the reference model)")
        if self.model.frozen_prefix and self.train.augment:
            raise ValueError("a trunk with a start_block trains on its frozen prefix's maps, "
                             "computed once, which cannot be augmented: set "
                             "train.augment: false")
        unknown = sorted(set(self.detector_crop) - {"celeba"})
        if unknown:
            raise ValueError(f"detector_crop: only celeba's rows are cropped by the detector "
                             f"(300-W's by their landmarks), got {unknown}")
        if not 0 <= self.train.trunk_lr_scale <= 1:
            raise ValueError(f"train.trunk_lr_scale must be in [0, 1], "
                             f"got {self.train.trunk_lr_scale}")


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


class DMMRecipe(Recipe):
    """One ablation run: weighted attribute BCE (the weights from each attribute's validation
    loss trend, when the variant is dynamic) plus the landmark L1 where a batch has
    landmarks."""

    def __init__(self, cfg: DMMConfig, cache: TrainingCache, name: str, seed: int,
                 device: torch.device, dist: DistInfo, progress: bool = False) -> None:
        two_branches, self.landmarks, self.dynamic, _, _ = VARIANTS[name]
        t = cfg.train
        torch.manual_seed(seed)
        self.model = build_model(model_spec(cfg, two_branches, self.landmarks)).to(device)
        has_lm = cache.table.present("landmarks")
        use = cache.valid & (cache.table.present("attributes") | (has_lm & self.landmarks))
        self.rows = {s: np.flatnonzero(use & (cache.table.split == s))
                     for s in ("train", "val", "test")}
        augment = AugmentSpec(max_rotation=10, max_scale=0.1, max_shift=0.05) if t.augment \
            else None
        self.bf16, self.channels_last = t.bf16, t.channels_last
        self.cache, self.device, self.trunk_lr_scale = cache, device, t.trunk_lr_scale
        self.inputs = None if start_block(self.model.trunk) == 0 else rank0_first(
            dist, lambda: prefix_inputs(self.model.trunk, cache, device,
                                        progress=progress and dist.is_main))
        # a last batch of one row is dropped: batch norm cannot train on a single row
        lone_last = len(self.rows["train"]) // dist.world_size % t.batch_size == 1
        self.train = self.loader("train", t.batch_size, shuffle=True, seed=seed,
                                 augment=augment, shard=(dist.rank, dist.world_size),
                                 channels_last=t.channels_last and device.type == "cuda",
                                 drop_last=lone_last)
        self.val = self.loader("val", 512, shuffle=False)
        self.optim, self.epochs = t.optim, t.optim.epochs
        self.attribute_weights = DynamicWeightAverage(list(CELEBA_ATTRIBUTES),
                                                      temperature=t.temperature)
        self.weighting = static_weighting({"attributes": 1.0, "landmarks": t.landmark_weight})
        self.config = {k: v for k, v in to_dict(cfg).items() if k not in (
            "output", "cache_dir", "data_root", "device", "workers", "seeds", "variants",
            "cache_in_memory")}
        self.config.update(variant=name, seed=seed)
        self.weights = np.ones(40)
        self.w = torch.ones(40, device=device)

    def loader(self, split: str, batch_size: int, shuffle: bool, **options: Any
               ) -> CacheLoader:
        """Batches of a split: the cache's images, normalised for the trunk, or its frozen
        prefix's maps."""
        mean, std = trunk_normalisation(self.model.trunk)
        return CacheLoader(self.cache, self.rows[split], batch_size, shuffle=shuffle,
                           device=self.device, tasks=("attributes", "landmarks"),
                           mean=mean, std=std, inputs=self.inputs, **options)

    def optimizers(self, params: list[nn.Parameter]
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """The trunk's parameters at ``trunk_lr_scale`` times the heads' learning rate."""
        trunk = {id(p) for p in self.model.trunk.parameters()}
        return make_optimizer(params, self.optim,
                              lr_scale=lambda p: self.trunk_lr_scale if id(p) in trunk else 1.0)

    def loss_names(self, epoch: int) -> list[str]:
        return ["attributes", "landmarks"] if self.landmarks else ["attributes"]

    def start_epoch(self, epoch: int) -> dict[str, Any]:
        current = self.attribute_weights.current()
        self.weights = np.asarray([current[a] for a in CELEBA_ATTRIBUTES])  # float64, logged
        self.w = torch.tensor(self.weights, dtype=torch.float32, device=self.device)
        return {}

    def batches(self, epoch: int) -> CacheLoader:
        return self.train

    def losses(self, output: dict[str, torch.Tensor], batch: Any, epoch: int
               ) -> dict[str, Loss]:
        terms = {"attributes": Loss(attribute_loss(output["attributes"],
                                                   batch.labels["attributes"], self.w),
                                    batch.masks["attributes"].sum())}
        mask = batch.masks["landmarks"]
        if self.landmarks and mask.any():
            terms["landmarks"] = Loss(landmark_l1(output["landmarks"],
                                                  batch.labels["landmarks"], mask), mask.sum())
        return terms

    def validate(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        v = collect(model, self.val)
        val_loss = per_attribute_val_loss(v["probabilities"], v["attributes"])
        entry = {"val_attribute_loss": float(val_loss.mean()),
                 "weights": self.weights.round(4).tolist(),
                 "val_losses": val_loss.tolist()}
        if "landmarks" in v:
            entry["val_nme"] = float(nme_per_face(v["landmarks_pred"], v["landmarks"]).mean())
        return entry

    def end_epoch(self, epoch: int, entry: dict[str, Any]) -> None:
        val_loss = entry.pop("val_losses")  # for the weights, not the log
        if self.dynamic:
            self.attribute_weights.end_epoch(dict(zip(CELEBA_ATTRIBUTES, val_loss, strict=True)))

    def state_dict(self) -> dict[str, Any]:
        return {"train": self.train.state_dict(),
                "attribute_weights": self.attribute_weights.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.train.load_state_dict(state["train"])
        self.attribute_weights.load_state_dict(state["attribute_weights"])


def train_variant(cfg: DMMConfig, cache: TrainingCache, name: str, seed: int,
                  device: torch.device, folder: Path, dist: DistInfo | None = None,
                  progress: bool = False) -> dict[str, Any]:
    """Train one ablation run, resuming its saved state (or load its stored result); rank 0
    stores the result and returns it, the other ranks return the training's history."""
    dist = dist or DistInfo()
    result_file = folder / "result.json"
    if from_rank0(dist, result_file.is_file()):
        return json.loads(result_file.read_text()) | {
            "arrays": dict(np.load(folder / "predictions.npz"))}
    start = time.perf_counter()
    recipe = DMMRecipe(cfg, cache, name, seed, device, dist, progress)
    history = Engine(recipe, device, folder, f"{name}-seed{seed}", progress).fit()
    result = {"variant": name, "seed": seed, "history": history,
              "rows": {k: int(len(r)) for k, r in recipe.rows.items()}}
    if dist.is_main:
        arrays = _store_run(cfg, cache, recipe, folder, name, seed)
        result["seconds"] = round(time.perf_counter() - start, 1)
        write_json_atomic(result_file, result)
        (folder / STATE_FILE).unlink(missing_ok=True)  # the result holds what it held
        result["arrays"] = arrays
    return result


def _store_run(cfg: DMMConfig, cache: TrainingCache, recipe: DMMRecipe, folder: Path,
               name: str, seed: int) -> dict[str, np.ndarray]:
    """Thresholds chosen on validation, test predictions and the checkpoint of a run."""
    model = recipe.model
    v = collect(model, recipe.val)
    thresholds = select_thresholds(v["probabilities"], v["attributes"],
                                   cfg.train.threshold_objective)
    arrays = {f"test_{k}": a for k, a in collect(model, recipe.loader("test", 512, False)
                                                 ).items()}
    arrays["thresholds"] = thresholds
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "predictions.npz", **arrays)
    mean, std = trunk_normalisation(model.trunk)
    save_checkpoint(image_model(model), folder / "model",
                    tasks={"attributes": list(CELEBA_ATTRIBUTES),
                           **({"landmarks": 68} if recipe.landmarks else {})},
                    thresholds=thresholds.round(2).tolist(),
                    attribute_groups={"objective": list(cfg.model.objective),
                                      "subjective": list(cfg.model.subjective)},
                    input_size=cfg.image_size,
                    normalisation={"mean": list(mean), "std": list(std)},
                    crop={"landmark_margin": cfg.landmark_margin,
                          "center_crop": cfg.center_crop,
                          "detector_crop": list(cfg.detector_crop)},
                    landmark_coordinates="0..1 of the input crop (x right, y down)",
                    training_data=cache.table.datasets(), seed=seed, variant=name)
    return arrays


def image_model(model: MultiTaskModel) -> MultiTaskModel:
    """``model`` taking images: a model trained on a frozen prefix's maps, rebuilt with the
    same weights without its ``start_block`` (what a checkpoint stores). Its spec drops
    ``weights`` too: every weight is in the checkpoint, so loading it reads no graph."""
    if start_block(model.trunk) == 0:
        return model
    options = {k: v for k, v in model.spec.trunk_options.items()
               if k not in ("start_block", "weights")}
    whole = build_model(dataclasses.replace(model.spec, trunk_options=options))
    whole.load_state_dict(model.state_dict())
    return whole.eval()


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
    """Train and score every variant for every seed (or what an interrupted run left);
    write the report folder. Under ``torchrun`` every rank takes part in each run; rank 0
    writes."""
    from tqdm.auto import tqdm

    from facefuse.evaluation.dmm_report import write_report

    with experiment_run(cfg, progress) as (out, device, dist, progress):
        start = time.perf_counter()
        table, counts = load_table(cfg)
        spec = CacheSpec(size=cfg.image_size, landmark_margin=cfg.landmark_margin,
                         center_crop=cfg.center_crop, detector_crop=cfg.detector_crop)
        cache = rank0_first(dist, lambda: build_cache(
            table, cfg.cache_dir, spec, name="dmm", workers=cfg.workers, progress=progress))
        if not cfg.model.frozen_prefix:  # else the batches are the prefix's maps
            hold_in_memory(cache, cfg.cache_in_memory)
        trained = sorted({VARIANTS[v][4] for v in cfg.variants})
        bar = tqdm(total=len(trained) * len(cfg.seeds), desc="dmm_cnn", unit="run",
                   disable=not progress)
        runs: dict[tuple[str, int], dict] = {}
        for seed in cfg.seeds:
            for name in trained:
                runs[(name, seed)] = train_variant(cfg, cache, name, seed, device,
                                                   out / "runs" / f"{name}-seed{seed}", dist,
                                                   progress)
                bar.update(1)
        bar.close()
        if dist.is_main:
            scores = [score_variant(v, runs[(VARIANTS[v][4], s)]) for v in cfg.variants
                      for s in cfg.seeds]
            write_report(out, cfg, scores, runs, _positive_rate(cache), counts,
                         {"total": time.perf_counter() - start}, device)
    return out


def _positive_rate(cache: TrainingCache) -> np.ndarray:
    train = cache.table.split == "train"
    attrs = cache.table.labels["attributes"][train & cache.table.present("attributes")]
    known = attrs >= 0
    return (attrs == 1).sum(0) / np.maximum(known.sum(0), 1)


EXPERIMENTS.add("dmm_cnn", Experiment(DMMConfig, run_dmm))
