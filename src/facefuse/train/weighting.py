"""Loss weighting strategies for multi-task training, by name.

Each strategy combines per-task losses into one scalar: ``combine(losses) -> total``, and may
learn (its parameters go to the optimiser) or update at the end of an epoch.

* ``static``: ``sum_t w_t L_t`` with the configured weights (1 where not given).
* ``uncertainty``: homoscedastic uncertainty weighting (Kendall, Gal and Cipolla, 2018):
  ``sum_t exp(-s_t) L_t + s_t`` with a learned ``s_t = log sigma_t^2`` per task.
* ``dwa``: Dynamic Weight Average (Liu, Johns and Davison, 2019): after epoch ``k >= 2``,
  ``w_t = T_n * softmax_t(r_t / T)`` with ``r_t = L_t(k-1) / L_t(k-2)``, ``T_n`` the number
  of tasks (:func:`dwa_weights`). The multi-task trainer feeds it each task's mean training
  loss; DMM-CNN feeds it each attribute's validation loss (its "tasks" are the 40
  attributes). Weights average 1; a task whose loss falls slowly or rises gets more weight;
  a lower ``T`` sharpens the weighting, ``T -> inf`` gives equal weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from facefuse.registry import Registry

WEIGHTINGS: Registry[Callable[..., LossWeighting]] = Registry("loss weighting")


class LossWeighting(nn.Module):
    """Base: static weights; subclasses learn or adapt them."""

    def __init__(self, tasks: Sequence[str], weights: Mapping[str, float] | None = None
                 ) -> None:
        super().__init__()
        unknown = set(weights or {}) - set(tasks)
        if unknown:
            raise ValueError(f"weights for tasks not trained: {sorted(unknown)}")
        self.tasks = list(tasks)
        self.static = {t: float((weights or {}).get(t, 1.0)) for t in tasks}

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.static[t] * loss for t, loss in losses.items())  # type: ignore[return-value]

    def end_epoch(self, mean_losses: Mapping[str, float]) -> None:
        """Called with the epoch's mean training loss per task."""

    def current(self) -> dict[str, float]:
        """The effective weight per task, for logs."""
        return dict(self.static)


@WEIGHTINGS.register("static")
class StaticWeighting(LossWeighting):
    pass


@WEIGHTINGS.register("uncertainty")
class UncertaintyWeighting(LossWeighting):
    def __init__(self, tasks: Sequence[str], weights: Mapping[str, float] | None = None
                 ) -> None:
        super().__init__(tasks, weights)
        self.log_vars = nn.ParameterDict({t: nn.Parameter(torch.zeros(())) for t in tasks})

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        total = 0.0
        for t, loss in losses.items():
            s = self.log_vars[t]
            total = total + self.static[t] * (torch.exp(-s) * loss + s)
        return total  # type: ignore[return-value]

    def current(self) -> dict[str, float]:
        return {t: self.static[t] * float(torch.exp(-self.log_vars[t].detach()))
                for t in self.tasks}


def dwa_weights(previous: np.ndarray, last: np.ndarray, temperature: float) -> np.ndarray:
    """The DWA rule: ``K * softmax(r / T)`` over the loss ratios ``r = last / previous`` of
    ``K`` tasks (float64); a ratio that cannot be formed (a loss missing, NaN or 0) counts 1."""
    previous, last = np.asarray(previous, np.float64), np.asarray(last, np.float64)
    usable = (previous > 0) & np.isfinite(previous) & np.isfinite(last)
    ratio = np.where(usable, last / np.where(usable, previous, 1.0), 1.0)
    z = ratio / temperature
    e = np.exp(z - z.max())
    return len(z) * e / e.sum()


@WEIGHTINGS.register("dwa")
class DynamicWeightAverage(LossWeighting):
    """DWA (module docstring); its history travels in ``state_dict()`` (a resumed run
    weighs as the uninterrupted one would)."""

    def __init__(self, tasks: Sequence[str], weights: Mapping[str, float] | None = None,
                 temperature: float = 2.0) -> None:
        super().__init__(tasks, weights)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.history: list[dict[str, float]] = []
        self.dynamic = {t: 1.0 for t in tasks}

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.static[t] * self.dynamic[t] * loss  # type: ignore[return-value]
                   for t, loss in losses.items())

    def end_epoch(self, mean_losses: Mapping[str, float]) -> None:
        """Record one epoch's loss per task (a task left out counts as missing)."""
        unknown = set(mean_losses) - set(self.tasks)
        if unknown:
            raise ValueError(f"losses of tasks not weighted: {sorted(unknown)[:5]}")
        negative = {t: v for t, v in mean_losses.items() if v < 0}
        if negative:
            raise ValueError(f"losses must be >= 0, got {negative}")
        self.history.append({t: float(mean_losses.get(t, float("nan"))) for t in self.tasks})
        if len(self.history) < 2:
            return
        prev, last = ([h[t] for t in self.tasks] for h in self.history[-2:])
        w = dwa_weights(np.asarray(prev), np.asarray(last), self.temperature)
        self.dynamic = {t: float(v) for t, v in zip(self.tasks, w, strict=True)}

    def current(self) -> dict[str, float]:
        return {t: self.static[t] * self.dynamic[t] for t in self.tasks}

    def get_extra_state(self) -> dict[str, Any]:
        return {"history": [[h[t] for t in self.tasks] for h in self.history],
                "dynamic": [self.dynamic[t] for t in self.tasks]}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.history = [dict(zip(self.tasks, h, strict=True)) for h in state["history"]]
        self.dynamic = dict(zip(self.tasks, state["dynamic"], strict=True))
