"""What every training recipe shares: the optimiser and its schedule, masked task losses,
decoding outputs and scoring them (the loop itself is :mod:`facefuse.train.engine`).

Losses are masked per task (rows without a label contribute nothing), so one batch may mix
datasets. Regression targets are divided by the top of the task's value range (age / 116)
so that one learning rate suits every head; predictions are scaled back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from facefuse.data.loader import Batch
from facefuse.evaluation.metrics import METRICS
from facefuse.tasks import Task, TaskKind, get_task, regression_scale
from facefuse.train.losses import LOSSES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and schedule."""

    optimizer: str = "sgd"  # sgd (with momentum) or adamw
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_decay: float = 0.95  # learning rate multiplied by this after every epoch
    epochs: int = 10
    # torch's fused update (one kernel for every parameter instead of a few per tensor
    # group); the arithmetic is the same, rounding may differ in the last bits
    fused: bool = False

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be sgd or adamw, got {self.optimizer!r}")
        if self.lr <= 0 or self.epochs < 1 or not 0 < self.lr_decay <= 1:
            raise ValueError("lr must be positive, epochs >= 1 and lr_decay in (0, 1]")


def make_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig,
                   lr_scale: Callable[[nn.Parameter], float] | None = None
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """``cfg``'s optimiser over the trained ``params`` and its exponential schedule; with
    ``lr_scale``, each parameter's learning rate is ``cfg.lr`` times its scale (one
    parameter group per scale)."""
    trained = [p for p in params if p.requires_grad]
    groups: dict[float, list[nn.Parameter]] = {}
    for p in trained:
        groups.setdefault(1.0 if lr_scale is None else float(lr_scale(p)), []).append(p)
    params = [{"params": ps, "lr": cfg.lr * scale} for scale, ps in groups.items()] \
        if set(groups) != {1.0} else trained
    fused = {"fused": True} if cfg.fused else {}
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                                     weight_decay=cfg.weight_decay, **fused)
    else:
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
    return opt, torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.lr_decay)


TaskLike = Task | str


def as_task(task: TaskLike) -> Task:
    """A registered task by name, or a :class:`Task` given directly (derived targets)."""
    return task if isinstance(task, Task) else get_task(task)


def resolve_tasks(tasks: Sequence[TaskLike] | Mapping[str, Task]) -> dict[str, Task]:
    """Name -> Task for a list of names/tasks or a mapping."""
    if isinstance(tasks, Mapping):
        return dict(tasks)
    return {as_task(t).name: as_task(t) for t in tasks}


def task_loss(task: TaskLike, output: torch.Tensor, target: torch.Tensor,
              mask: torch.Tensor, loss: str | None = None) -> torch.Tensor:
    """The task's registered loss (or the registered ``loss``, e.g. ``distribution_l1`` for a
    distribution head) on one batch, regression targets scaled."""
    task = as_task(task)
    if task.kind is TaskKind.REGRESSION:
        target = target / regression_scale(task)
    return LOSSES.get(loss or task.loss)(output, target, mask)


def decode(task: TaskLike, output: torch.Tensor) -> np.ndarray:
    """Turn raw head outputs into predictions in label space."""
    task = as_task(task)
    kind = task.kind
    out = output.detach().float().cpu()
    if kind in (TaskKind.CLASSIFICATION, TaskKind.IDENTITY):
        return out.argmax(dim=1).numpy()
    if kind is TaskKind.REGRESSION:
        return out.reshape(len(out), -1)[:, 0].numpy() * regression_scale(task)
    if kind is TaskKind.MULTI_LABEL:
        return (out > 0).numpy().astype(np.int8)
    return out.reshape(len(out), -1, 2).numpy()


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[Batch],
            tasks: Sequence[TaskLike] | Mapping[str, Task]) -> dict[str, dict[str, np.ndarray]]:
    """Predictions and targets of labelled rows per task: ``{task: {pred, target, index}}``."""
    defs = resolve_tasks(tasks)
    model.eval()
    parts: dict[str, dict[str, list]] = {t: {"pred": [], "target": [], "index": []}
                                         for t in defs}
    for batch in batches:
        outputs = model(batch.images)
        for name, task in defs.items():
            mask = batch.masks[name].cpu().numpy()
            if not mask.any():
                continue
            parts[name]["pred"].append(decode(task, outputs[name])[mask])
            parts[name]["target"].append(batch.labels[name].cpu().numpy()[mask])
            parts[name]["index"].append(batch.index[mask])
    return {t: {k: np.concatenate(v) for k, v in p.items()} for t, p in parts.items()
            if p["pred"]}


def score(task: TaskLike, pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Every metric the task names."""
    return {m: METRICS.get(m)(pred, target) for m in as_task(task).metrics}


def evaluate(model: nn.Module, batches: Iterable[Batch],
             tasks: Sequence[TaskLike] | Mapping[str, Task]) -> dict[str, dict[str, float]]:
    """Metrics per task on the labelled rows of ``batches``."""
    defs = resolve_tasks(tasks)
    preds = predict(model, batches, defs)
    return {t: score(defs[t], p["pred"], p["target"]) for t, p in preds.items()}
