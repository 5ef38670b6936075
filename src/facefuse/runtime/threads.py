"""How many threads numpy's BLAS may use while faces are analyzed.

The analyzer's numpy work is small matrices (the landmark refiner's linear stages, the
identity heads, alignment); ONNX Runtime and OpenCV run the networks on their own thread
pools. numpy's OpenBLAS, left at one thread per core, spins its threads between those small
calls and takes the cores from the networks: on the 2-core development CPU one photo took
139 ms with it and 77 ms with BLAS at one thread (``benchmarks/compare_peers.py
--speed-only``'s stages; ``docs/MODEL_CARD.md``).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def limit_blas_threads(threads: int | None) -> None:
    """Limit the BLAS libraries loaded in this process now (numpy's OpenBLAS, and any other
    loaded by then) to ``threads`` threads, process-wide (None: leave them as they are). Uses
    threadpoolctl; a missing threadpoolctl is logged and left alone.

    Raises:
        ValueError: ``threads`` is not a positive whole number.
    """
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"blas_threads must be a positive whole number or None, got "
                         f"{threads!r}")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        log.info("threadpoolctl is not installed: numpy's BLAS threads left as they are")
        return
    threadpool_limits(limits=threads, user_api="blas")


#: intra-op threads for ONNX Runtime sessions opened from now on in this process that do not
#: set their own (None: ONNX Runtime's default, one per core); see :func:`set_session_threads`
_SESSION_THREADS: int | None = None


def set_session_threads(threads: int | None) -> None:
    """Open every later ONNX Runtime session of this process that names no thread count
    with ``threads`` intra-op threads (None: ONNX Runtime's default, one per core). For
    several analyzer processes on one machine (``facefuse batch``'s workers): each left at
    one thread per core, they contend for the cores.

    Raises:
        ValueError: ``threads`` is not a positive whole number or None.
    """
    global _SESSION_THREADS
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ValueError(f"session threads must be a positive whole number or None, got "
                         f"{threads!r}")
    _SESSION_THREADS = threads


def session_threads() -> int | None:
    """The thread count :func:`set_session_threads` set (None: not set)."""
    return _SESSION_THREADS
