"""The Ray engine: Ray Data actors, each loading the analyzer once, on this machine
(``ray.init()``) or a running cluster (``address``).

The units of a round become a dataset (``from_items`` with ``override_num_blocks``, so a
small input still spreads over the actors), ``map_batches`` runs :class:`RayUnitWorker`
on an actor pool (``ActorPoolStrategy(size=workers)``, CPUs and GPUs declared per actor)
and returns Arrow tables of an explicit schema; the round is materialised once and Ray
writes its ``faces`` and ``files`` Parquet into a staging folder, which is then committed
(:mod:`facefuse.batch.ledger`). Ray Data restarts an actor that dies and retries its batch
(``max_restarts`` and ``max_task_retries`` are -1 for actor pools), and a batch's rows
are returned only when the whole batch is done, so each unit is written exactly once.

On a cluster, ``out`` must be a folder every node sees under the same path (NFS or
the like): Ray's workers write the Parquet files and the driver renames them.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from facefuse.batch.inputs import WorkUnit
from facefuse.batch.ledger import OutputFolder
from facefuse.batch.schema import FaceLayout, face_schema, files_schema, split_units
from facefuse.batch.work import BatchSettings, UnitWorker

#: units per round: each round is committed on its own, so a killed job loses at most one
ROUND_UNITS = 2000


class RayUnitWorker:
    """The callable class ``map_batches`` runs on each actor: an analyzer loaded once in
    ``__init__``, then Arrow batches of units in, unit rows out."""

    def __init__(self, settings: BatchSettings, layout: FaceLayout) -> None:
        self.worker = UnitWorker(settings, layout)

    def __call__(self, batch):
        rows = batch.to_pylist()
        for r in rows:  # Arrow-typed input: -1 stands for "no frame"
            for k in ("frame_start", "frame_stop"):
                r[k] = None if r[k] < 0 else r[k]
        return self.worker.run([WorkUnit(**r) for r in rows])


def _faces_of(batch, layout: FaceLayout):
    return split_units(batch, layout)[0]


def _files_of(batch, layout: FaceLayout):
    return split_units(batch, layout)[1]


@dataclass(frozen=True)
class RayOptions:
    """Where and how the Ray engine runs.

    Args:
        address: None: a new Ray instance of this process (``ray.init(address="local")``),
            or one already started by the caller; ``auto``: the cluster this machine belongs to;
            ``HOST:PORT``: that cluster's head.
        workers: actors (each loads the analyzer).
        batch_size: units per ``map_batches`` call.
        cpus_per_worker, gpus_per_worker: resources each actor declares.
        round_units: units per round (each committed on its own).
    """

    address: str | None = None
    workers: int = 2
    batch_size: int = 16
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    round_units: int = ROUND_UNITS


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Refuse a ``HOST:PORT`` where nothing accepts a connection (``ray.init`` would retry
    for minutes); None and ``auto`` are left to Ray.

    Raises:
        ConnectionError: naming the address and why.
    """
    if address in (None, "auto") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConnectionError(f"--address {address!r}: expected auto or HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(f"no Ray cluster answers at {address} "
                              f"({exc.strerror or exc})") from None


def start_ray(address: str | None, quiet: bool = True) -> float:
    """Connect to (or start) Ray unless it is already up; returns the seconds it took.

    Raises:
        ConnectionError: no cluster at ``address``.
    """
    import ray

    began = time.perf_counter()
    if quiet:  # Ray Data logs each dataset's progress at INFO
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    if not ray.is_initialized():
        check_reachable(address)
        # None: a new instance of this process ("local"), never a cluster found by chance
        ray.init(address=address or "local", include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=not quiet)
    return time.perf_counter() - began


def _items(units: Sequence[WorkUnit]) -> list[dict[str, Any]]:
    return [{**u.to_dict(), "frame_start": -1 if u.frame_start is None else u.frame_start,
             "frame_stop": -1 if u.frame_stop is None else u.frame_stop} for u in units]


def run_ray(units: Sequence[WorkUnit], settings: BatchSettings, layout: FaceLayout,
            out: OutputFolder, options: RayOptions,
            on_round: Callable[[int], None] | None = None, quiet: bool = True) -> int:
    """Analyze ``units`` on Ray, round by round, each round committed to ``out``;
    returns the units done."""
    import ray
    import ray.data

    start_ray(options.address, quiet)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = not quiet
    if settings.threads is None:
        settings = settings.with_threads(max(1, int(options.cpus_per_worker)))
    done = 0
    for start in range(0, len(units), options.round_units):
        chunk = units[start:start + options.round_units]
        blocks = max(1, min(len(chunk), options.workers * 4,
                            -(-len(chunk) // options.batch_size)))
        ds = ray.data.from_items(_items(chunk), override_num_blocks=blocks)
        analyzed = ds.map_batches(
            RayUnitWorker, fn_constructor_kwargs={"settings": settings, "layout": layout},
            compute=ray.data.ActorPoolStrategy(size=options.workers),
            batch_size=options.batch_size, batch_format="pyarrow",
            num_cpus=options.cpus_per_worker, num_gpus=options.gpus_per_worker or None,
        ).materialize()
        piece = out.new_piece("ray")
        analyzed.map_batches(_faces_of, fn_kwargs={"layout": layout},
                             batch_format="pyarrow").write_parquet(str(piece / "faces"))
        analyzed.map_batches(_files_of, fn_kwargs={"layout": layout},
                             batch_format="pyarrow").write_parquet(str(piece / "files"))
        _check_piece(piece, len(chunk), layout)
        out.commit(piece)
        done += len(chunk)
        if on_round is not None:
            on_round(len(chunk))
    return done


def _check_piece(piece, expected: int, layout: FaceLayout) -> None:
    """Refuse to commit a round whose ``files`` rows are not its units, each once, or whose
    tables are not of the batch schema."""
    import pyarrow.parquet as pq

    rows = 0
    for f in (piece / "files").glob("*.parquet"):
        table = pq.read_table(f)
        if not table.schema.equals(files_schema()):
            raise RuntimeError(f"{f}: not the files schema:\n{table.schema}")
        rows += table.num_rows
    if rows != expected:
        raise RuntimeError(f"a round of {expected} unit(s) wrote {rows} files row(s)")
    schema = face_schema(layout)
    for f in (piece / "faces").glob("*.parquet"):
        if not pq.read_schema(f).equals(schema):
            raise RuntimeError(f"{f}: not the faces schema")
