"""The local engine: a pool of processes on this machine, each with its own analyzer,
working through chunks of units; the driver commits each chunk as it comes back.

One worker runs in this process (no pool). A worker that dies stops the job with
:class:`WorkerDied`; the chunks committed before it stay, and a rerun does the rest.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from facefuse.batch.inputs import WorkUnit
from facefuse.batch.ledger import OutputFolder
from facefuse.batch.schema import FaceLayout, split_units
from facefuse.batch.work import BatchSettings, UnitWorker


class WorkerDied(RuntimeError):
    """A process of the local pool died mid-job (the committed chunks stay)."""


_WORKER: UnitWorker | None = None


def _start_worker(settings: BatchSettings, layout: FaceLayout) -> None:
    global _WORKER
    _WORKER = UnitWorker(settings, layout)


def _run_chunk(units: list[WorkUnit]):
    assert _WORKER is not None, "the pool's initializer did not run"
    return _WORKER.run(units)


def default_threads(workers: int) -> int:
    """Threads per worker so that ``workers`` of them fill this machine's cores."""
    return max(1, (os.cpu_count() or 1) // workers)


def run_local(units: Sequence[WorkUnit], settings: BatchSettings, layout: FaceLayout,
              out: OutputFolder, workers: int = 1, chunk_size: int = 64,
              on_chunk: Callable[[int], None] | None = None) -> int:
    """Analyze ``units`` with ``workers`` processes, ``chunk_size`` units a chunk, each
    chunk committed to ``out`` as it is done (``on_chunk`` gets its unit count); returns
    the units done.

    Raises:
        WorkerDied: a pool process died (killed, out of memory).
    """
    if workers < 1 or chunk_size < 1:
        raise ValueError(f"workers and chunk size must be at least 1, got {workers}, "
                         f"{chunk_size}")
    if settings.threads is None:
        settings = settings.with_threads(default_threads(workers))
    chunks = [list(units[i:i + chunk_size]) for i in range(0, len(units), chunk_size)]
    done = 0

    def commit(table) -> None:
        nonlocal done
        faces, files = split_units(table, layout)
        out.write_piece("local", faces, files)
        done += files.num_rows
        if on_chunk is not None:
            on_chunk(files.num_rows)

    if workers == 1:
        worker = UnitWorker(settings, layout)
        for chunk in chunks:
            commit(worker.run(chunk))
        return done
    import multiprocessing

    # spawn: the driver has ONNX Runtime sessions (and their threads) open already
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_worker, initargs=(settings, layout)) as pool:
        pending = list(reversed(chunks))
        running = set()
        try:
            while pending or running:
                while pending and len(running) < 2 * workers:
                    running.add(pool.submit(_run_chunk, pending.pop()))
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    commit(future.result())
        except BrokenProcessPool as exc:
            raise WorkerDied(f"a worker process died; {done} unit(s) were committed, "
                             f"run the same command again to do the rest") from exc
    return done
