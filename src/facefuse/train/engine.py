"""The one training loop: every recipe (the multi-task trainer, Li and Zhu's per-task CNNs and
fusion heads, DMM-CNN) is trained by :class:`Engine`.

A :class:`Recipe` says what to train (its model and loss weighting), on what (its batches per
epoch) and with which loss (the forward pass and the masked loss terms of one batch); the
engine owns the rest:

* epochs of steps: forward under bf16 autocast on CUDA (``recipe.bf16``), the recipe's loss
  terms combined by its weighting strategy (:mod:`facefuse.train.weighting`), backward,
  optional gradient clipping, the optimiser's step, the scheduler's step after each epoch;
  models in channels_last on CUDA (``recipe.channels_last``);
* the mean of each loss term per epoch (summed over every rank under DDP), passed to the
  weighting strategy (DWA uses it), and an error when one became NaN;
* evaluation after each epoch (``recipe.validate``, on rank 0; every rank gets its result);
* DDP when launched by ``torchrun`` (:mod:`facefuse.train.distributed`: gloo on the CPU,
  NCCL on CUDA); a recipe's batches are each rank's share of the epoch
  (:class:`facefuse.data.loader.CacheLoader`'s ``shard``); only rank 0 writes;
* with a run folder: ``state.pt`` after every finished epoch (weights, optimiser, scheduler,
  weighting, history, and every rank's own recipe state, such as its loaders' position, and
  random state), written to a temporary file and renamed, so a killed run leaves the last
  whole epoch, and a resumed run on as many ranks goes on draw for draw as if never stopped;
  a new engine on that folder resumes after it, refusing a state of another config
  (:class:`RunConflict`);
* progress bars (epochs and steps, rank 0) and :func:`run_lock`, one training per folder.
"""

from __future__ import annotations

import abc
import json
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from tqdm.auto import tqdm

from facefuse.config import ConfigError, same_config, to_dict
from facefuse.data.file_lock import LockHeld, exclusive_lock
from facefuse.files import atomic_path
from facefuse.train.distributed import barrier, from_rank0, gather, join, launched_as_main
from facefuse.train.loop import OptimConfig, make_optimizer
from facefuse.train.weighting import LossWeighting, StaticWeighting

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
LOCK_FILE = ".training.lock"


class RunConflict(ConfigError):
    """The run folder belongs to another config, or another process is training into it."""


class Loss(NamedTuple):
    """One loss term of a batch: its value (a scalar, the mean over the rows it covers) and
    how many rows it covers (the weight of this batch in the epoch's mean). ``weight``
    None: the recipe's weighting strategy weighs it (its name must be one of the strategy's
    tasks); a number: added with that fixed weight (e.g. a distillation term)."""

    value: torch.Tensor
    count: torch.Tensor | int
    weight: float | None = None


class Recipe(abc.ABC):
    """What to train, on what, with which loss; subclasses set the attributes and implement
    :meth:`batches` and :meth:`losses` (abstract), and may override the hooks.

    Attributes:
        model: the model (the engine moves it to its device).
        epochs: the last epoch to train.
        weighting: combines the loss terms whose ``weight`` is None.
        optim: the optimiser and schedule (see :meth:`optimizers`).
        max_grad_norm: clip the trained parameters' gradient norm to this (None: no clip).
        bf16: autocast the forward pass to bfloat16 on CUDA.
        channels_last: channels_last memory format on CUDA.
        config: what a resumed run must match (a dataclass config or plain data).
        find_unused_parameters: DDP's option (heads a batch may not use).
    """

    model: nn.Module
    epochs: int
    weighting: LossWeighting
    optim: OptimConfig | None = None
    max_grad_norm: float | None = None
    bf16: bool = False
    channels_last: bool = False
    config: Any = None
    find_unused_parameters: bool = True

    def optimizers(self, params: list[nn.Parameter]
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
        """The optimiser over ``params`` (the trained weights, then the weighting's) and its
        scheduler (stepped after every epoch; None: none)."""
        if self.optim is None:
            raise ValueError(f"{type(self).__name__} has no optim: a recipe sets optim or "
                             f"overrides optimizers()")
        return make_optimizer(params, self.optim)

    def loss_names(self, epoch: int) -> list[str]:
        """The loss terms an epoch logs (the same on every rank)."""
        return list(self.weighting.tasks)

    def start_epoch(self, epoch: int) -> dict[str, Any]:
        """Called after ``model.train()`` (e.g. to put frozen modules back in eval mode);
        returns fields for the epoch's log entry."""
        return {}

    @abc.abstractmethod
    def batches(self, epoch: int) -> Iterable[Any]:
        """This rank's batches of ``epoch`` (1-based)."""

    def forward(self, model: nn.Module, batch: Any, epoch: int) -> Any:
        """The model's output on a batch (under autocast); ``model`` may be DDP-wrapped."""
        return model(batch.images)

    @abc.abstractmethod
    def losses(self, output: Any, batch: Any, epoch: int) -> Mapping[str, Loss]:
        """The masked loss terms of one batch."""

    def validate(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        """Fields for the epoch's log entry (rank 0 only, in eval mode without gradients;
        every rank gets the result). JSON-able: the history is stored as JSON."""
        return {}

    def end_epoch(self, epoch: int, entry: dict[str, Any]) -> None:  # noqa: B027 (a hook: nothing by default)
        """After the evaluation, on every rank, with the epoch's whole log entry."""

    def on_saved(self, folder: Path, epoch: int) -> None:  # noqa: B027 (a hook: nothing by default)
        """After rank 0 wrote the epoch's state (e.g. a checkpoint of the last epoch)."""

    def state_dict(self) -> dict[str, Any]:
        """The recipe's own state a resumed run needs (its loaders' position, ...)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:  # noqa: B027 (a hook: nothing by default)
        """Restore what :meth:`state_dict` gave (nothing, by default)."""


def static_weighting(weights: Mapping[str, float]) -> StaticWeighting:
    """Fixed weights per loss term."""
    return StaticWeighting(list(weights), dict(weights))


class Engine:
    """Trains one recipe: ``Engine(recipe, device, folder).fit()`` returns the history.

    Args:
        recipe: what to train.
        device: where (under DDP on CUDA, the local rank's GPU is used instead).
        folder: where ``state.pt`` goes and a run resumes from (None: neither).
        name: the run's name in progress bars and logs.
        progress: show progress bars (rank 0).
    """

    def __init__(self, recipe: Recipe, device: torch.device, folder: str | Path | None = None,
                 name: str = "", progress: bool = False) -> None:
        self.recipe = recipe
        self.device, self.dist = join(device)
        self.folder = Path(folder) if folder is not None else None
        self.name, self.progress = name, progress and self.dist.is_main
        self.model = recipe.model.to(self.device)
        if recipe.channels_last and self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.weighting = recipe.weighting.to(self.device)
        self.trained = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer, self.scheduler = recipe.optimizers(
            self.trained + list(self.weighting.parameters()))
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 1
        self.samples = 0
        self.epoch_info: dict[str, Any] = {}
        self._resume()
        self.ddp_model: nn.Module = self.model
        if self.dist.enabled:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                else None, find_unused_parameters=recipe.find_unused_parameters)

    # -- the loop ---------------------------------------------------------------------------
    def fit(self) -> list[dict[str, Any]]:
        """Train from the first unfinished epoch to ``recipe.epochs``; the whole history."""
        epochs = range(self.start_epoch, self.recipe.epochs + 1)
        for epoch in tqdm(epochs, desc=self.name or "epochs", unit="epoch", leave=False,
                          disable=not self.progress):
            t0 = time.perf_counter()
            losses = self.train_epoch(epoch)
            seconds = time.perf_counter() - t0
            entry = {"epoch": epoch, **self.epoch_info, "loss": losses,
                     "world_size": self.dist.world_size, "seconds": round(seconds, 2),
                     "images_per_second": round(self.samples / max(seconds, 1e-9), 1),
                     "weights": self.weighting.current()}
            entry.update(self._validate(epoch))
            self.recipe.end_epoch(epoch, entry)
            self.history.append(entry)
            log.info("%sepoch %d: %s", f"{self.name} " if self.name else "", epoch, entry)
            self._save(epoch)
            if self.dist.enabled:
                log.info("rank %d of %d: %s epoch %d parameter checksum %.10e", self.dist.rank,
                         self.dist.world_size, self.name, epoch, self.checksum())
            barrier(self.dist)
        if self.dist.enabled:
            log.info("rank %d of %d: parameter checksum %.10e", self.dist.rank,
                     self.dist.world_size, self.checksum())
        return self.history

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch of steps (the model in training mode, then the recipe's
        :meth:`~Recipe.start_epoch`); the mean of each loss term (over every rank) and
        ``steps``."""
        recipe, device = self.recipe, self.device
        self.ddp_model.train()
        self.epoch_info = recipe.start_epoch(epoch)
        names = recipe.loss_names(epoch)
        # running sums stay on the device: no host sync per step (the GPU keeps its queue)
        sums = torch.zeros(len(names), device=device)
        counts = torch.zeros(len(names), device=device)
        slot = {n: i for i, n in enumerate(names)}
        autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                                  enabled=recipe.bf16 and device.type == "cuda")
        steps = samples = 0
        for batch in tqdm(recipe.batches(epoch), desc=f"epoch {epoch}", unit="batch",
                          leave=False, disable=not self.progress):
            with autocast:
                output = recipe.forward(self.ddp_model, batch, epoch)
            terms = recipe.losses(output, batch, epoch)
            if not terms:  # no row of the batch carries a label trained now
                if self.dist.enabled:  # the other ranks wait for this one's gradients
                    raise RuntimeError(f"{self.name or 'a run'}: a batch without any loss "
                                       f"term under DDP (every rank must step together)")
                continue
            loss = self._combine(terms)
            for name, term in terms.items():
                if name not in slot:
                    raise KeyError(f"loss term {name!r} is not among the epoch's loss names "
                                   f"{names}")
                sums[slot[name]] += term.value.detach().float() * term.count
                counts[slot[name]] += term.count
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.max_grad_norm is not None:
                nn.utils.clip_grad_norm_(self.trained, recipe.max_grad_norm)
            self.optimizer.step()
            steps += 1
            samples += len(batch)
        if self.scheduler is not None:
            self.scheduler.step()
        totals = torch.cat([sums, counts, torch.tensor([float(samples)], device=device)])
        if self.dist.enabled:
            torch.distributed.all_reduce(totals)
        host = totals.tolist()
        sums_h, counts_h, self.samples = host[:len(names)], host[len(names):-1], int(host[-1])
        means = {n: sums_h[i] / counts_h[i] for n, i in slot.items() if counts_h[i]}
        bad = {n: v for n, v in means.items() if not math.isfinite(v)}
        if bad:
            raise FloatingPointError(f"training loss became {bad} in epoch {epoch}; lower the "
                                     f"learning rate")
        self.weighting.end_epoch({n: v for n, v in means.items() if n in self.weighting.tasks})
        return {**means, "steps": steps}

    def _combine(self, terms: Mapping[str, Loss]) -> torch.Tensor:
        weighted = {n: t.value for n, t in terms.items() if t.weight is None}
        loss = self.weighting.combine(weighted)
        for term in terms.values():
            if term.weight is not None:
                loss = loss + term.weight * term.value
        return loss

    @torch.no_grad()
    def _validate(self, epoch: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        if self.dist.is_main:
            self.model.eval()  # the bare model: the DDP wrapper's forward syncs every rank
            result = self.recipe.validate(self.model, epoch)
        return from_rank0(self.dist, result)

    def checksum(self) -> float:
        """The sum of every parameter (ranks in step have the same one)."""
        return float(sum(p.detach().double().sum() for p in self.model.parameters()))

    # -- state ------------------------------------------------------------------------------
    def _state_file(self) -> Path | None:
        return self.folder / STATE_FILE if self.folder is not None else None

    def _resume(self) -> None:
        path = self._state_file()
        if path is None or not path.is_file():
            return
        state = torch.load(path, map_location=self.device, weights_only=True)
        if not same_config(json.loads(state.get("config") or "null"),
                           self.recipe.config):
            raise RunConflict(f"{path} belongs to a run with another config; use another "
                              f"output folder or delete it")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        missing, unexpected = self.weighting.load_state_dict(state["weighting"], strict=False)
        if unexpected or set(missing) - {"_extra_state"}:  # extra: absent in older states
            raise RunConflict(f"{path}: its loss weighting does not fit this run's "
                              f"(missing {missing}, unexpected {unexpected})")
        ranks = state.get("ranks", [])
        # each rank's own loaders and random state; with another number of ranks, rank 0's
        # (the run goes on, no longer draw for draw as it would have)
        own = ranks[self.dist.rank] if len(ranks) == self.dist.world_size else state
        self.recipe.load_state_dict(own.get("recipe", {}))
        if "rng" in own:
            torch.set_rng_state(own["rng"].cpu())
        if "cuda_rng" in own and torch.cuda.is_available():
            torch.cuda.set_rng_state(own["cuda_rng"].cpu())
        self.history = json.loads(state["history"])
        self.start_epoch = int(state["epoch"]) + 1
        log.info("%sresuming after epoch %d", f"{self.name}: " if self.name else "",
                 state["epoch"])

    def _save(self, epoch: int) -> None:
        path = self._state_file()
        if path is None:
            return
        own = {"recipe": self.recipe.state_dict(), "rng": torch.get_rng_state()}
        if self.device.type == "cuda":
            own["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        ranks = gather(self.dist, own)  # every rank's loaders draw on their own
        if not self.dist.is_main:
            return
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict() if self.scheduler else {},
                 "weighting": self.weighting.state_dict(), **own, "epoch": epoch,
                 "history": json.dumps(self.history),
                 "config": json.dumps(to_dict(self.recipe.config), sort_keys=True)}
        if self.dist.enabled:
            state["ranks"] = ranks
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        self.recipe.on_saved(path.parent, epoch)


@contextmanager
def run_lock(folder: str | Path) -> Iterator[None]:
    """One training at a time in ``folder``: rank 0 (or a process not launched by torchrun)
    holds ``folder/.training.lock`` for the block; the other ranks hold nothing.

    Raises:
        RunConflict: another process holds it now.
    """
    if not launched_as_main():
        yield
        return
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as held:
        try:
            held.enter_context(exclusive_lock(out / LOCK_FILE, wait=False))
        except LockHeld:
            raise RunConflict(f"another process is training into {out} now; wait for it to "
                              f"finish or use another output folder") from None
        yield


__all__ = ["Engine", "Loss", "Recipe", "RunConflict", "run_lock", "static_weighting"]
