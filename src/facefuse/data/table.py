"""The sample table: one row per image, one label column per task, missing labels allowed.

Every reader returns a :class:`SampleTable` with the same columns (every registered task is
a column, filled with the task's missing value where the dataset has no such label), so
tables from different datasets concatenate and one batch can mix them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facefuse.tasks import TASK_ORDER, TaskKind, get_task

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class SampleTable:
    """Column-wise table of samples.

    Attributes:
        sample_id: unique id per row, ``"<dataset>/<path relative to the dataset root>"``.
        image: absolute image path per row.
        dataset: dataset name per row.
        split: ``"train"``, ``"val"``, ``"test"`` or ``""`` (unassigned) per row.
        fold: official fold index where the dataset has folds (LFW View 2), else -1.
        labels: task name -> label column (see :mod:`facefuse.tasks` for missing values).
    """

    sample_id: np.ndarray
    image: np.ndarray
    dataset: np.ndarray
    split: np.ndarray
    fold: np.ndarray
    labels: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.sample_id)
        for name in ("image", "dataset", "split", "fold"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"column {name!r} has {len(getattr(self, name))} rows, "
                                 f"expected {n}")
        missing = [t for t in TASK_ORDER if t not in self.labels]
        if missing:
            raise ValueError(f"sample table lacks label columns {missing}")
        for name, column in self.labels.items():
            task = get_task(name)
            if column.shape != (n, *task.label_shape):
                raise ValueError(f"label column {name!r} has shape {column.shape}, expected "
                                 f"{(n, *task.label_shape)}")
        bad = set(np.unique(self.split)) - {*SPLITS, ""} if n else set()
        if bad:
            raise ValueError(f"unknown split names {sorted(bad)}; valid: {SPLITS}")

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_columns(
        cls,
        sample_id: Sequence[str],
        image: Sequence[str],
        dataset: str | Sequence[str],
        labels: Mapping[str, Sequence | np.ndarray] | None = None,
        split: Sequence[str] | None = None,
        fold: Sequence[int] | None = None,
    ) -> SampleTable:
        """Build a table; label columns not given are filled with missing values."""
        n = len(sample_id)
        columns: dict[str, np.ndarray] = {}
        for name in TASK_ORDER:
            task = get_task(name)
            if labels is not None and name in labels:
                columns[name] = np.asarray(labels[name], dtype=task.label_dtype).reshape(
                    n, *task.label_shape)
            else:
                columns[name] = task.empty_column(n)
        unknown = set(labels or {}) - set(TASK_ORDER)
        if unknown:
            raise ValueError(f"unknown label columns {sorted(unknown)}; valid: {TASK_ORDER}")
        return cls(
            sample_id=np.asarray(sample_id, dtype=object),
            image=np.asarray(image, dtype=object),
            dataset=np.full(n, dataset, dtype=object) if isinstance(dataset, str)
            else np.asarray(dataset, dtype=object),
            split=np.asarray(split if split is not None else [""] * n, dtype=object),
            fold=np.asarray(fold if fold is not None else [-1] * n, dtype=np.int16),
            labels=columns,
        )

    @classmethod
    def concat(cls, tables: Sequence[SampleTable]) -> SampleTable:
        """Stack tables row-wise; sample ids must stay unique."""
        if not tables:
            return cls.from_columns([], [], [])
        out = cls(
            sample_id=np.concatenate([t.sample_id for t in tables]),
            image=np.concatenate([t.image for t in tables]),
            dataset=np.concatenate([t.dataset for t in tables]),
            split=np.concatenate([t.split for t in tables]),
            fold=np.concatenate([t.fold for t in tables]),
            labels={k: np.concatenate([t.labels[k] for t in tables]) for k in TASK_ORDER},
        )
        if len(np.unique(out.sample_id)) != len(out):
            raise ValueError("concatenated tables share sample ids; each table must come from a "
                             "different dataset or root")
        return out

    # -- access ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.sample_id)

    def select(self, index: np.ndarray | Sequence[int] | Sequence[bool]) -> SampleTable:
        """Rows by integer index or boolean mask."""
        index = np.asarray(index)
        if index.dtype == bool and len(index) != len(self):
            raise ValueError(f"mask has {len(index)} entries, table has {len(self)} rows")
        return SampleTable(
            sample_id=self.sample_id[index], image=self.image[index],
            dataset=self.dataset[index], split=self.split[index], fold=self.fold[index],
            labels={k: v[index] for k, v in self.labels.items()},
        )

    def split_rows(self, split: str) -> SampleTable:
        """The rows of one split."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {SPLITS}")
        return self.select(self.split == split)

    def with_split(self, split: np.ndarray) -> SampleTable:
        """A copy with the split column replaced."""
        return SampleTable(self.sample_id, self.image, self.dataset,
                           np.asarray(split, dtype=object), self.fold, self.labels)

    def with_labels(self, **columns: np.ndarray) -> SampleTable:
        """A copy with some label columns replaced."""
        labels = dict(self.labels)
        labels.update(columns)
        return SampleTable(self.sample_id, self.image, self.dataset, self.split, self.fold,
                           labels)

    def present(self, task: str) -> np.ndarray:
        """Boolean mask of rows that carry a label for ``task``."""
        return get_task(task).is_present(self.labels[task])

    def tasks_present(self) -> list[str]:
        """Tasks with at least one labelled row."""
        return [t for t in TASK_ORDER if len(self) and self.present(t).any()]

    def datasets(self) -> list[str]:
        """Dataset names in the table, sorted."""
        return sorted(set(self.dataset.tolist()))

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the table as ``.npz`` (labels) plus its string columns as JSON inside it."""
        path = Path(path)
        strings = {k: getattr(self, k).tolist() for k in ("sample_id", "image", "dataset",
                                                           "split")}
        strings["identity"] = self.labels["identity"].tolist()
        arrays = {f"label_{k}": v for k, v in self.labels.items()
                  if get_task(k).kind is not TaskKind.IDENTITY}
        np.savez(path, strings=np.frombuffer(json.dumps(strings).encode(), dtype=np.uint8),
                 fold=self.fold, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> SampleTable:
        """Read a table written by :meth:`save` (no pickles involved)."""
        with np.load(path, allow_pickle=False) as data:
            strings = json.loads(data["strings"].tobytes().decode())
            labels = {k[len("label_"):]: data[k] for k in data.files if k.startswith("label_")}
            fold = data["fold"]
        labels["identity"] = np.asarray(strings["identity"], dtype=object)
        return cls(
            sample_id=np.asarray(strings["sample_id"], dtype=object),
            image=np.asarray(strings["image"], dtype=object),
            dataset=np.asarray(strings["dataset"], dtype=object),
            split=np.asarray(strings["split"], dtype=object),
            fold=fold, labels=labels,
        )
