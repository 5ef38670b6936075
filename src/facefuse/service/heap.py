"""The C heap of a long-running service process: glibc's allocator keeps what a process
frees for reuse, in one arena per thread that allocated (up to eight per core), and a
server whose request threads decode images and whose model thread runs ONNX Runtime
without its own arena frees a lot of memory of many sizes. Left alone, that memory stayed
counted against the process: resident memory rose from 360 MB after the warm-up to 480 MB
fewer than 1,000 requests later in ``benchmarks/bench_service.py --soak`` and was still
rising; with both in place it stayed between 226 and 481 MB (medians 305 to 325 MB per
thousand requests) over 10,000 requests of 16 clients (docs/SERVICE.md).

:func:`limit_arenas` caps the number of arenas (so that freed memory is shared, not parked
per thread) and :class:`Trimmer` hands free pages back to the system (``malloc_trim``) now
and then. Both need glibc; elsewhere they do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from functools import cache

log = logging.getLogger(__name__)

#: mallopt's parameter number for the most arenas (glibc's malloc.h)
M_ARENA_MAX = -8
#: arenas a service process may use (glibc's default is eight per core)
ARENAS = 2
#: seconds between two trims at most once
TRIM_EVERY_S = 1.0


@cache
def _libc() -> ctypes.CDLL | None:
    """glibc, or None where the C library is another (no mallopt / malloc_trim)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
        return None
    return libc


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Let the process's allocator use at most ``arenas`` arenas; call before the threads
    start. Whether it could (glibc only)."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, int(arenas)))


def trim() -> bool:
    """Give the free pages of every arena back to the system; whether any were."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))


class Trimmer:
    """Calls :func:`trim` when :meth:`maybe` is called at least ``every_s`` seconds after
    the last trim (the model thread calls it after each batch)."""

    def __init__(self, every_s: float = TRIM_EVERY_S) -> None:
        self.every_s, self._last = every_s, time.monotonic()

    def maybe(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            trim()
