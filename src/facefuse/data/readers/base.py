"""The reader contract and helpers shared by every dataset reader."""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from facefuse.data.images import check_image_file, is_image_name
from facefuse.data.table import SampleTable
from facefuse.registry import Registry

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A whole dataset cannot be read; the message names what is missing or wrong."""


@dataclass(frozen=True)
class Skipped:
    """A file (or label line) that a reader left out, and why."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass(frozen=True)
class ReadResult:
    """What a reader returns: the table, what it skipped and dataset-level notes."""

    name: str
    root: str
    table: SampleTable
    skipped: tuple[Skipped, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass
class SkipLog:
    """Collects skipped files while a reader runs; logs each as it happens."""

    dataset: str
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def skip(self, path: str | Path, reason: str) -> None:
        self.skipped.append(Skipped(str(path), reason))
        log.warning("%s: skipped %s: %s", self.dataset, path, reason)

    def note(self, text: str) -> None:
        self.notes.append(text)
        log.info("%s: %s", self.dataset, text)

    def result(self, root: Path, table: SampleTable) -> ReadResult:
        if self.skipped:
            log.warning("%s: %d file(s) skipped, %d sample(s) read", self.dataset,
                        len(self.skipped), len(table))
        return ReadResult(self.dataset, str(root), table, tuple(self.skipped),
                          tuple(self.notes))


@dataclass(frozen=True)
class SplitConfig:
    """How a reader assigns splits where the data has no official ones."""

    seed: int = 0
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    #: share of an official train split held out as validation (FER2013)
    val_fraction: float = 0.1

    @property
    def fractions_text(self) -> str:
        """The train/val/test fractions as notes write them, e.g. ``0.8/0.1/0.1``."""
        return "/".join(str(f) for f in self.fractions)


class DatasetReader(abc.ABC):
    """Reads one public dataset layout into a :class:`SampleTable`.

    Subclasses set ``name`` and ``description`` and implement :meth:`locate` (find the
    layout under a root folder) and :meth:`read`.
    """

    name: ClassVar[str]
    description: ClassVar[str]

    @abc.abstractmethod
    def locate(self, root: Path) -> Path | None:
        """Return this dataset's folder under ``root`` (``root`` itself included), or None."""

    @abc.abstractmethod
    def read(self, root: Path, splits: SplitConfig = SplitConfig()) -> ReadResult:
        """Read the dataset at ``root`` (a folder :meth:`locate` returned, or a file).

        Raises:
            DatasetError: when nothing of the dataset can be read.
        """


READERS: Registry[type[DatasetReader]] = Registry("dataset reader")


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else a :class:`DatasetError` naming it."""
    if not path.is_dir():
        raise DatasetError(f"{what}: folder {path} does not exist")
    return path


def subfolders(folder: Path, log_: SkipLog, outside: str) -> Iterator[Path]:
    """The folders directly in ``folder``, sorted; a file among them is logged as skipped
    (``file outside <outside>``, e.g. ``an emotion folder``) when the walk reaches it, so
    the skip log keeps the order of the folder."""
    for p in sorted(folder.iterdir()):
        if p.is_dir():
            yield p
        else:
            log_.skip(p, f"file outside {outside}")


def check_files(paths: Sequence[Path], log_: SkipLog) -> list[bool]:
    """Structural image check for many files at once; bad ones are logged as skipped."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        problems = list(pool.map(check_image_file, paths, chunksize=64))
    for p, problem in zip(paths, problems, strict=True):
        if problem is not None:
            log_.skip(p, problem)
    return [p is None for p in problems]


def list_images(folder: Path, log_: SkipLog) -> list[Path]:
    """Image files directly in ``folder`` (sorted); other files are logged as skipped."""
    out = []
    for p in sorted(folder.iterdir()):
        if p.is_dir():
            continue
        if is_image_name(p):
            out.append(p)
        elif not p.name.startswith("."):
            log_.skip(p, f"not an image file (suffix {p.suffix or 'none'!r})")
    return out


def keep_readable(log_: SkipLog, paths: Sequence[Path],
                  *columns: Sequence) -> tuple[list, ...]:
    """Check the image files (:func:`check_files`, which logs the bad ones) and return
    ``paths`` and each column parallel to it without the entries of unreadable files."""
    ok = check_files(paths, log_)
    return tuple([x for x, good in zip(column, ok, strict=True) if good]
                 for column in (paths, *columns))


def relative_ids(dataset: str, root: Path, paths: Iterable[Path]) -> list[str]:
    """Sample ids ``dataset/relative/path``, one per path under ``root``."""
    return [f"{dataset}/{p.relative_to(root).as_posix()}" for p in paths]


def build_result(log_: SkipLog, root: Path, ids: Sequence[str], paths: Sequence[Path],
                 split: Sequence[str], labels: dict[str, Sequence | np.ndarray],
                 fold: Sequence[int] | None = None) -> ReadResult:
    """A reader's result: the table of ``paths`` (dataset name from ``log_``) with what
    ``log_`` skipped and noted."""
    table = SampleTable.from_columns(ids, [str(p) for p in paths], log_.dataset,
                                     split=split, fold=fold, labels=labels)
    return log_.result(root, table)


def first_existing(candidates: Iterable[Path]) -> Path | None:
    """The first candidate folder that exists."""
    return next((c for c in candidates if c.is_dir()), None)
