"""Per-track summaries of the videos of a batch job, written after their frames: the faces of
each video, whatever worker found them in whichever frame range, are tracked in frame order
by the IoU tracker ``facefuse video analyze`` uses, and each track gets one row.

``tracks`` columns: ``source``, ``track``, ``frames`` (faces in it), ``first_frame``,
``last_frame``, ``start_s``, ``end_s``, then each class task's most frequent label, the
mean of each value task (``age``), and the mean ``embedding`` when there is one.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np

from facefuse.batch.schema import FaceLayout
from facefuse.inference.video import IoUTracker

if TYPE_CHECKING:
    import pyarrow as pa


class _Box:
    __slots__ = ("box", "row")

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row
        self.box = (row["x0"], row["y0"], row["x1"], row["y1"])


def track_columns(layout: FaceLayout) -> list[str]:
    """The ``faces`` columns the track summaries read."""
    return ["source", "frame", "time_s", "face", "x0", "y0", "x1", "y1", *layout.classes,
            *layout.values, *(["embedding"] if layout.embedding_dim else [])]


def tracks_schema(layout: FaceLayout) -> pa.Schema:
    """The ``tracks`` table's schema."""
    import pyarrow as pa

    fields = [pa.field("source", pa.string()), pa.field("track", pa.int32()),
              pa.field("frames", pa.int32()), pa.field("first_frame", pa.int64()),
              pa.field("last_frame", pa.int64()), pa.field("start_s", pa.float64()),
              pa.field("end_s", pa.float64())]
    fields += [pa.field(t, pa.string()) for t in layout.classes]
    fields += [pa.field(t, pa.float64()) for t in layout.values]
    if layout.embedding_dim:
        fields.append(pa.field("embedding", pa.list_(pa.float32(), layout.embedding_dim)))
    return pa.schema(fields)


def summarize_tracks(faces: pa.Table, layout: FaceLayout) -> pa.Table:
    """One row per track of the video faces (rows with a ``frame``) in ``faces``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    video = faces.filter(pc.is_valid(faces.column("frame")))
    wanted = track_columns(layout)
    by_video: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in video.select(wanted).to_pylist():
        by_video[row["source"]][row["frame"]].append(row)
    out = []
    for source in sorted(by_video):
        tracker = IoUTracker(dim=1)
        members: dict[int, list[dict]] = defaultdict(list)
        for frame in sorted(by_video[source]):
            rows = sorted(by_video[source][frame], key=lambda r: r["face"])
            for tid, row in zip(tracker.update([_Box(r) for r in rows], rows[0]["time_s"]),
                                rows, strict=True):
                members[tid].append(row)
        for tid in sorted(members):
            out.append(_summary(source, tid, members[tid], layout))
    return pa.Table.from_pylist(out, schema=tracks_schema(layout))


def _summary(source: str, tid: int, rows: list[dict], layout: FaceLayout) -> dict[str, Any]:
    row: dict[str, Any] = {"source": source, "track": tid, "frames": len(rows),
                           "first_frame": rows[0]["frame"], "last_frame": rows[-1]["frame"],
                           "start_s": rows[0]["time_s"], "end_s": rows[-1]["time_s"]}
    for task in layout.classes:
        labels = Counter(r[task] for r in rows if r[task] is not None)
        row[task] = labels.most_common(1)[0][0] if labels else None
    for task in layout.values:
        values = [r[task] for r in rows if r[task] is not None]
        row[task] = float(np.mean(values)) if values else None
    if layout.embedding_dim:
        vectors = [r["embedding"] for r in rows if r["embedding"] is not None]
        if vectors:
            mean = np.mean(np.asarray(vectors, np.float64), axis=0)
            row["embedding"] = (mean / (np.linalg.norm(mean) or 1.0)).astype(
                np.float32).tolist()
        else:
            row["embedding"] = None
    return row
