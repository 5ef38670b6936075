"""The work of one batch worker: an analyzer loaded once, then work units in, one
:func:`~facefuse.batch.schema.unit_schema` row per unit out (the same code under every
engine, so both write the same rows).

A unit that fails (an unreadable photo, a video OpenCV cannot open, anything the analyzer
raises on it) becomes a row with ``status`` ``error`` and the message; it never stops the
batch.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from facefuse.batch.inputs import WorkUnit, is_uri
from facefuse.batch.schema import FaceLayout, face_record, layout_for, unit_schema

if TYPE_CHECKING:
    import pyarrow as pa

    from facefuse.inference.analyzer import FaceAnalyzer, ImageResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchSettings:
    """What a batch job computes and how each worker runs (recorded in ``manifest.json``;
    a rerun into the same folder must use the same).

    Args:
        tasks: tasks to report (None: every head of the model).
        embed_only: only the identity embedding of each face (no landmarks, no other task):
            for bulk gallery enrolment (``facefuse gallery add --from-parquet``).
        features: also write each face's trunk feature vector (``features``), for the
            cross-task studies.
        model, detector, device, min_face, margin, flip, backend, identity,
            identity_heads, landmark_refiner: as for
            :class:`~facefuse.inference.analyzer.FaceAnalyzer` (``identity`` and
            ``identity_heads`` None: off).
        batch_images: photos (or frames) decoded and predicted together.
        fps, stride: video frame sampling (as ``facefuse video analyze``).
        max_faces: most confident faces kept per video frame.
        threads: ONNX Runtime and OpenCV threads per worker (None: their defaults, one
            per core): with several workers on one machine, cores / workers.
    """

    tasks: tuple[str, ...] | None = None
    embed_only: bool = False
    features: bool = False
    model: str | None = None
    detector: str = "mtcnn"
    device: str = "auto"
    min_face: int = 24
    margin: float | None = None
    flip: bool = True
    backend: str = "auto"
    identity: str | None = "auto"
    identity_heads: str | None = "auto"
    landmark_refiner: str | None = "shipped"
    batch_images: int = 32
    fps: float | None = 5.0
    stride: int | None = None
    max_faces: int = 8
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tasks"] = None if self.tasks is None else list(self.tasks)
        return out

    def results_dict(self) -> dict[str, Any]:
        """The settings that change the results (what a rerun must share): all but
        ``threads`` and ``batch_images``."""
        return {k: v for k, v in self.to_dict().items() if k not in ("threads",
                                                                      "batch_images")}

    def with_threads(self, threads: int | None) -> BatchSettings:
        return replace(self, threads=threads)

    def build_analyzer(self) -> FaceAnalyzer:
        """The analyzer these settings describe."""
        from facefuse.inference.analyzer import FaceAnalyzer

        tasks = ["embedding"] if self.embed_only else self.tasks
        return FaceAnalyzer(tasks=tasks, model=self.model, detector=self.detector,
                            device=self.device, margin=self.margin, min_face=self.min_face,
                            flip=self.flip, backend=self.backend,
                            landmark_refiner=None if self.embed_only else
                            self.landmark_refiner,
                            identity=self.identity,
                            identity_heads=None if self.embed_only else self.identity_heads)


def limit_worker_threads(threads: int | None) -> None:
    """ONNX Runtime sessions opened from now on and OpenCV in this process at ``threads``
    threads (None: leave them)."""
    if threads is None:
        return
    import cv2

    from facefuse.runtime.threads import set_session_threads

    set_session_threads(threads)
    cv2.setNumThreads(threads)


class UnitWorker:
    """An analyzer built once from ``settings``; :meth:`run` turns work units into rows.

    Args:
        settings: the job's settings.
        layout: the ``faces`` layout the driver fixed (None: this analyzer's own).
    """

    def __init__(self, settings: BatchSettings, layout: FaceLayout | None = None) -> None:
        limit_worker_threads(settings.threads)
        self.settings = settings
        self.analyzer = settings.build_analyzer()
        self.layout = layout or layout_for(self.analyzer, settings.features)
        self.schema = unit_schema(self.layout)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def run(self, units: Sequence[WorkUnit]) -> pa.Table:
        """One row per unit, in order (photos analyzed ``batch_images`` at a time)."""
        import pyarrow as pa

        rows: list[dict[str, Any]] = []
        photos = [u for u in units if u.kind == "photo"]
        step = self.settings.batch_images
        by_key = {}
        for start in range(0, len(photos), step):
            for unit, row in zip(photos[start:start + step],
                                 self._photos(photos[start:start + step]), strict=True):
                by_key[unit.key()] = row
        for unit in units:
            rows.append(by_key[unit.key()] if unit.kind == "photo" else self._video(unit))
        return pa.Table.from_pylist(rows, schema=self.schema)

    # -- photos ------------------------------------------------------------------------------
    def _photos(self, units: Sequence[WorkUnit]) -> list[dict[str, Any]]:
        """Rows of photos analyzed together; the batch's time is shared out evenly. A batch
        that raises is redone photo by photo, so only the culprit gets the error."""
        began = time.perf_counter()
        items = [self._readable(u) for u in units]
        try:
            analyzed = iter(self.analyzer.iter_analyze(
                [i for i in items if not isinstance(i, _Unreadable)],
                batch_images=len(units)))
            results = [i if isinstance(i, _Unreadable) else next(analyzed) for i in items]
        except Exception as exc:  # noqa: BLE001  (recorded per photo below)
            if len(units) == 1:
                return [self._row(units[0], [], f"{units[0].path}: {type(exc).__name__}: "
                                               f"{exc}", time.perf_counter() - began)]
            return [row for u in units for row in self._photos([u])]
        seconds = (time.perf_counter() - began) / max(1, len(units))
        return [self._photo_row(u, r, seconds) for u, r in zip(units, results, strict=True)]

    def _readable(self, unit: WorkUnit) -> Any:
        """What the analyzer reads for ``unit``: its local path, or the decoded pixels of a
        URI (an :class:`_Unreadable` with the message where they cannot be read)."""
        if not is_uri(unit.path):
            return unit.path
        from facefuse.data.images import ImageError, decode_rgb

        try:
            from pyarrow import fs

            filesystem, inner = fs.FileSystem.from_uri(unit.path)
            with filesystem.open_input_stream(inner) as stream:
                return decode_rgb(stream.read(), unit.path)
        except (OSError, ValueError, ImageError) as exc:
            return _Unreadable(f"{unit.path}: {exc}")

    def _photo_row(self, unit: WorkUnit, result: ImageResult | _Unreadable,
                   seconds: float) -> dict[str, Any]:
        if isinstance(result, _Unreadable):
            return self._row(unit, [], result.error, seconds)
        faces = [face_record(self.layout, unit.path, f) for f in result.faces]
        return self._row(unit, faces, result.error, seconds)

    # -- videos ------------------------------------------------------------------------------
    def _video(self, unit: WorkUnit) -> dict[str, Any]:
        """The faces of a video unit's sampled frames (the ``max_faces`` most confident of
        each, numbered by score; a small frame is never taken whole as a face)."""
        from facefuse.inference.video import iter_frames

        began = time.perf_counter()
        faces: list[dict[str, Any]] = []
        s = self.settings
        try:
            if is_uri(unit.path):
                raise ValueError("videos are read from local paths only")
            frames = iter_frames(unit.path, fps=s.fps, stride=s.stride,
                                 start=unit.frame_start or 0, stop=unit.frame_stop)
            pending: list = []

            def pixels():
                for frame in frames:
                    pending.append(frame)
                    yield frame.rgb

            for result in self.analyzer.iter_analyze(pixels(), raise_errors=True,
                                                     batch_images=s.batch_images):
                frame = pending.pop(0)
                kept = sorted((f for f in result.faces if f.found_by != "whole_image"),
                              key=lambda f: -f.score)[:s.max_faces]
                for k, face in enumerate(kept):
                    row = face_record(self.layout, unit.path, replace(face, index=k),
                                      frame.index, round(frame.time, 3))
                    faces.append(row)
        except Exception as exc:  # noqa: BLE001  (a video's failure is its row's error)
            message = str(exc) if str(exc).startswith(unit.path) else f"{unit.path}: {exc}"
            return self._row(unit, [], message, time.perf_counter() - began)
        return self._row(unit, faces, None, time.perf_counter() - began)

    def _row(self, unit: WorkUnit, faces: list[dict[str, Any]], error: str | None,
             seconds: float) -> dict[str, Any]:
        return {**unit.to_dict(), "status": "error" if error else "ok",
                "faces": len(faces), "error": error, "seconds": round(seconds, 4),
                "worker": self.worker, "face_rows": faces}


@dataclass(frozen=True)
class _Unreadable:
    error: str


def units_from_rows(rows: list[dict[str, Any]]) -> list[WorkUnit]:
    """Work units from their dicts (:meth:`WorkUnit.to_dict`)."""
    fields = WorkUnit.__dataclass_fields__
    return [WorkUnit(**{k: v for k, v in r.items() if k in fields}) for r in rows]
