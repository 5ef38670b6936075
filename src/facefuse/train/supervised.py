"""Masked multi-task supervision of a model with one head per task, as a recipe of the engine
(:mod:`facefuse.train.engine`): Li and Zhu's per-task CNNs train this way.

Losses are masked per task (rows without a label contribute nothing, a task no row of a batch
carries is left out of that step), weighted by fixed task weights; gradients are clipped to
norm 10; the validation batches are scored after every epoch.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from facefuse.data.loader import Batch
from facefuse.tasks import Task, get_task
from facefuse.train.engine import Engine, Loss, Recipe, static_weighting
from facefuse.train.loop import OptimConfig, evaluate, task_loss


class TaskRecipe(Recipe):
    """One model, heads named by task, trained on :class:`Batch` iterables (a
    :class:`~facefuse.data.loader.CacheLoader`, sharded under DDP, or any re-iterable).

    ``task_weights`` names the tasks trained (registered names, or keys of ``tasks`` for
    derived targets) and their loss weights.
    """

    max_grad_norm = 10.0

    def __init__(self, model: nn.Module, train_batches: Iterable[Batch], optim: OptimConfig,
                 task_weights: Mapping[str, float], val_batches: Iterable[Batch] | None = None,
                 tasks: Mapping[str, Task] | None = None, config: Any = None) -> None:
        self.model, self.optim, self.epochs = model, optim, optim.epochs
        self.train, self.val = train_batches, val_batches
        self.defs = {name: (tasks or {}).get(name) or get_task(name) for name in task_weights}
        self.weighting = static_weighting(task_weights)
        self.config = config
        # DDP: with one task, every batch uses every head; with more, a batch may lack one
        self.find_unused_parameters = len(self.defs) > 1

    def batches(self, epoch: int) -> Iterable[Batch]:
        return self.train

    def losses(self, output: Any, batch: Batch, epoch: int) -> dict[str, Loss]:
        terms = {}
        for name, task in self.defs.items():
            mask = batch.masks[name]
            if mask.any():
                terms[name] = Loss(task_loss(task, output[name], batch.labels[name], mask),
                                   mask.sum())
        return terms

    def validate(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        return {} if self.val is None else {"val": evaluate(model, self.val, self.defs)}

    def state_dict(self) -> dict[str, Any]:  # the loader's epoch and augmentation draws
        return {"train": self.train.state_dict()} if hasattr(self.train, "state_dict") else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "train" in state:
            self.train.load_state_dict(state["train"])  # type: ignore[attr-defined]


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    seconds: float


def fit(model: nn.Module, train_batches: Iterable[Batch], cfg: OptimConfig,
        task_weights: Mapping[str, float], val_batches: Iterable[Batch] | None = None,
        tasks: Mapping[str, Task] | None = None, folder: str | Path | None = None,
        config: Any = None, name: str = "", progress: bool = False, bf16: bool = False,
        channels_last: bool = False) -> FitResult:
    """Train ``model`` for ``cfg.epochs`` epochs with :class:`TaskRecipe`, evaluating on
    ``val_batches`` after each; on the device its parameters are on. With ``folder``, the
    run keeps its state there and resumes from it (``config``: what it must match);
    ``bf16`` and ``channels_last`` apply on CUDA (see :class:`~facefuse.train.engine.Recipe`).
    """
    start = time.perf_counter()
    recipe = TaskRecipe(model, train_batches, cfg, task_weights, val_batches, tasks, config)
    recipe.bf16, recipe.channels_last = bf16, channels_last
    device = next(model.parameters()).device
    history = Engine(recipe, device, folder, name, progress).fit()
    return FitResult(history, time.perf_counter() - start)
