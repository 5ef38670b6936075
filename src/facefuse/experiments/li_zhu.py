"""Li and Zhu's protocol: per-task CNNs, the cross-task table and the fusion table.

1. One :class:`~facefuse.models.paper_cnn.LiZhuCNN` per source task (identity, age groups,
   gender, race by default), trained on that task's images, per seed.
2. Every model's feature layer is computed on every image of every target task.
3. Cross-task table: for source A and target B, a head (2 FC + output) trained on A's
   features of B's training images, selected on B's validation images, scored on B's test
   images.
4. Fusion table: per target, heads on the own source's features, on the other sources',
   on all of them concatenated (the paper), and on all of them merged by further methods.

Every cell is stored as JSON when done, and a CNN's training keeps its state after every
epoch (:mod:`facefuse.train.engine`), so an interrupted run resumes where it stopped: no
finished cell, model or epoch is computed again. Under ``torchrun`` every CNN and head
trains with DDP (each rank on its share of each epoch); rank 0 writes.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from facefuse.config import to_dict
from facefuse.data.augment import paper_augment
from facefuse.data.cache import CacheSpec, TrainingCache, build_cache
from facefuse.data.loader import DEFAULT_MEAN, DEFAULT_STD, CacheLoader
from facefuse.data.readers import SplitConfig, read_dataset
from facefuse.data.splits import assign_splits
from facefuse.data.table import SPLITS, SampleTable
from facefuse.experiments.launch import experiment_run
from facefuse.experiments.registry import EXPERIMENTS, Experiment
from facefuse.features.probe import ProbeConfig, fit_probe, out_width
from facefuse.features.store import FeatureSet, extract_features
from facefuse.files import write_json_atomic
from facefuse.models.checkpoint import load_checkpoint, save_checkpoint
from facefuse.models.multitask import HeadSpec, ModelSpec, MultiTaskModel, build_model
from facefuse.tasks import Task, TaskKind, age_group, age_group_task, get_task
from facefuse.train.distributed import (
    DistInfo,
    barrier,
    from_rank0,
    rank0_first,
)
from facefuse.train.engine import STATE_FILE
from facefuse.train.loop import OptimConfig
from facefuse.train.mtl_data import hold_in_memory
from facefuse.train.supervised import fit

log = logging.getLogger(__name__)

UTKFACE_TARGETS = ("age_group", "age", "gender", "race")


@dataclass(frozen=True)
class LiZhuData:
    """Where the images and labels come from.

    With ``manifest`` set, every target comes from that one CSV (the paper's setting: all
    labels on the same images). Otherwise age, gender and race come from UTKFace and
    identity from the people with at least ``identity_min_images`` images in
    ``identity_datasets``, split per person (closed-set identification).
    """

    root: str = "../shared/data"
    manifest: str | None = None
    utkface_limit: int | None = None
    identity_datasets: tuple[str, ...] = ("celeba", "lfw")
    identity_min_images: int = 20
    identity_max_people: int | None = None
    identity_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    age_cut_points: tuple[float, ...] = (18.0, 60.0)
    split_seed: int = 0
    center_crop: dict[str, float] = field(default_factory=lambda: {"celeba": 0.6})


@dataclass(frozen=True)
class ExtractorConfig:
    """The per-task CNN and its training (paper: SGD with momentum, decaying rate, batch
    200, Gaussian init, on-the-fly augmentation)."""

    image_size: int = 64
    channels: tuple[int, int, int] = (32, 64, 128)
    feature_dims: dict[str, int] = field(default_factory=lambda: {"identity": 200})
    default_feature_dim: int = 50
    init_std: float | None = None
    dropout: float = 0.25
    batch_size: int = 200
    augment: bool = True
    bf16: bool = True  # autocast on CUDA
    channels_last: bool = True  # on CUDA
    optim: OptimConfig = OptimConfig(optimizer="sgd", lr=0.01, momentum=0.9,
                                     weight_decay=5e-4, lr_decay=0.93, epochs=15)


@dataclass(frozen=True)
class LiZhuConfig:
    """The whole protocol."""

    kind: str = "li_zhu"
    output: str = "reports/li_zhu"
    cache_dir: str = ".facefuse-cache"
    device: str = "auto"
    workers: int | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    # the training cache's images in RAM (None: when they take at most a quarter of it)
    cache_in_memory: bool | None = None
    sources: tuple[str, ...] = ("identity", "age_group", "gender", "race")
    targets: tuple[str, ...] = ("identity", "age_group", "age", "gender", "race")
    own_source: dict[str, str] = field(default_factory=lambda: {"age": "age_group"})
    fusion_methods: tuple[str, ...] = ("concat", "normalized_concat", "gated", "attention",
                                       "bilinear", "source_dropout")
    data: LiZhuData = LiZhuData()
    extractor: ExtractorConfig = ExtractorConfig()
    probe: ProbeConfig = ProbeConfig()

    def __post_init__(self) -> None:
        known = ("identity", *UTKFACE_TARGETS)
        for name in (*self.sources, *self.targets):
            if name not in known:
                raise ValueError(f"unknown target {name!r}; valid: {', '.join(known)}")
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")
        if "concat" not in self.fusion_methods:
            raise ValueError("fusion_methods must include 'concat' (the paper's method)")
        for t in self.targets:
            if self.own(t) not in self.sources:
                raise ValueError(f"target {t!r} has no own source among {self.sources}; "
                                 f"set own_source")

    def own(self, target: str) -> str:
        return self.own_source.get(target, target)

    def fusion_rows(self, target: str) -> list[tuple[str, list[str], str]]:
        """(row name, sources, method) of the fusion table for one target."""
        own = self.own(target)
        others = [s for s in self.sources if s != own]
        rows = [("own", [own], "concat"), ("other", others, "concat"),
                ("all", list(self.sources), "concat")]
        rows += [(f"all:{m}", list(self.sources), m) for m in self.fusion_methods
                 if m != "concat"]
        return rows


@dataclass
class Target:
    """One prediction target: its task, label array over cache rows, rows per split."""

    name: str
    task: Task
    labels: np.ndarray
    rows: dict[str, np.ndarray]
    n_classes: int | None = None

    def chance(self) -> dict[str, float]:
        """Chance levels on the test rows: uniform guess and the train majority/median."""
        train, test = self.labels[self.rows["train"]], self.labels[self.rows["test"]]
        if self.task.kind is TaskKind.REGRESSION:
            return {"mae_of_train_median": float(np.mean(np.abs(test - np.median(train))))}
        k = self.n_classes or len(self.task.label_names)
        majority = np.bincount(train.astype(int), minlength=k).argmax()
        return {"uniform": 1.0 / k, "majority": float(np.mean(test == majority))}


def load_tables(cfg: LiZhuConfig) -> tuple[SampleTable, list[dict]]:
    """The images of every target, with identity splits redone per person."""
    d = cfg.data
    splits = SplitConfig(seed=d.split_seed)
    counts: list[dict] = []
    if d.manifest:
        r = read_dataset("manifest", d.manifest, splits)
        counts.append({"dataset": r.name, "images": len(r.table), "skipped": len(r.skipped)})
        return _closed_set_split(r.table, d), counts
    tables = []
    needs_utk = any(t in UTKFACE_TARGETS for t in (*cfg.sources, *cfg.targets))
    if needs_utk:
        r = read_dataset("utkface", d.root, splits)
        t = r.table
        if d.utkface_limit is not None and d.utkface_limit < len(t):
            keep = np.sort(np.random.default_rng(d.split_seed).permutation(len(t))
                           [:d.utkface_limit])
            t = t.select(keep)
        tables.append(t)
        counts.append({"dataset": "utkface", "images": len(t), "skipped": len(r.skipped)})
    if "identity" in (*cfg.sources, *cfg.targets):
        idt = []
        for name in d.identity_datasets:
            r = read_dataset(name, d.root, splits)
            people, n = np.unique(r.table.labels["identity"], return_counts=True)
            keep_people = set(people[(n >= d.identity_min_images) & (people != "")].tolist())
            t = r.table.select(np.isin(r.table.labels["identity"], list(keep_people)))
            idt.append(t)
            counts.append({"dataset": name, "images": len(t), "people": len(keep_people),
                           "skipped": len(r.skipped)})
        ident = SampleTable.concat(idt)
        if d.identity_max_people is not None:
            people = sorted(set(ident.labels["identity"].tolist()))
            chosen = set(np.random.default_rng(d.split_seed).permutation(people)
                         [:d.identity_max_people].tolist())
            ident = ident.select(np.isin(ident.labels["identity"], list(chosen)))
        tables.append(_closed_set_split(ident, d))
    return SampleTable.concat(tables), counts


def _closed_set_split(table: SampleTable, d: LiZhuData) -> SampleTable:
    """Closed-set identification needs every person in every split: rows with an identity
    are re-split per person (stratified by identity); other rows keep their split."""
    has_id = table.present("identity")
    if not has_id.any():
        return table
    split = table.split.copy()
    split[has_id] = assign_splits(table.sample_id[has_id], d.identity_fractions, d.split_seed,
                                  stratify=table.labels["identity"][has_id])
    return table.with_split(split)


def build_targets(cfg: LiZhuConfig, cache: TrainingCache) -> dict[str, Target]:
    table, valid = cache.table, cache.valid
    out: dict[str, Target] = {}
    for name in dict.fromkeys((*cfg.sources, *cfg.targets)):
        if name == "identity":
            people = sorted(set(table.labels["identity"][table.split == "train"].tolist())
                            - {""})
            index = {p: i for i, p in enumerate(people)}
            labels = np.asarray([index.get(p, -1) for p in table.labels["identity"]], np.int64)
            task, n_classes = get_task("identity"), len(people)
        elif name == "age_group":
            task = age_group_task(cfg.data.age_cut_points)
            labels = age_group(table.labels["age"], cfg.data.age_cut_points).astype(np.int64)
            n_classes = len(task.label_names)
        elif name == "age":
            task, labels, n_classes = get_task("age"), table.labels["age"].astype(np.float32), \
                None
        else:
            task = get_task(name)
            labels, n_classes = table.labels[name].astype(np.int64), len(task.label_names)
        present = (~np.isnan(labels) if labels.dtype.kind == "f" else labels >= 0) & valid
        rows = {s: np.flatnonzero(present & (table.split == s)) for s in SPLITS}
        empty = [s for s, r in rows.items() if len(r) == 0]
        if empty:
            raise ValueError(f"target {name!r} has no {' or '.join(empty)} images")
        out[name] = Target(name, task, labels, rows, n_classes)
    return out


def extractor_spec(e: ExtractorConfig, target: str, width: int) -> ModelSpec:
    """The per-task CNN for ``target`` (its head ``width`` outputs wide)."""
    return ModelSpec("lizhu_cnn", {
        "image_size": e.image_size, "channels": e.channels,
        "feature_dim": e.feature_dims.get(target, e.default_feature_dim),
        "init_std": e.init_std, "dropout": e.dropout}, {target: HeadSpec(width)})


def train_extractor(cfg: LiZhuConfig, cache: TrainingCache, target: Target, seed: int,
                    device: torch.device, path: Path, dist: DistInfo | None = None,
                    progress: bool = False) -> MultiTaskModel:
    """Train (or load, when its checkpoint exists) one per-task CNN; its training state is
    kept beside the checkpoint (``path.state/``) until the checkpoint is written."""
    dist = dist or DistInfo()
    if from_rank0(dist, path.with_suffix(".json").is_file()):
        return load_checkpoint(path, device).model
    e = cfg.extractor
    torch.manual_seed(seed)
    spec = extractor_spec(e, target.name, out_width(target.task, target.n_classes))
    model = build_model(spec).to(device)
    labels = {target.name: target.labels}
    train = CacheLoader(cache, target.rows["train"], e.batch_size, seed=seed, device=device,
                        augment=paper_augment() if e.augment else None, labels=labels,
                        shard=(dist.rank, dist.world_size),
                        channels_last=e.channels_last and device.type == "cuda")
    val = CacheLoader(cache, target.rows["val"], 512, shuffle=False, device=device,
                      labels=labels)
    state = path.with_name(f"{path.name}.state")
    run = {"extractor": to_dict(e), "data": to_dict(cfg.data), "target": target.name,
           "seed": seed}
    result = fit(model, train, e.optim, {target.name: 1.0}, val, {target.name: target.task},
                 folder=state, config=run, name=path.name, progress=progress, bf16=e.bf16,
                 channels_last=e.channels_last)
    if dist.is_main:
        save_checkpoint(model, path, tasks={target.name: list(target.task.label_names)},
                        input_size=e.image_size,
                        normalisation={"mean": list(DEFAULT_MEAN), "std": list(DEFAULT_STD)},
                        training_data=cache.table.datasets(), seed=seed,
                        history=result.history, seconds=round(result.seconds, 1))
        (state / STATE_FILE).unlink(missing_ok=True)  # the checkpoint holds what it held
        if state.is_dir() and not any(state.iterdir()):
            state.rmdir()
    return model


def source_features(model: MultiTaskModel, cache: TrainingCache, source: str, path: Path,
                    device: torch.device, dist: DistInfo) -> FeatureSet:
    """A source model's features of every cached image (stored; rank 0 computes them)."""
    if not from_rank0(dist, path.is_file()) and dist.is_main:
        extract_features(model, cache, cache.rows(), source, device=device).save(path)
    barrier(dist)
    return FeatureSet.load(path)


def run_cell(path: Path, work, dist: DistInfo | None = None) -> dict:
    """Run ``work()`` unless ``path`` holds its result already; store the result (rank 0)."""
    dist = dist or DistInfo()
    if from_rank0(dist, path.is_file()):
        return json.loads(path.read_text())
    start = time.perf_counter()
    result = work()
    result["seconds"] = round(time.perf_counter() - start, 2)
    if dist.is_main:
        write_json_atomic(path, result)
    return result


def probe_cell(cfg: LiZhuConfig, target: Target, features: dict[str, FeatureSet],
               sources: list[str], method: str, seed: int, cache: TrainingCache,
               device: torch.device | None = None) -> dict:
    ids = {s: cache.table.sample_id[target.rows[s]] for s in SPLITS}
    xs = {s: [features[src].rows_for(ids[s]) for src in sources] for s in SPLITS}
    ys = {s: target.labels[target.rows[s]] for s in SPLITS}
    r = fit_probe(target.task, method, xs["train"], ys["train"], xs["val"], ys["val"],
                  xs["test"], ys["test"], cfg.probe, seed, target.n_classes, device,
                  f"{target.name}-{method}-{'+'.join(sources)}-seed{seed}")
    return {"sources": sources, "method": method, "seed": seed, "target": target.name,
            "val": r.val, "test": r.test, "best_epoch": r.best_epoch,
            "n": {s: len(ys[s]) for s in SPLITS}}


def run_li_zhu(cfg: LiZhuConfig, progress: bool = False) -> Path:
    """Run the whole protocol (or what an interrupted run left); returns the report folder.
    Under ``torchrun`` every rank takes part in each training; rank 0 writes."""
    from facefuse.evaluation.li_zhu_report import write_report

    with experiment_run(cfg, progress) as (out, device, dist, progress):
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        table, counts = load_tables(cfg)
        spec = CacheSpec(size=cfg.extractor.image_size, center_crop=cfg.data.center_crop)
        cache = rank0_first(dist, lambda: build_cache(
            table, cfg.cache_dir, spec, name="li_zhu", workers=cfg.workers, progress=progress))
        hold_in_memory(cache, cfg.cache_in_memory)
        targets = build_targets(cfg, cache)
        timings["data_and_cache"] = time.perf_counter() - t0
        cells = _all_cells(cfg, cache, targets, out, device, dist, progress, timings)
        timings["total"] = time.perf_counter() - t0
        if dist.is_main:
            write_report(out, cfg, cells, targets, counts, timings, device)
    return out


def _all_cells(cfg: LiZhuConfig, cache: TrainingCache, targets: dict[str, Target], out: Path,
               device: torch.device, dist: DistInfo, progress: bool,
               timings: dict[str, float]) -> list[dict]:
    """Per seed: every source's CNN and features, then every head of both tables."""
    from tqdm.auto import tqdm

    jobs = len(cfg.seeds) * len(cfg.sources) * (1 + len(cfg.targets)) + len(cfg.seeds) * sum(
        len(cfg.fusion_rows(t)) for t in cfg.targets)
    bar = tqdm(total=jobs, desc="li_zhu", unit="step", disable=not progress)
    cells: list[dict] = []
    t_extract = t_probe = 0.0
    for seed in cfg.seeds:
        features: dict[str, FeatureSet] = {}
        for source in cfg.sources:
            t1 = time.perf_counter()
            model = train_extractor(cfg, cache, targets[source], seed, device,
                                    out / "models" / f"{source}-seed{seed}", dist, progress)
            features[source] = source_features(
                model, cache, source, out / "features" / f"{source}-seed{seed}.safetensors",
                device, dist)
            t_extract += time.perf_counter() - t1
            bar.update(1)
        t2 = time.perf_counter()
        for target in cfg.targets:
            rows = [("cross", source, [source], "concat") for source in cfg.sources]
            rows += [("fusion", row, sources, method)
                     for row, sources, method in cfg.fusion_rows(target)]
            for table, row, sources, method in rows:
                name = f"{row.replace(':', '-')}__{target}__seed{seed}.json"
                cell = run_cell(out / "cells" / table / name,
                                partial(probe_cell, cfg, targets[target], features, sources,
                                        method, seed, cache, device), dist)
                cells.append({"table": table, "row": row, **cell})
                bar.update(1)
        t_probe += time.perf_counter() - t2
    bar.close()
    timings["extractors_and_features"] = t_extract
    timings["heads"] = t_probe
    return cells


EXPERIMENTS.add("li_zhu", Experiment(LiZhuConfig, run_li_zhu))
