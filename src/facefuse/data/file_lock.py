"""An exclusive advisory lock on a file, so that processes on one machine take turns.

Used by :func:`facefuse.data.cache.build_cache` (two trainings started side by side on the
same data, one process per seed, would otherwise both build the same cache) and by
:func:`facefuse.train.mtl.train_mtl` (one training at a time in a run folder). The lock is
``fcntl.flock`` (Linux and macOS); it is released when the holder exits, however it exits,
so a killed process never leaves a stale lock. Where ``fcntl`` is missing (Windows) the
context manager does not lock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


class LockHeld(RuntimeError):
    """Another process holds the lock, and the caller asked not to wait."""


@contextmanager
def exclusive_lock(path: str | Path, waiting: str = "", wait: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block.

    Args:
        path: the lock file; it is left in place afterwards (removing it would let a
            waiting process and a new one lock two different files).
        waiting: logged (level WARNING, so a command shows it by default) when another
            process holds the lock and this one waits.
        wait: False raises :class:`LockHeld` at once where another process holds it.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise LockHeld(str(path)) from None
            if waiting:
                log.warning(waiting)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def held_elsewhere(path: str | Path) -> bool | None:
    """Whether another process holds the lock on ``path`` now (None where locks are not
    available); False when the file does not exist."""
    try:
        import fcntl  # noqa: F401 (only whether locks exist here)
    except ImportError:  # pragma: no cover - Windows
        return None
    if not Path(path).is_file():
        return False
    try:
        with exclusive_lock(path, wait=False):
            return False
    except LockHeld:
        return True
