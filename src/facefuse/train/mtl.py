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

The trainer is a recipe of the one training loop (:mod:`facefuse.train.engine`): bf16
autocast and channels_last on CUDA, DDP under ``torchrun``, ``state.pt`` after every epoch
(a rerun with the same config resumes after the last finished epoch) are the engine's. Every
epoch also writes ``last.safetensors/.json``.

The config is :class:`facefuse.train.mtl_config.MTLConfig`; reading the datasets, the
training cache and the sampling weights are :mod:`facefuse.train.mtl_data` (both importable
from here as well).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facefuse.config import save_config
from facefuse.data.augment import AugmentSpec
from facefuse.data.cache import TrainingCache
from facefuse.data.cache_pack import lfw_view2_pairs
from facefuse.data.loader import DEFAULT_MEAN, DEFAULT_STD, CacheLoader, identity_classes
from facefuse.devices import resolve_device
from facefuse.evaluation.verification import pair_scores, verification_accuracy
from facefuse.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from facefuse.models.margin import margin_loss
from facefuse.models.multitask import HeadSpec, ModelSpec, build_model
from facefuse.tasks import TaskKind, get_task, regression_scale
from facefuse.train.distill import TeacherEmbeddings, distillation_loss
from facefuse.train.distributed import barrier, join, shutdown
from facefuse.train.engine import Engine, Loss, Recipe, RunConflict, run_lock
from facefuse.train.loop import evaluate, task_loss
from facefuse.train.mtl_config import AGE_HEADS, IDENTITY_HEADS, RECIPES, MTLConfig
from facefuse.train.mtl_data import (
    hold_in_memory,
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


class MTLTrainer(Recipe):
    """The multi-task recipe: owns data, model and loss weighting for one run; its engine
    (``self.engine``, built last, having resumed any saved state) trains it."""

    max_grad_norm = 10.0

    def __init__(self, cfg: MTLConfig, progress: bool = False) -> None:
        self.cfg = cfg
        self.device, self.dist = join(resolve_device(cfg.device))
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
        hold_in_memory(self.cache, cfg.cache_in_memory)
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
        self.weighting = WEIGHTINGS.get(cfg.weighting)(list(cfg.tasks), cfg.task_weights)
        self.loss_fns = {t: self._loss_fn(t) for t in cfg.tasks}
        self.optim, self.epochs, self.config = cfg.optim, cfg.optim.epochs, cfg
        self.bf16, self.channels_last = cfg.bf16, cfg.channels_last
        self.engine = Engine(self, self.device, self.out, progress=progress)

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.engine.history

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

    # -- the recipe's hooks ------------------------------------------------------------------
    def on_saved(self, folder: Path, epoch: int) -> None:
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
        augment = AugmentSpec(grayscale=cfg.grayscale) if cfg.augment else None
        # the same global order on every rank; under DDP each takes its share
        return CacheLoader(self.cache, rows, cfg.batch_size, shuffle=False, seed=cfg.seed + epoch,
                           device=self.device, augment=augment, tasks=cfg.tasks,
                           identities=self.identities, drop_last=True,
                           channels_last=cfg.channels_last and self.device.type == "cuda",
                           shard=(self.dist.rank, self.dist.world_size))

    def _distils(self, epoch: int) -> bool:
        return self.teacher is not None and "identity" in self.active_tasks(epoch)

    def start_epoch(self, epoch: int) -> dict[str, Any]:
        for module in self.frozen:  # BatchNorm statistics stay
            module.eval()
        return {"tasks": self.active_tasks(epoch)}

    def loss_names(self, epoch: int) -> list[str]:
        return self.active_tasks(epoch) + (["identity_teacher"] if self._distils(epoch) else [])

    def batches(self, epoch: int) -> CacheLoader:
        return self._loader(epoch)

    def forward(self, model: nn.Module, batch: Any, epoch: int) -> dict[str, torch.Tensor]:
        return model(batch.images, with_embedding=self._distils(epoch))

    def losses(self, output: dict[str, torch.Tensor], batch: Any, epoch: int
               ) -> dict[str, Loss]:
        terms = {}
        for t in self.active_tasks(epoch):
            mask = batch.masks[t]
            terms[t] = Loss(self.loss_fns[t](output[t].float(), batch.labels[t], mask),
                            mask.sum())
        if self._distils(epoch):
            assert self.teacher is not None
            index = torch.as_tensor(batch.index, device=self.device)
            targets, mask = self.teacher[0][index], self.teacher[1][index]
            terms["identity_teacher"] = Loss(
                distillation_loss(output["identity_embedding"], targets, mask), mask.sum(),
                self.cfg.teacher_weight)
        return terms

    def validate(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        return {"val": self.evaluate("val")}

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
        """Train the remaining epochs, then test, write ``final`` and ``metrics.json``."""
        self.engine.fit()
        if self.dist.is_main:
            test = self.evaluate("test")
            self._checkpoint("final")
            (self.out / "metrics.json").write_text(json.dumps(
                {"test": test, "history": self.history, "data": self.counts,
                 "identity_classes": len(self.identities)}, indent=1))
        barrier(self.dist)
        shutdown(self.dist)
        return self.out


def train_mtl(cfg: MTLConfig, progress: bool = False) -> Path:
    """Train (or resume) one multi-task model; returns the run folder.

    Raises:
        RunConflict: another process is training into ``cfg.output`` now (its state and
            checkpoints would be overwritten by turns), or the folder holds a run of
            another config.
    """
    with run_lock(cfg.output):  # before anything is written to the folder
        return MTLTrainer(cfg, progress).run()
