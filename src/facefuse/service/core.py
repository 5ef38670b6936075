"""What the service's endpoints share, free of FastAPI: its settings, the analyzer behind
its one model thread, the galleries, the metrics, the reading of uploads and the errors
that become JSON responses."""

from __future__ import annotations

import logging
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from facefuse.data.images import ImageError, decode_rgb
from facefuse.inference.analyzer import FaceAnalyzer, ImageResult
from facefuse.service.batcher import MicroBatcher
from facefuse.service.galleries import Galleries
from facefuse.service.heap import Trimmer
from facefuse.service.metrics import Metrics

log = logging.getLogger(__name__)

#: an upload's largest size by default (bytes)
MAX_UPLOAD_BYTES = 10 * 2**20
#: the most images one request may carry by default
MAX_FILES = 16
#: the most pixels of an uploaded image by default (decoded: 3 bytes each)
MAX_PIXELS = 40_000_000


class ServiceError(Exception):
    """A request the service refuses: an HTTP status, a stable code and a one-line message,
    sent as ``{"error": message, "code": code}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class ServiceSettings:
    """How a service runs.

    Attributes:
        gallery_root: the folder of its galleries (None: no gallery endpoints).
        batch_window_ms: how long the model thread waits for more requests to batch with
            the first one (0: no batching).
        api_key: the ``x-api-key`` every request but ``/healthz`` and the docs must carry
            (None: none needed).
        max_upload_bytes: the largest image upload; a request body may hold ``max_files``
            of them.
        max_files: the most images in one request.
        max_pixels: the most pixels of an image (the analyzer's own limit applies too).
        request_timeout_s: how long a request waits for the model thread (503 after).
        model: the ``--model`` the analyzer was built from (None: the shipped one), which
            names the embeddings of the galleries when the model's own head makes them.
        shared_galleries: other processes serve the same galleries (``--workers N``): no
            gallery is held open for writing (:mod:`facefuse.service.galleries`).
    """

    gallery_root: Path | None = None
    batch_window_ms: float = 10.0
    api_key: str | None = None
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_files: int = MAX_FILES
    max_pixels: int = MAX_PIXELS
    request_timeout_s: float = 60.0
    model: str | None = None
    shared_galleries: bool = False


def reports_embedding(analyzer: FaceAnalyzer) -> bool:
    """Whether ``analyzer`` gives each face an identity embedding (verify and the galleries
    need one)."""
    return "embedding" in analyzer.tasks or "identity" in analyzer.tasks


class Service:
    """One service process: ``analyzer`` (which must report the ``embedding`` task) runs on
    one model thread fed by every request (:class:`MicroBatcher`); galleries under
    ``settings.gallery_root``; the metrics. :meth:`close` stops the thread and closes the
    galleries."""

    def __init__(self, analyzer: FaceAnalyzer, settings: ServiceSettings) -> None:
        if not reports_embedding(analyzer):
            raise ValueError("the service's analyzer must report the 'embedding' task")
        self.analyzer, self.settings = analyzer, settings
        self.metrics = Metrics()
        self._trimmer = Trimmer()
        #: what /v1/analyze reports when no tasks are asked for: as `facefuse analyze`
        self.default_tasks = list(analyzer.model.tasks)
        self.galleries = None
        if settings.gallery_root is not None:
            from facefuse.gallery.embedding_space import embedding_space

            # before the model thread starts: measuring the width may run the analyzer
            space = embedding_space(analyzer, settings.model)
            self.galleries = Galleries(settings.gallery_root, space,
                                       shared=settings.shared_galleries)
        self.batcher = MicroBatcher(self._analyze, settings.batch_window_ms / 1000,
                                    on_batch=self.metrics.batch)

    def _analyze(self, images: list[np.ndarray]) -> list[ImageResult]:
        try:
            return self.analyzer.analyze_many(images, batch_images=max(1, len(images)))
        finally:
            self._trimmer.maybe()  # the batch's freed memory back to the system, now and then

    def close(self) -> None:
        self.batcher.close()
        if self.galleries is not None:
            self.galleries.close()

    # -- requests ---------------------------------------------------------------------------
    def read_uploads(self, uploads: list[tuple[str | None, Any]]) -> tuple[list[np.ndarray],
                                                                           list[str]]:
        """Decoded RGB images and their names from (file name, binary file) pairs.

        Raises:
            ServiceError: no file, too many, one too large in bytes or pixels (413), empty,
                not an image (415) or corrupt.
        """
        if not uploads:
            raise ServiceError(400, "no_image", "no image uploaded")
        if len(uploads) > self.settings.max_files:
            raise ServiceError(400, "too_many_images", f"{len(uploads)} images in one "
                               f"request; the limit is {self.settings.max_files}")
        images, names = [], []
        limit = self.settings.max_upload_bytes
        pixels = min(self.settings.max_pixels, self.analyzer.max_pixels)
        for i, (filename, file) in enumerate(uploads):
            name = Path(filename).name if filename else f"image{i}"
            data = file.read(limit + 1)
            if len(data) > limit:
                raise ServiceError(413, "too_large", f"{name}: larger than the upload limit "
                                   f"of {limit} bytes")
            try:
                images.append(decode_rgb(data, name, pixels))
            except ImageError as exc:
                status, code = (415, "not_an_image") if "no decoder recognises" in str(exc) \
                    else (413, "too_large") if "image too large" in str(exc) \
                    else (400, "bad_image")
                raise ServiceError(status, code, str(exc)) from None
            names.append(name)
        return images, names

    def analyze(self, images: list[np.ndarray], names: list[str]) -> list[ImageResult]:
        """The images analysed on the model thread, each result named as its upload.

        Raises:
            ServiceError: 503 when the model thread does not answer in time.
        """
        future = self.batcher.submit(images)
        try:
            results = future.result(timeout=self.settings.request_timeout_s)
        except FutureTimeout:
            future.cancel()
            raise ServiceError(503, "timeout", f"no answer from the model within "
                               f"{self.settings.request_timeout_s:g} s; try again") from None
        results = [replace(r, source=n) for r, n in zip(results, names, strict=True)]
        self.metrics.analysed(len(results), sum(len(r.faces) for r in results))
        return results

    def check_tasks(self, text: str | None) -> list[str]:
        """The tasks a request asks for (a comma list; None: the default ones)."""
        if text is None:
            return self.default_tasks
        from facefuse.tasks import parse_task_list

        try:
            tasks = parse_task_list(text)
        except ValueError as exc:
            raise ServiceError(400, "unknown_task", str(exc)) from None
        missing = [t for t in tasks if t not in (*self.analyzer.model.tasks, "embedding")]
        if missing:
            raise ServiceError(400, "unknown_task", f"the model has no {', '.join(missing)} "
                               f"head; it predicts {', '.join(self.analyzer.model.tasks)}")
        return tasks


def only_tasks(result: ImageResult, tasks: list[str]) -> dict[str, Any]:
    """``result.to_dict()`` with the predictions of ``tasks`` only (as an analyzer built for
    those tasks reports them)."""
    wanted = set(tasks)
    out = result.to_dict()
    for face in out["faces"]:
        for key in [k for k in face if k not in FACE_FIELDS]:
            task = "identity" if key == "embedding" else key.split("_scores")[0]
            if task not in wanted and not (key == "embedding" and "embedding" in wanted):
                del face[key]
    return out


#: the keys of a face's dict that are not predictions
FACE_FIELDS = frozenset({"face", "box", "score", "found_by", "landmarks"})
