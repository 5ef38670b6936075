"""One model, many datasets: multi-task training of any trunk (``facefuse train CONFIG``).

Batches mix every dataset; each sample carries only its own labels and losses are masked per
task. Datasets are drawn by sampling weights; task losses are combined by a weighting
strategy (:mod:`facefuse.train.weighting`). Identity uses a margin head (ArcFace or
CosFace) whose normalised feature is the identity embedding, evaluated by LFW View-2
verification (the LFW people in View 2 are never trained on).

Recipes: ``joint`` (every task from the start), ``identity_then_tasks`` (Savchenko: identity
first for ``pretrain_epochs``, then the other tasks), ``single`` (one task).

``identity_teacher: FILE`` adds identity distillation (:mod:`facefuse.train.distill`): the
identity embedding of every row a teacher described (``tools/teacher_embeddings.py``) is
pulled towards the teacher's descriptor, weighted by ``teacher_weight``. ``init_from:
CHECKPOINT`` starts from a checkpoint's weights (fine-tuning; a head the config builds
differently, say ``age_head: distribution``, starts fresh), and
``freeze: [MODULE, ...]`` keeps the modules so named as they are (no gradients, BatchNorm
statistics fixed; backward then stops at the first trained layer).

``cache: FOLDER`` trains from a built cache folder instead of ``data_root`` (one unpacked
from a pack on a machine without the data, :mod:`facefuse.data.cache_pack`); its settings
must match the config's.

Every epoch writes ``last.safetensors/.json`` and ``state.pt`` (optimiser, scheduler,
weighting, epoch); a rerun with the same config resumes after the last finished epoch.

The config is :class:`facefuse.train.mtl_config.MTLConfig`; reading the datasets, the
training cache and the sampling weights are :mod:`facefuse.train.mtl_data` (both importable
from here as well).
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from facefuse.config import same_config, save_config, to_dict
from facefuse.data.augment import AugmentSpec
from facefuse.data.cache import TrainingCache
from facefuse.data.cache_pack import lfw_view2_pairs
from facefuse.data.file_lock import LockHeld, exclusive_lock
from facefuse.data.loader import DEFAULT_MEAN, DEFAULT_STD, CacheLoader, identity_classes
from facefuse.devices import resolve_device
from facefuse.evaluation.verification import pair_scores, verification_accuracy
from facefuse.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from facefuse.models.margin import margin_loss
from facefuse.models.multitask import HeadSpec, ModelSpec, build_model
from facefuse.tasks import TaskKind, get_task, regression_scale
from facefuse.train.distill import TeacherEmbeddings, distillation_loss
from facefuse.train.distributed import (
    DistInfo,
    barrier,
    init_distributed,
    launched_as_main,
    shutdown,
)
from facefuse.train.loop import (
    evaluate,
    make_optimizer,
    task_loss,
)
from facefuse.train.mtl_config import AGE_HEADS, IDENTITY_HEADS, RECIPES, MTLConfig
from facefuse.train.mtl_data import (
    keep_in_memory,
    load_data,
    open_prebuilt_cache,
    sampling_probabilities,
    training_cache,
)
from facefuse.train.weighting import WEIGHTINGS

log = logging.getLogger(__name__)

# the config and the data steps live in their own modules; their names stay importable here
__all__ = ["AGE_HEADS", "IDENTITY_HEADS", "RECIPES", "MTLConfig", "MTLTrainer",
           "identity_embedding", "keep_in_memory", "lfw_verification", "load_data",
           "model_spec", "open_prebuilt_cache", "RunConflict", "sampling_probabilities",
           "train_mtl", "training_cache"]


def model_spec(cfg: MTLConfig, n_identities: int) -> ModelSpec:
    heads: dict[str, HeadSpec] = {}
    for t in cfg.tasks:
        task = get_task(t)
        if task.kind is TaskKind.IDENTITY:
            if cfg.identity_head == "softmax":
                heads[t] = HeadSpec(n_identities, (cfg.identity_embedding,))
            else:
                heads[t] = HeadSpec(n_identities, (), 0.0, "cosine",
                                    {"embedding": cfg.identity_embedding, "scale": 30.0})
        elif task.kind is TaskKind.LANDMARKS:
            heads[t] = HeadSpec(task.num_outputs, (256,))
        elif t == "age" and cfg.age_head == "distribution":
            # one bin a year over 0..value_range's top, the range the scaled targets span
            heads[t] = HeadSpec(int(regression_scale(task)) + 1, (), 0.0, "distribution")
        else:
            heads[t] = HeadSpec(task.num_outputs)
    return ModelSpec(cfg.trunk, {"image_size": cfg.image_size, **cfg.trunk_options}, heads)


def identity_embedding(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The identity embedding (normalised) of a multi-task model with an identity head."""
    m = model.module if hasattr(model, "module") else model
    head = m.heads["identity"]
    feats = m.forward_features(images)
    if hasattr(head, "embedding"):
        return head.embedding(feats)
    return nn.functional.normalize(head.net[:-1](feats), dim=1)


@torch.no_grad()
def lfw_verification(model: nn.Module, cache: TrainingCache, device: torch.device
                     ) -> dict[str, float]:
    """LFW View-2 (10 folds) with ``model``'s identity embedding, in eval mode, on the
    cache's LFW fold images; empty when it holds none."""
    model.eval()
    table = cache.table
    lfw_rows = np.flatnonzero(cache.valid & (table.dataset == "lfw") & (table.fold >= 0))
    if not len(lfw_rows):
        return {}
    loader = CacheLoader(cache, lfw_rows, 512, shuffle=False, device=device, labels={})
    emb: dict[str, np.ndarray] = {}
    for batch in loader:
        vectors = identity_embedding(model, batch.images).float().cpu().numpy()
        emb.update(zip(table.image[batch.index].tolist(), vectors, strict=True))
    pairs = [p for p in lfw_view2_pairs(cache) if p.image_a in emb and p.image_b in emb]
    if not pairs:
        return {}
    r = verification_accuracy(*pair_scores(pairs, emb))
    return {"lfw_verification_accuracy": r.accuracy, "lfw_verification_std": r.std,
            "lfw_verification_threshold": float(np.mean(r.thresholds)),
            "pairs": float(r.pairs)}


class MTLTrainer:
    """Owns data, model, optimiser and state for one run."""

    def __init__(self, cfg: MTLConfig, progress: bool = False) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.dist: DistInfo = init_distributed(self.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.out = Path(cfg.output)
        self.progress = progress and self.dist.is_main
        torch.manual_seed(cfg.seed)
        start = self._start_checkpoint(cfg.init_from) if cfg.init_from is not None else None
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
            self.cache, self.counts = training_cache(cfg, self.progress)
        barrier(self.dist)  # rank 0 built the cache; the others open it
        if not self.dist.is_main:
            self.cache, self.counts = training_cache(cfg)
        if keep_in_memory(self.cache, cfg.cache_in_memory):
            t = time.perf_counter()
            self.cache.load_into_memory()
            log.info("training cache in memory: %.2f GB in %.1f s",
                     self.cache.images.nbytes / 1e9, time.perf_counter() - t)
        train_rows = self.cache.rows("train")
        self.identities = identity_classes(self.cache, train_rows) if "identity" in cfg.tasks \
            else {}
        self.train_rows = train_rows
        self.model = build_model(model_spec(cfg, max(len(self.identities), 1))).to(self.device)
        if start is not None:
            self._init_weights(cfg.init_from, start)
        self.teacher_meta: dict[str, Any] | None = None
        self.teacher: tuple[torch.Tensor, torch.Tensor] | None = None
        if cfg.identity_teacher is not None:
            self._load_teacher(cfg.identity_teacher)
        self.frozen = self._freeze(cfg.freeze)
        if cfg.channels_last and self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.weighting = WEIGHTINGS.get(cfg.weighting)(list(cfg.tasks),
                                                       cfg.task_weights).to(self.device)
        self.trained = [p for p in self.model.parameters() if p.requires_grad]
        params = self.trained + list(self.weighting.parameters())
        self.optimizer, self.scheduler = make_optimizer(params, cfg.optim)
        self.losses = {t: self._loss_fn(t) for t in cfg.tasks}
        self.start_epoch = 1
        self.history: list[dict[str, Any]] = []
        self._resume()
        self.ddp_model: nn.Module = self.model
        if self.dist.enabled:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                else None, find_unused_parameters=True)

    def _start_checkpoint(self, path: str) -> Checkpoint:
        """``init_from``'s checkpoint, checked before any cache is built: a start trained on
        other splits (another split seed) is refused, as their validation and test rows
        would hold the start's training rows."""
        start = load_checkpoint(path)
        split_seed = start.meta.get("split_seed")  # absent in checkpoints from before it
        if split_seed is not None and split_seed != self.cfg.splits_seed:
            raise ValueError(f"init_from {path} was trained on the splits of seed {split_seed}; "
                             f"this config draws its splits with seed {self.cfg.splits_seed}, "
                             "whose validation and test rows would include the start's "
                             f"training rows: set split_seed: {split_seed} (seed may differ)")
        return start

    def _init_weights(self, path: str, start: Checkpoint) -> None:
        """The start's weights, except the heads this config builds differently (another
        kind or width, e.g. ``age_head: distribution`` from a plain age head): those start
        fresh, and the log says so."""
        fresh = sorted(t for t, h in self.model.spec.heads.items()
                       if t in start.model.spec.heads and start.model.spec.heads[t] != h)
        prefixes = tuple(f"heads.{t}." for t in fresh)
        source = {k: v for k, v in start.model.state_dict().items()
                  if not k.startswith(prefixes)}
        own = {k: v for k, v in self.model.state_dict().items() if not k.startswith(prefixes)}
        wrong = sorted(k for k in own if k not in source or source[k].shape != own[k].shape)
        extra = sorted(set(source) - set(own))
        if wrong or extra:
            raise ValueError(f"init_from {path}: its weights do not fit this config's model "
                             f"(missing or reshaped: {wrong[:4]}, unexpected: {extra[:4]}); "
                             f"trunk, image size, tasks and identity classes must match")
        self.model.load_state_dict(source, strict=not fresh)
        log.info("initialised from %s%s", path,
                 f" (heads built anew: {', '.join(fresh)})" if fresh else "")

    def _freeze(self, names: tuple[str, ...]) -> list[nn.Module]:
        """Stop gradients into the modules ``names`` (and everything inside them); returns
        those modules (put back in eval mode every epoch, so their BatchNorm statistics
        stay)."""
        modules = dict(self.model.named_modules())
        frozen = []
        for name in names:
            if name not in modules:
                some = [n for n in modules if n.count(".") <= 3][:12]
                raise ValueError(f"freeze: no module of this model is named {name!r} "
                                 f"(module names look like {some})")
            frozen.append(modules[name])
            modules[name].requires_grad_(False)
        if frozen:
            total = sum(p.numel() for p in self.model.parameters())
            kept = sum(p.numel() for p in self.model.parameters() if not p.requires_grad)
            log.info("frozen: %d of %d parameters", kept, total)
        return frozen

    def _load_teacher(self, path: str) -> None:
        teacher = TeacherEmbeddings.load(path)
        if teacher.dim != self.cfg.identity_embedding:
            raise ValueError(f"identity teacher {path} has {teacher.dim}-d embeddings; set "
                             f"identity_embedding: {teacher.dim} to distil it")
        targets, present = teacher.align_to_cache(self.cache.table.sample_id)
        in_train = int(present[self.train_rows].sum())
        if not in_train:
            raise ValueError(f"identity teacher {path} describes none of this cache's "
                             f"training rows (was it written for another cache?)")
        self.teacher = (torch.from_numpy(targets).to(self.device),
                        torch.from_numpy(present).to(self.device))
        self.teacher_meta = {k: v for k, v in teacher.meta.items() if k != "failed"}
        self.teacher_meta.update(path=str(path), training_rows_described=in_train)
        log.info("identity teacher %s: %d training rows", path, in_train)

    def _loss_fn(self, task: str):
        if task == "identity" and self.cfg.identity_head != "softmax":
            return margin_loss(self.cfg.identity_head, scale=30.0)
        loss = "distribution_l1" if self.model.spec.heads[task].kind == "distribution" else None
        return lambda out, y, m: task_loss(task, out, y, m, loss)

    # -- state ----------------------------------------------------------------------------
    def _state_file(self) -> Path:
        return self.out / "state.pt"

    def _resume(self) -> None:
        state_file = self._state_file()
        if not state_file.is_file():
            return
        state = torch.load(state_file, map_location=self.device, weights_only=True)
        if not same_config(json.loads(state.get("config") or "null"), self.cfg):
            raise RunConflict(f"{state_file} belongs to a run with another config; use "
                              f"another output folder or delete it")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.weighting.load_state_dict(state["weighting"])
        self.history = json.loads(state["history"])
        self.start_epoch = int(state["epoch"]) + 1
        log.info("resuming after epoch %d", state["epoch"])

    def _save(self, epoch: int) -> None:
        if not self.dist.is_main:
            return
        tmp = self._state_file().with_suffix(".tmp")
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "weighting": self.weighting.state_dict(), "epoch": epoch,
                    "history": json.dumps(self.history),
                    "config": json.dumps(to_dict(self.cfg), sort_keys=True)}, tmp)
        tmp.replace(self._state_file())
        self._checkpoint("last")

    def _checkpoint(self, name: str) -> None:
        labels = {t: list(get_task(t).label_names) for t in self.cfg.tasks if t != "identity"}
        save_checkpoint(self.model, self.out / name, tasks=labels,
                        identity_classes=len(self.identities), input_size=self.cfg.image_size,
                        normalisation={"mean": list(DEFAULT_MEAN), "std": list(DEFAULT_STD)},
                        crop={"center_crop": self.cfg.center_crop,
                              "detector_crop": list(self.cfg.detector_crop)},
                        training_data=self.counts, recipe=self.cfg.recipe,
                        epochs=len(self.history), identity_teacher=self.teacher_meta,
                        init_from=self.cfg.init_from, frozen=list(self.cfg.freeze),
                        split_seed=self.cfg.splits_seed)

    # -- training -------------------------------------------------------------------------
    def active_tasks(self, epoch: int) -> list[str]:
        if self.cfg.recipe == "identity_then_tasks":
            if epoch <= self.cfg.pretrain_epochs:
                return ["identity"]
            return [t for t in self.cfg.tasks if t != "identity"]
        return list(self.cfg.tasks)

    def _labelled(self, tasks: list[str]) -> np.ndarray:
        """Mask over the cache's rows: those carrying a label of any of ``tasks``."""
        present = np.zeros(len(self.cache), dtype=bool)
        for t in tasks:
            present |= self.cache.table.present(t)
        return present

    def _loader(self, epoch: int) -> CacheLoader:
        cfg = self.cfg
        rows = self.train_rows
        present = self._labelled(self.active_tasks(epoch))
        if self.teacher is not None and "identity" in self.active_tasks(epoch):
            present |= self.teacher[1].cpu().numpy()
        rows = rows[present[rows]]
        probs = sampling_probabilities(self.cache.table, rows, cfg.sampling)
        if probs is not None:
            size = cfg.epoch_size or len(rows)
            rng = np.random.default_rng([cfg.seed, epoch])
            rows = rng.choice(rows, size=size, replace=True, p=probs)
        else:
            rows = np.random.default_rng([cfg.seed, epoch]).permutation(rows)
        if self.dist.enabled:  # the same global order on every rank; each takes its share
            per_rank = len(rows) // self.dist.world_size
            rows = rows[self.dist.rank * per_rank:(self.dist.rank + 1) * per_rank]
        augment = AugmentSpec(grayscale=cfg.grayscale) if cfg.augment else None
        return CacheLoader(self.cache, rows, cfg.batch_size, shuffle=False, seed=cfg.seed + epoch,
                           device=self.device, augment=augment, tasks=cfg.tasks,
                           identities=self.identities, drop_last=True,
                           channels_last=cfg.channels_last and self.device.type == "cuda")

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.ddp_model.train()
        for module in self.frozen:
            module.eval()
        active = self.active_tasks(epoch)
        # running sums stay on the device: no host sync per step (the GPU keeps its queue)
        distil = self.teacher is not None and "identity" in active
        logged = active + ["identity_teacher"] if distil else active
        sums = {t: torch.zeros((), device=self.device) for t in logged}
        counts = {t: torch.zeros((), device=self.device) for t in logged}
        autocast = torch.autocast("cuda", dtype=torch.bfloat16,
                                  enabled=self.cfg.bf16 and self.device.type == "cuda")
        steps = 0
        loader = self._loader(epoch)
        for batch in tqdm(loader, desc=f"epoch {epoch}", unit="batch", leave=False,
                          disable=not self.progress):
            with autocast:
                out = self.ddp_model(batch.images, with_embedding=distil)
            losses = {}
            for t in active:
                mask = batch.masks[t]
                losses[t] = self.losses[t](out[t].float(), batch.labels[t], mask)
                n = mask.sum()
                sums[t] += losses[t].detach().float() * n
                counts[t] += n
            loss = self.weighting.combine(losses)
            if distil:
                index = torch.as_tensor(batch.index, device=self.device)
                targets, mask = self.teacher[0][index], self.teacher[1][index]
                d = distillation_loss(out["identity_embedding"], targets, mask)
                loss = loss + self.cfg.teacher_weight * d
                n = mask.sum()
                sums["identity_teacher"] += d.detach() * n
                counts["identity_teacher"] += n
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.trained, 10.0)
            self.optimizer.step()
            steps += 1
        self.scheduler.step()
        means = {t: float(sums[t]) / float(counts[t]) for t in logged if float(counts[t])}
        self.weighting.end_epoch({t: v for t, v in means.items() if t in active})
        return {**means, "steps": steps}

    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, dict[str, float]]:
        """Metrics per task on ``split``; identity by LFW View-2 verification (test) or
        closed-set accuracy (val)."""
        verify = "identity" in self.cfg.tasks and split == "test"
        # on test, identity is scored by LFW verification below, not by closed-set accuracy
        tasks = [t for t in self.cfg.tasks if not (verify and t == "identity")]
        rows = self.cache.rows(split)
        rows = rows[self._labelled(tasks)[rows]]  # the same metrics, a shorter pass
        results = {}
        if len(rows):
            loader = CacheLoader(self.cache, rows, 512, shuffle=False,
                                 device=self.device, tasks=tasks, identities=self.identities)
            results = evaluate(self.model, loader, tasks)
        if verify:
            results["identity"] = self.lfw_verification()
        return results

    def lfw_verification(self) -> dict[str, float]:
        """LFW View-2 (10 folds) with this run's identity embedding."""
        return lfw_verification(self.model, self.cache, self.device)

    def run(self) -> Path:
        epochs = range(self.start_epoch, self.cfg.optim.epochs + 1)
        for epoch in tqdm(epochs, desc="epochs", disable=not self.progress):
            t0 = time.perf_counter()
            losses = self.train_epoch(epoch)
            seconds = time.perf_counter() - t0
            entry = {"epoch": epoch, "tasks": self.active_tasks(epoch), "loss": losses,
                     "world_size": self.dist.world_size,
                     "seconds": round(seconds, 2),
                     "images_per_second": round(losses["steps"] * self.cfg.batch_size
                                                * self.dist.world_size / max(seconds, 1e-9), 1),
                     "weights": self.weighting.current()}
            if self.dist.is_main:
                entry["val"] = self.evaluate("val")
            self.history.append(entry)
            log.info("epoch %d: %s", epoch, entry)
            self._save(epoch)
            barrier(self.dist)
        checksum = float(sum(p.detach().double().sum() for p in self.model.parameters()))
        log.info("rank %d of %d: parameter checksum %.10e", self.dist.rank,
                 self.dist.world_size, checksum)
        if self.dist.is_main:
            test = self.evaluate("test")
            self._checkpoint("final")
            (self.out / "metrics.json").write_text(json.dumps(
                {"test": test, "history": self.history, "data": self.counts,
                 "identity_classes": len(self.identities)}, indent=1))
        barrier(self.dist)
        shutdown(self.dist)
        return self.out


class RunConflict(ValueError):
    """The run folder belongs to another config, or another process is training into it."""


def train_mtl(cfg: MTLConfig, progress: bool = False) -> Path:
    """Train (or resume) one multi-task model; returns the run folder.

    Raises:
        RunConflict: another process is training into ``cfg.output`` now (its state and
            checkpoints would be overwritten by turns), or the folder holds a run of
            another config.
    """
    if not launched_as_main():  # DDP: rank 0 holds the folder's lock
        return MTLTrainer(cfg, progress).run()
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as held:
        try:
            held.enter_context(exclusive_lock(out / ".training.lock", wait=False))
        except LockHeld:
            raise RunConflict(f"another process is training into {out} now; wait for it to "
                              f"finish or use another output folder") from None
        return MTLTrainer(cfg, progress).run()
