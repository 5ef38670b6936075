"""Ready batches from a training cache: gathered from the memory map, moved to the device as
uint8, converted and (optionally) augmented there.

A background thread prepares the next batches while the model works on the current one.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from facefuse.data.augment import AugmentSpec, augment_batch
from facefuse.data.cache import TrainingCache
from facefuse.tasks import TASK_ORDER, TaskKind, get_task

#: ImageNet statistics: what timm trunks expect.
DEFAULT_MEAN = (0.485, 0.456, 0.406)
DEFAULT_STD = (0.229, 0.224, 0.225)


@dataclass
class Batch:
    """One batch: normalised images, labels and presence masks per task, and row indices.

    Missing labels keep the task's missing value (identity: -1 after encoding); ``masks``
    tells which rows carry each task's label.
    """

    images: torch.Tensor
    labels: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    index: np.ndarray

    def __len__(self) -> int:
        return self.images.shape[0]


def identity_classes(cache: TrainingCache, rows: np.ndarray) -> dict[str, int]:
    """Class index per identity appearing in ``rows`` (sorted by name)."""
    ids = cache.table.labels["identity"][rows]
    return {name: i for i, name in enumerate(sorted(set(ids.tolist()) - {""}))}


class CacheLoader:
    """Iterates over batches of cached rows.

    Args:
        cache: an opened :class:`TrainingCache`.
        rows: row indices to serve (e.g. ``cache.rows("train")``).
        batch_size: samples per batch.
        shuffle: reshuffle every epoch (seeded by ``seed`` and the epoch number).
        drop_last: drop a final short batch.
        device: where batches go (``"cpu"``, ``"cuda"``...).
        augment: device-side augmentation, or None.
        tasks: label columns of the cache's table to deliver (default: every task).
        identities: identity name -> class index; unknown names get -1 (masked).
        labels: instead of table columns, label arrays (one entry per cache row) by name,
            for derived targets; missing entries are NaN (float) or negative (integer).
        mean, std: normalisation.
        channels_last: return images in channels_last memory format.
        prefetch: batches prepared ahead by a background thread (0 disables the thread).
        shard: ``(rank, world_size)``: serve only this rank's share of each epoch's order
            (equal contiguous parts of the same global order on every rank, the remainder
            dropped, so every rank takes the same number of steps); its augmentation draws
            its own random numbers.
        inputs: instead of the cache's images, one precomputed array per cache row (e.g. a
            frozen trunk's feature maps, :mod:`facefuse.train.frozen_prefix`), served as
            float32 as they are: no normalisation, no augmentation.
    """

    def __init__(self, cache: TrainingCache, rows: Sequence[int] | np.ndarray,
                 batch_size: int = 256, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, device: str | torch.device = "cpu",
                 augment: AugmentSpec | None = None, tasks: Sequence[str] | None = None,
                 identities: dict[str, int] | None = None,
                 labels: Mapping[str, np.ndarray] | None = None,
                 mean: Sequence[float] = DEFAULT_MEAN, std: Sequence[float] = DEFAULT_STD,
                 channels_last: bool = False, prefetch: int = 2,
                 shard: tuple[int, int] = (0, 1), inputs: np.ndarray | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= shard[0] < shard[1]:
            raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size, "
                             f"got {shard}")
        self.cache = cache
        self.rows = np.asarray(rows, dtype=np.int64)
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= len(cache)):
            raise IndexError(f"rows out of range for a cache of {len(cache)} samples")
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last, self.device = drop_last, torch.device(device)
        self.augment = augment
        if inputs is not None and len(inputs) != len(cache):
            raise ValueError(f"inputs has {len(inputs)} rows, the cache {len(cache)}")
        if inputs is not None and augment is not None:
            raise ValueError("precomputed inputs cannot be augmented: give augment=None")
        self.inputs = inputs
        if labels is not None and tasks is not None:
            raise ValueError("give either tasks (table columns) or labels (arrays), not both")
        self.tasks = tuple(labels) if labels is not None else \
            tuple(tasks) if tasks is not None else TASK_ORDER
        if labels is None:
            for t in self.tasks:
                get_task(t)
        for name, arr in (labels or {}).items():
            if len(arr) != len(cache):
                raise ValueError(f"labels[{name!r}] has {len(arr)} entries, the cache "
                                 f"{len(cache)}")
        self.identities = identities or {}
        self.channels_last, self.prefetch = channels_last, prefetch
        self.epoch = 0
        self._mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._scale = (1.0 / (255.0 * self._std)).view(3)  # NHWC broadcast
        self._shift = (-self._mean / self._std).view(3)
        self._labels = dict(labels) if labels is not None else self._encode_labels()
        self.shard = shard
        self._generator = torch.Generator().manual_seed(seed + 7919 * shard[0])

    def state_dict(self) -> dict[str, object]:
        """Where the loader stands: epochs served and the augmentation's random state (a
        resumed run continues with the same draws)."""
        return {"epoch": self.epoch, "generator": self._generator.get_state()}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        self.epoch = int(state["epoch"])  # type: ignore[call-overload]
        self._generator.set_state(state["generator"].cpu())  # type: ignore[attr-defined]

    def _encode_labels(self) -> dict[str, np.ndarray]:
        out = {}
        for t in self.tasks:
            col = self.cache.table.labels[t]
            if get_task(t).kind is TaskKind.IDENTITY:
                col = np.asarray([self.identities.get(v, -1) for v in col], dtype=np.int64)
            out[t] = col
        return out

    def __len__(self) -> int:
        n = len(self.rows) // self.shard[1]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self) -> np.ndarray:
        order = self.rows
        if self.shuffle:
            order = order[np.random.default_rng([self.seed, self.epoch]).permutation(len(order))]
        rank, world = self.shard
        if world > 1:
            per_rank = len(order) // world
            order = order[rank * per_rank:(rank + 1) * per_rank]
        return order

    def _host_batch(self, idx: np.ndarray) -> tuple[torch.Tensor, dict[str, torch.Tensor],
                                                     np.ndarray]:
        idx = np.sort(idx)  # sequential reads from the memory map
        source = self.cache.images if self.inputs is None else self.inputs
        images = torch.from_numpy(np.ascontiguousarray(source[idx]))
        labels = {t: torch.from_numpy(np.ascontiguousarray(v[idx])) for t, v in
                  self._labels.items()}
        if self.device.type == "cuda":
            images = images.pin_memory()
        return images, labels, idx

    def _to_device(self, images: torch.Tensor, labels: dict[str, torch.Tensor],
                   idx: np.ndarray) -> Batch:
        nb = self.device.type == "cuda"
        x = images.to(self.device, non_blocking=nb)  # uint8 NHWC: 4x less to move than float
        labels = {t: v.to(self.device, non_blocking=nb) for t, v in labels.items()}
        masks = {}
        for t, v in labels.items():
            present = ~torch.isnan(v) if v.is_floating_point() else v >= 0
            masks[t] = present.reshape(len(v), -1).any(dim=1)
        if self.inputs is not None:
            x = x.float()
        elif self.augment is not None:
            x = x.permute(0, 3, 1, 2).float().div_(255)
            x, pts = augment_batch(x, labels.get("landmarks"), self.augment, self._generator)
            if pts is not None:
                labels["landmarks"] = pts
            x = x.sub_(self._mean).div_(self._std)
        else:
            # one fused pass in NHWC; the permuted view is channels_last in memory
            x = x.float().mul_(self._scale).add_(self._shift).permute(0, 3, 1, 2)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return Batch(x.contiguous(memory_format=fmt), labels, masks, idx)

    def _batches(self) -> Iterator[np.ndarray]:
        order = self._order()
        stop = len(self) * self.batch_size if self.drop_last else len(order)
        for start in range(0, stop, self.batch_size):
            yield order[start:start + self.batch_size]

    def __iter__(self) -> Iterator[Batch]:
        self.epoch += 1
        if self.prefetch <= 0:
            for idx in self._batches():
                yield self._to_device(*self._host_batch(idx))
            return
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        sentinel = object()

        def produce() -> None:
            try:
                for idx in self._batches():
                    if stop.is_set():
                        return
                    q.put(self._host_batch(idx))
                q.put(sentinel)
            except BaseException as exc:  # surfaced in the consumer
                q.put(exc)

        worker = threading.Thread(target=produce, daemon=True)
        worker.start()
        try:
            while True:
                item = q.get()
                if item is sentinel:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield self._to_device(*item)
        finally:
            stop.set()
            while worker.is_alive():
                try:
                    q.get_nowait()
                except queue.Empty:
                    worker.join(timeout=0.05)
