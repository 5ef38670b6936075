"""Training a fusion head (or a single-source head) on stored features.

Features are standardised with the training rows' statistics (see :class:`FeatureScaler`);
the head trains with AdamW on mini-batches; the epoch with the best validation score is
kept; the test score is reported for that epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from facefuse.features.fusion import FusionHead
from facefuse.tasks import Task, TaskKind
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


def primary(task: Task) -> tuple[str, bool]:
    """The metric that selects the best epoch, and whether higher is better."""
    metric = task.metrics[0]
    return metric, metric not in ("mae", "nme_inter_ocular", "failure_rate")


def train_probe(task: Task, method: str, train_x: Sequence[np.ndarray], train_y: np.ndarray,
                val_x: Sequence[np.ndarray], val_y: np.ndarray, test_x: Sequence[np.ndarray],
                test_y: np.ndarray, cfg: ProbeConfig = ProbeConfig(), seed: int = 0,
                n_classes: int | None = None) -> ProbeResult:
    """Train ``method`` fusion + MLP head on the given sources; score val and test."""
    torch.manual_seed(seed)
    scalers = [FeatureScaler.fit(x) for x in train_x]

    def prep(xs: Sequence[np.ndarray]) -> list[torch.Tensor]:
        return [torch.from_numpy(sc.transform(x)) for sc, x in zip(scalers, xs, strict=True)]

    tr, va, te = prep(train_x), prep(val_x), prep(test_x)
    y_tr = torch.from_numpy(np.asarray(train_y))
    head = FusionHead(method, [x.shape[1] for x in tr], out_width(task, n_classes),
                      cfg.hidden, cfg.dropout)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    metric, higher = primary(task)
    best: tuple[float, int, dict, dict, np.ndarray] | None = None
    gen = torch.Generator().manual_seed(seed)
    n = len(y_tr)
    for epoch in range(1, cfg.epochs + 1):
        head.train()
        for idx in torch.randperm(n, generator=gen).split(cfg.batch_size):
            if len(idx) < 2:
                continue
            y = y_tr[idx]
            mask = ~torch.isnan(y) if y.is_floating_point() else y >= 0
            mask = mask.reshape(len(y), -1).any(1)
            loss = task_loss(task, head([x[idx] for x in tr]), y, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        head.eval()
        with torch.no_grad():
            val_scores = score(task, decode(task, head(va)), val_y)
            value = val_scores[metric]
            if best is None or (value > best[0] if higher else value < best[0]):
                test_pred = decode(task, head(te))
                best = (value, epoch, val_scores, score(task, test_pred, test_y), test_pred)
    assert best is not None
    return ProbeResult(best[2], best[3], best[1], best[4])
