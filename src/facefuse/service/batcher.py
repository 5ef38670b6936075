"""One model thread per process, fed by every request: the analyzer is not thread-safe
(its OpenCV detector networks are shared state), so only this thread calls it. Requests
queue their decoded images; the thread takes the first waiting request, gathers the ones
that arrive within a short window (up to a number of images) and analyses all their images
in one :meth:`~facefuse.inference.analyzer.FaceAnalyzer.analyze_many` call, so that faces
of concurrent requests share model batches."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from facefuse.inference.analyzer import ImageResult

log = logging.getLogger(__name__)

#: images gathered into one model call at most (a request with more still runs whole)
MAX_BATCH_IMAGES = 32


@dataclass
class _Request:
    images: Sequence[np.ndarray]
    future: Future = field(default_factory=Future)


class MicroBatcher:
    """Runs ``analyze`` (a list of RGB arrays to one result each, in order) on one thread.

    Args:
        analyze: what the model thread calls on a batch of images.
        window_s: how long the thread waits, after the first request of a batch, for more
            requests to join it; 0 turns batching off (each request runs alone).
        max_images: a batch stops growing at this many images.
        on_batch: called on the model thread after each batch with its number of requests
            and images (metrics).
    """

    def __init__(self, analyze: Callable[[list[np.ndarray]], list[ImageResult]],
                 window_s: float = 0.01, max_images: int = MAX_BATCH_IMAGES,
                 on_batch: Callable[[int, int], None] | None = None) -> None:
        if window_s < 0 or max_images < 1:
            raise ValueError(f"the batching window is 0 or more seconds and a batch at least "
                             f"one image, got {window_s} s and {max_images}")
        self.window_s, self.max_images = window_s, max_images
        self._analyze, self._on_batch = analyze, on_batch
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="facefuse-model", daemon=True)
        self._thread.start()

    def submit(self, images: Sequence[np.ndarray]) -> Future:
        """Queue ``images``; the future's result is their :class:`ImageResult` list."""
        if not self._thread.is_alive():
            raise RuntimeError("the model thread has stopped")
        request = _Request(list(images))
        self._queue.put(request)
        return request.future

    def alive(self) -> bool:
        """Whether the model thread runs."""
        return self._thread.is_alive()

    def pending(self) -> int:
        """Requests waiting for the model thread."""
        return self._queue.qsize()

    def close(self, timeout: float | None = 30.0) -> None:
        """Let the thread finish the requests queued so far, then stop it."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch, images = [first], len(first.images)
            deadline = time.monotonic() + self.window_s
            while self.window_s > 0 and images < self.max_images:
                try:
                    more = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
                images += len(more.images)
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Request]) -> None:
        # a request whose caller gave up (its future cancelled) is dropped; the others can
        # no longer be cancelled
        batch = [r for r in batch if r.future.set_running_or_notify_cancel()]
        if batch:
            self._execute(batch)

    def _execute(self, batch: list[_Request]) -> None:
        images = [im for r in batch for im in r.images]
        try:
            results = self._analyze(images)
        except Exception as exc:  # noqa: BLE001 - the callers hear of it
            if len(batch) > 1:  # one request may be the cause: the others need not fail
                log.warning("a batch of %d requests failed (%s); running each alone",
                            len(batch), exc)
                for r in batch:
                    self._execute([r])
                return
            log.exception("analysing %d image(s) failed", len(images))
            batch[0].future.set_exception(exc)
            return
        start = 0
        for r in batch:
            r.future.set_result(results[start:start + len(r.images)])
            start += len(r.images)
        if self._on_batch is not None:
            self._on_batch(len(batch), len(images))
