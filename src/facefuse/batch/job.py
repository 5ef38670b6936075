"""A whole batch job: list the inputs, skip what the output folder already has, run an
engine on the rest, summarise the videos' tracks and write ``manifest.json``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from facefuse.batch.inputs import FRAMES_PER_UNIT, list_units
from facefuse.batch.ledger import OutputFolder
from facefuse.batch.schema import FaceLayout, face_schema, layout_for
from facefuse.batch.work import BatchSettings
from facefuse.files import atomic_path

ENGINES = ("local", "ray")


@dataclass
class BatchReport:
    """What one run did: units listed, skipped (done before), done now; and the totals of
    the output folder after it."""

    out: Path
    units: int
    skipped: int
    done: int
    seconds: float
    totals: dict[str, int] = field(default_factory=dict)
    recovered: tuple[int, int] = (0, 0)

    def line(self) -> str:
        t = self.totals
        return (f"{self.out}: {self.done} unit(s) done in {self.seconds:.1f} s, "
                f"{self.skipped} skipped as done before; in all {t.get('units', 0)} "
                f"unit(s), {t.get('faces', 0)} face(s), {t.get('errors', 0)} error(s)")


def fingerprints(analyzer, settings: BatchSettings) -> dict[str, str | None]:
    """The model's weights' and the embeddings' fingerprints (what made the results)."""
    from facefuse.gallery.embedding_space import embedding_fingerprint
    from facefuse.runtime.model_files import weights_fingerprint

    model = settings.model
    if model is None:
        from facefuse.weights import shipped_model_path

        model = shipped_model_path()
    embedding = embedding_fingerprint(analyzer, settings.model) \
        if "embedding" in analyzer.tasks or "identity" in analyzer.tasks else None
    return {"model": f"{Path(model).stem}:{weights_fingerprint(model)}",
            "embedding": embedding}


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples as lists)."""
    return json.loads(json.dumps(value))


def run_batch(inputs: Sequence[str | Path], out: str | Path,
              settings: BatchSettings | None = None, engine: str = "local",
              workers: int = 1, chunk_size: int = 64, ray_options=None,
              frames_per_unit: int = FRAMES_PER_UNIT,
              progress: Callable[[int], None] | None = None,
              on_plan: Callable[[int, int], None] | None = None,
              quiet: bool = True) -> BatchReport:
    """Run a batch job (see :mod:`facefuse.batch`).

    Args:
        inputs: folders, globs, files, CSV or Parquet manifests.
        out: the output folder (:mod:`facefuse.batch.ledger`).
        settings: what to compute (None: :class:`BatchSettings` defaults).
        engine: ``local`` (``workers`` processes, ``chunk_size`` units a commit) or
            ``ray`` (``ray_options``, a :class:`~facefuse.batch.ray_engine.RayOptions`).
        frames_per_unit: frames of a video per work unit.
        progress: called with each committed piece's unit count.
        on_plan: called with (units to do, units skipped) before the work starts.

    Raises:
        BatchConflict: ``out`` holds results of other settings.
        FileNotFoundError, ValueError: bad inputs or settings (one line each).
        WorkerDied: a local worker process died (rerun to finish).
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    settings = settings or BatchSettings()
    began = time.perf_counter()
    units = list_units(inputs, frames_per_unit)
    folder = OutputFolder(out)
    recovered = folder.recover()
    analyzer = settings.build_analyzer()
    layout = layout_for(analyzer, settings.features)
    folder.check_settings(_plain(settings.results_dict()), _plain(layout.to_dict()))
    done_keys = folder.done_keys()
    todo = [u for u in units if u.key() not in done_keys]
    if on_plan is not None:
        on_plan(len(todo), len(units) - len(todo))
    manifest = folder.read_manifest() or {
        "created": _now(), "settings": settings.results_dict(), "layout": layout.to_dict(),
        "fingerprints": fingerprints(analyzer, settings),
        "schema": {"faces": [f"{f.name}: {f.type}" for f in face_schema(layout)]},
        "runs": []}
    del analyzer  # the workers load their own
    folder.write_manifest(manifest)  # before any result: a killed first run can be rerun
    run_began = time.perf_counter()
    if not todo:
        done = 0
    elif engine == "local":
        from facefuse.batch.local import run_local

        done = run_local(todo, settings, layout, folder, workers, chunk_size, progress)
    else:
        from facefuse.batch.ray_engine import RayOptions, run_ray

        options = ray_options or RayOptions(workers=workers)
        done = run_ray(todo, settings, layout, folder, options, progress, quiet)
    seconds = time.perf_counter() - run_began
    totals = _write_tracks_and_totals(folder, layout)
    manifest["runs"].append({"finished": _now(), "engine": engine,
                             "workers": ray_options.workers if ray_options else workers,
                             "units": len(units), "skipped": len(units) - len(todo),
                             "done": done, "seconds": round(seconds, 3),
                             "seconds_with_setup": round(time.perf_counter() - began, 3)})
    manifest["totals"] = totals
    folder.write_manifest(manifest)
    return BatchReport(folder.root, len(units), len(units) - len(todo), done,
                       time.perf_counter() - began, totals, recovered)


def _write_tracks_and_totals(folder: OutputFolder, layout: FaceLayout) -> dict[str, int]:
    """Rewrite ``tracks/`` from every video face so far; count units, errors and faces."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from facefuse.batch.tracks import summarize_tracks, track_columns

    files = folder.read("files", ["status", "faces", "kind"])
    if files is None:
        return {"units": 0, "errors": 0, "faces": 0, "videos_units": 0, "tracks": 0}
    totals = {"units": files.num_rows,
              "errors": int(pc.sum(pc.equal(files.column("status"), "error")).as_py() or 0),
              "faces": int(pc.sum(files.column("faces")).as_py() or 0),
              "video_units": int(pc.sum(pc.equal(files.column("kind"), "video")).as_py()
                                 or 0)}
    tracks_dir = folder.table_dir("tracks")
    if totals["video_units"]:
        tracks = summarize_tracks(folder.read("faces", track_columns(layout)), layout)
        tracks_dir.mkdir(exist_ok=True)
        with atomic_path(tracks_dir / "tracks.parquet") as tmp:
            pq.write_table(tracks, tmp)
        totals["tracks"] = tracks.num_rows
    return totals


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
