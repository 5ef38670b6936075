"""The service's counters in the Prometheus text exposition format (version 0.0.4), written
by hand: requests by endpoint, method and status, a request latency histogram per endpoint,
faces analysed, errors, and the model thread's batches."""

from __future__ import annotations

import threading
from collections import defaultdict

#: latency histogram bucket bounds, seconds
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: images per model batch, histogram bucket bounds
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _labels(**labels: str) -> str:
    def escape(v: str) -> str:
        return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


class _Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds, self.counts = bounds, [0] * len(bounds)
        self.total, self.count = 0.0, 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str, **labels: str) -> list[str]:
        out = [f"{name}_bucket{_labels(**labels, le=f'{b:g}')} {c}"
               for b, c in zip(self.bounds, self.counts, strict=True)]
        return [*out, f"{name}_bucket{_labels(**labels, le='+Inf')} {self.count}",
                f"{name}_sum{_labels(**labels)} {self.total:.6f}",
                f"{name}_count{_labels(**labels)} {self.count}"]


class Metrics:
    """Thread-safe counters of one service process; :meth:`render` gives the text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._latency: dict[str, _Histogram] = {}
        self._errors: dict[tuple[str, str], int] = defaultdict(int)
        self._images = self._faces = self._batches = 0
        self._batch_images = _Histogram(BATCH_BUCKETS)

    def request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """One finished request: its route template (``/v1/galleries/{gallery}``), method,
        status and time taken."""
        with self._lock:
            self._requests[(endpoint, method, str(status))] += 1
            self._latency.setdefault(endpoint, _Histogram(LATENCY_BUCKETS)).observe(seconds)
            if status >= 400:
                self._errors[(endpoint, "client" if status < 500 else "server")] += 1

    def analysed(self, images: int, faces: int) -> None:
        """Images analysed for a request and the faces found in them."""
        with self._lock:
            self._images += images
            self._faces += faces

    def batch(self, requests: int, images: int) -> None:
        """One model batch (the model thread's callback)."""
        with self._lock:
            self._batches += 1
            self._batch_images.observe(images)

    def render(self, queued: int = 0) -> str:
        """The exposition text; ``queued``: requests waiting for the model thread now."""
        with self._lock:
            out = ["# HELP facefuse_requests_total HTTP requests by endpoint, method, status.",
                   "# TYPE facefuse_requests_total counter"]
            out += [f"facefuse_requests_total{_labels(endpoint=e, method=m, status=s)} {n}"
                    for (e, m, s), n in sorted(self._requests.items())]
            out += ["# HELP facefuse_request_seconds Request latency by endpoint.",
                    "# TYPE facefuse_request_seconds histogram"]
            for endpoint, hist in sorted(self._latency.items()):
                out += hist.lines("facefuse_request_seconds", endpoint=endpoint)
            out += ["# HELP facefuse_errors_total Responses with status 4xx (client) or 5xx "
                    "(server).", "# TYPE facefuse_errors_total counter"]
            out += [f"facefuse_errors_total{_labels(endpoint=e, kind=k)} {n}"
                    for (e, k), n in sorted(self._errors.items())]
            out += ["# HELP facefuse_images_analyzed_total Images analysed.",
                    "# TYPE facefuse_images_analyzed_total counter",
                    f"facefuse_images_analyzed_total {self._images}",
                    "# HELP facefuse_faces_analyzed_total Faces found in analysed images.",
                    "# TYPE facefuse_faces_analyzed_total counter",
                    f"facefuse_faces_analyzed_total {self._faces}",
                    "# HELP facefuse_model_batches_total Batches run by the model thread.",
                    "# TYPE facefuse_model_batches_total counter",
                    f"facefuse_model_batches_total {self._batches}",
                    "# HELP facefuse_model_batch_images Images per model batch.",
                    "# TYPE facefuse_model_batch_images histogram",
                    *self._batch_images.lines("facefuse_model_batch_images"),
                    "# HELP facefuse_queued_requests Requests waiting for the model thread.",
                    "# TYPE facefuse_queued_requests gauge",
                    f"facefuse_queued_requests {queued}"]
        return "\n".join(out) + "\n"
