"""Training a fusion head (or a single-source head) on stored features.

Features are standardised with the training rows' statistics (see :class:`FeatureScaler`);
the head trains with AdamW on mini-batches (a recipe of the one training loop,
:mod:`facefuse.train.engine`, so it runs under DDP like every other); the epoch with the best
validation score is kept; the test score is reported for that epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from facefuse.evaluation.metrics import primary_metric
from facefuse.features.fusion import FusionHead
from facefuse.tasks import Task, TaskKind
from facefuse.train.distributed import from_rank0, init_distributed
from facefuse.train.engine import Engine, Loss, Recipe, static_weighting
from facefuse.train.loop import decode, score, task_loss


@dataclass(frozen=True)
class ProbeConfig:
    """Head training settings."""

    hidden: tuple[int, ...] = (128, 64)  # the paper's 2 FC layers
    dropout: float = 0.2
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4


@dataclass(frozen=True)
class FeatureScaler:
    """Standardisation fitted on training rows, safe on new data: a unit that is constant
    on the training rows (a ReLU unit that never fired) is set to 0, since no head can have
    learned from it, instead of being divided by a zero spread; values are clipped to
    +-``clip`` so one outlying image cannot dominate a head's output."""

    mean: np.ndarray
    scale: np.ndarray
    keep: np.ndarray
    clip: float = 10.0

    @classmethod
    def fit(cls, x: np.ndarray, min_std: float = 1e-6) -> FeatureScaler:
        std = x.std(0)
        keep = std > min_std
        return cls(x.mean(0), np.where(keep, std, 1.0), keep)

    def transform(self, x: np.ndarray) -> np.ndarray:
        z = np.clip((x - self.mean) / self.scale, -self.clip, self.clip) * self.keep
        return z.astype(np.float32)


@dataclass(frozen=True)
class ProbeResult:
    val: dict[str, float]
    test: dict[str, float]
    best_epoch: int
    test_predictions: np.ndarray


def out_width(task: Task, n_classes: int | None = None) -> int:
    if task.kind is TaskKind.IDENTITY:
        if not n_classes:
            raise ValueError("identity heads need the number of classes")
        return n_classes
    return task.num_outputs


@dataclass
class ProbeBatch:
    """Standardised features of some rows (one tensor per source), their labels and which
    rows carry one."""

    features: list[torch.Tensor]
    labels: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


class ProbeRecipe(Recipe):
    """A fusion head on stored features, for the engine: AdamW, no schedule; after each
    epoch the validation score, and the test predictions of the best epoch so far."""

    find_unused_parameters = False  # every layer of the head sees every batch

    def __init__(self, task: Task, head: FusionHead, train: tuple[list[torch.Tensor], torch.Tensor],
                 val: tuple[list[torch.Tensor], np.ndarray],
                 test: tuple[list[torch.Tensor], np.ndarray], cfg: ProbeConfig, seed: int,
                 shard: tuple[int, int]) -> None:
        self.task, self.model, self.cfg, self.epochs = task, head, cfg, cfg.epochs
        self.train_x, self.train_y = train
        self.val, self.test, self.shard = val, test, shard
        self.weighting = static_weighting({task.name: 1.0})
        self.generator = torch.Generator().manual_seed(seed)
        self.metric, self.higher = primary_metric(task)
        self.best: tuple[float, int, dict, dict, np.ndarray] | None = None

    def optimizers(self, params: list[torch.nn.Parameter]) -> tuple[torch.optim.Optimizer, None]:
        return torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay), \
            None

    def batches(self, epoch: int) -> Iterator[ProbeBatch]:
        order = torch.randperm(len(self.train_y), generator=self.generator)
        rank, world = self.shard  # the same order on every rank; each takes its share
        per_rank = len(order) // world
        for idx in order[rank * per_rank:(rank + 1) * per_rank].split(self.cfg.batch_size):
            if len(idx) < 2:
                continue
            y = self.train_y[idx]
            mask = ~torch.isnan(y) if y.is_floating_point() else y >= 0
            device = self.train_x[0].device
            yield ProbeBatch([x[idx] for x in self.train_x], y.to(device),
                             mask.reshape(len(y), -1).any(1).to(device))

    def forward(self, model: torch.nn.Module, batch: ProbeBatch, epoch: int) -> torch.Tensor:
        return model(batch.features)

    def losses(self, output: torch.Tensor, batch: ProbeBatch, epoch: int) -> dict[str, Loss]:
        return {self.task.name: Loss(task_loss(self.task, output, batch.labels, batch.mask),
                                     batch.mask.sum())}

    def validate(self, model: torch.nn.Module, epoch: int) -> dict[str, Any]:
        task = self.task
        val_scores = score(task, decode(task, model(self.val[0])), self.val[1])
        value = val_scores[self.metric]
        best = self.best
        if best is None or (value > best[0] if self.higher else value < best[0]):
            test_pred = decode(task, model(self.test[0]))
            self.best = (value, epoch, val_scores, score(task, test_pred, self.test[1]),
                         test_pred)
        return {"val": val_scores}


def fit_probe(task: Task, method: str, train_x: Sequence[np.ndarray], train_y: np.ndarray,
              val_x: Sequence[np.ndarray], val_y: np.ndarray, test_x: Sequence[np.ndarray],
              test_y: np.ndarray, cfg: ProbeConfig = ProbeConfig(), seed: int = 0,
              n_classes: int | None = None, device: torch.device | None = None,
              name: str = "") -> ProbeResult:
    """Train ``method`` fusion + MLP head on the given sources (on the CPU unless
    ``device``; ``name``: the run's name in logs); score val and test. Under DDP every rank
    trains on its share of each epoch and returns rank 0's result."""
    device = device or torch.device("cpu")
    dist = init_distributed(device)
    torch.manual_seed(seed)
    scalers = [FeatureScaler.fit(x) for x in train_x]

    def prep(xs: Sequence[np.ndarray]) -> list[torch.Tensor]:
        return [torch.from_numpy(sc.transform(x)).to(device)
                for sc, x in zip(scalers, xs, strict=True)]

    tr, va, te = prep(train_x), prep(val_x), prep(test_x)
    head = FusionHead(method, [x.shape[1] for x in tr], out_width(task, n_classes),
                      cfg.hidden, cfg.dropout)
    recipe = ProbeRecipe(task, head, (tr, torch.from_numpy(np.asarray(train_y))),
                         (va, val_y), (te, test_y), cfg, seed, (dist.rank, dist.world_size))
    Engine(recipe, device, name=name).fit()
    best = from_rank0(dist, recipe.best)
    if best is None:
        raise ValueError(f"the probe of {task.name} trained no epoch (epochs: {cfg.epochs})")
    return ProbeResult(best[2], best[3], best[1], best[4])
