"""Loss weighting strategies for multi-task training, by name.

Each strategy combines per-task losses into one scalar: ``combine(losses) -> total``, and may
learn (its parameters go to the optimiser) or update at the end of an epoch.

* ``static``: ``sum_t w_t L_t`` with the configured weights (1 where not given).
* ``uncertainty``: homoscedastic uncertainty weighting (Kendall, Gal and Cipolla, 2018):
  ``sum_t exp(-s_t) L_t + s_t`` with a learned ``s_t = log sigma_t^2`` per task.
* ``dwa``: Dynamic Weight Average (Liu, Johns and Davison, 2019) on the training losses:
  after epoch ``k >= 2``, ``w_t = T_n * softmax_t(r_t / T)`` with
  ``r_t = L_t(k-1) / L_t(k-2)`` (mean training loss per epoch), ``T_n`` the number of tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

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


@WEIGHTINGS.register("dwa")
class DynamicWeightAverage(LossWeighting):
    def __init__(self, tasks: Sequence[str], weights: Mapping[str, float] | None = None,
                 temperature: float = 2.0) -> None:
        super().__init__(tasks, weights)
        self.temperature = temperature
        self.history: list[dict[str, float]] = []
        self.dynamic = {t: 1.0 for t in tasks}

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.static[t] * self.dynamic[t] * loss  # type: ignore[return-value]
                   for t, loss in losses.items())

    def end_epoch(self, mean_losses: Mapping[str, float]) -> None:
        self.history.append({t: float(mean_losses.get(t, float("nan"))) for t in self.tasks})
        if len(self.history) < 2:
            return
        prev, last = self.history[-2], self.history[-1]
        ratios = torch.tensor([last[t] / prev[t] if prev[t] > 0 and last[t] == last[t] else 1.0
                               for t in self.tasks])
        w = len(self.tasks) * torch.softmax(ratios / self.temperature, dim=0)
        self.dynamic = {t: float(v) for t, v in zip(self.tasks, w, strict=True)}

    def current(self) -> dict[str, float]:
        return {t: self.static[t] * self.dynamic[t] for t in self.tasks}
