"""Video: decode and sample frames (OpenCV), analyze them with the face analyzer (the one
path from pixels to results, as for photos), track the faces.

Frames stream one at a time and each track keeps running statistics (count, sum, sum of
squares, min, max of its embeddings), so memory stays constant however long the video is.
Per-frame records go to a JSON-lines writer as they are produced. A clip's feature vector is
the statistics (mean, std, min, max) of its main track's frame embeddings (Savchenko).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np

from facefuse.detection.detectors import iou
from facefuse.inference.analyzer import FaceAnalyzer
from facefuse.inference.rows import face_row


class VideoError(ValueError):
    """A video that cannot be opened or decoded; the message names the file."""


@dataclass(frozen=True)
class Frame:
    index: int
    time: float
    rgb: np.ndarray


def check_sampling(fps: float | None, stride: int | None) -> None:
    """Refuse a frame rate that is not positive or a stride below 1 (ValueError)."""
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if stride is not None and stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")


def iter_frames(path: str | Path, fps: float | None = None, stride: int | None = None,
                start: int = 0, stop: int | None = None) -> Iterator[Frame]:
    """Sampled frames of a video, decoded one at a time.

    Args:
        fps: sample about this many frames per second (by the video's own frame rate).
        stride: or take every ``stride``-th frame. Neither: every frame.
        start, stop: only frames ``start`` to ``stop - 1`` (``stop`` None: to the end);
            which frames are sampled does not depend on them (frame ``i`` is taken when
            ``i`` is a multiple of the step), so ranges split a video's samples exactly.
    """
    import cv2

    path = Path(path)
    check_sampling(fps, stride)
    if not path.is_file():
        raise VideoError(f"{path}: file does not exist")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VideoError(f"{path}: not a video OpenCV can open")
    try:
        native = cap.get(cv2.CAP_PROP_FPS) or 25.0
        step = stride or (max(1, int(round(native / fps))) if fps else 1)
        index = max(0, int(start))
        if index:
            cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        while stop is None or index < stop:
            ok = cap.grab()
            if not ok:
                break
            if index % step == 0:
                ok, bgr = cap.retrieve()
                if ok and bgr is not None:
                    yield Frame(index, index / native, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        cap.release()


@dataclass
class RunningStats:
    """Count, mean, variance (Welford), min and max of vectors, in constant memory."""

    dim: int
    count: int = 0
    mean: np.ndarray = field(init=False)
    m2: np.ndarray = field(init=False)
    min: np.ndarray = field(init=False)
    max: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.mean = np.zeros(self.dim)
        self.m2 = np.zeros(self.dim)
        self.min = np.full(self.dim, np.inf)
        self.max = np.full(self.dim, -np.inf)

    def add(self, v: np.ndarray) -> None:
        v = np.asarray(v, dtype=np.float64)
        self.count += 1
        delta = v - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (v - self.mean)
        np.minimum(self.min, v, out=self.min)
        np.maximum(self.max, v, out=self.max)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / self.count) if self.count else np.zeros(self.dim)

    def vector(self) -> np.ndarray:
        """[mean, std, min, max] concatenated (4 * dim)."""
        if not self.count:
            raise ValueError("no frames in these statistics")
        return np.concatenate([self.mean, self.std, self.min, self.max]).astype(np.float32)


@dataclass
class Track:
    id: int
    box: tuple[float, float, float, float]
    last_frame: int
    first_time: float
    last_time: float
    stats: RunningStats
    label_counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"track": self.id, "frames": self.stats.count,
                "start_s": round(self.first_time, 3), "end_s": round(self.last_time, 3),
                "labels": {t: max(c, key=c.get) for t, c in self.label_counts.items()},
                "label_counts": self.label_counts}


class HasBox(Protocol):
    box: tuple[float, float, float, float]


class IoUTracker:
    """Greedy IoU matching of detections to live tracks; a track ends after
    ``max_missing`` sampled frames without a match."""

    def __init__(self, dim: int, iou_threshold: float = 0.3, max_missing: int = 5) -> None:
        self.dim, self.iou_threshold, self.max_missing = dim, iou_threshold, max_missing
        self.tracks: dict[int, Track] = {}
        self.finished: list[Track] = []
        self._next = 0
        self._step = 0

    def update(self, detections: Sequence[HasBox], time_s: float) -> list[int]:
        """Track id per detection or face (anything with a ``box``; in order)."""
        self._step += 1
        pairs = sorted(((iou(t.box, d.box), tid, di) for tid, t in self.tracks.items()
                        for di, d in enumerate(detections)), reverse=True)
        assigned: dict[int, int] = {}
        used: set[int] = set()
        for score, tid, di in pairs:
            if score < self.iou_threshold or di in assigned or tid in used:
                continue
            assigned[di] = tid
            used.add(tid)
        ids = []
        for di, d in enumerate(detections):
            tid = assigned.get(di)
            if tid is None:
                tid = self._next
                self._next += 1
                self.tracks[tid] = Track(tid, d.box, self._step, time_s, time_s,
                                         RunningStats(self.dim))
            t = self.tracks[tid]
            t.box, t.last_frame, t.last_time = d.box, self._step, time_s
            ids.append(tid)
        for tid in [k for k, t in self.tracks.items()
                    if self._step - t.last_frame > self.max_missing]:
            self.finished.append(self.tracks.pop(tid))
        return ids

    def all_tracks(self) -> list[Track]:
        return sorted(self.finished + list(self.tracks.values()), key=lambda t: t.id)


@dataclass
class VideoResult:
    path: str
    frames_sampled: int
    faces: int
    tracks: list[dict[str, Any]]
    clip_feature: np.ndarray | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"video": self.path, "frames_sampled": self.frames_sampled,
                "faces": self.faces, "tracks": self.tracks, "note": self.note,
                "clip_feature_dim": None if self.clip_feature is None
                else int(len(self.clip_feature))}


def analyze_video(path: str | Path, analyzer: FaceAnalyzer, fps: float | None = 5.0,
                  stride: int | None = None, max_faces: int = 8,
                  records: TextIO | None = None,
                  on_frame: Callable[[int], None] | None = None,
                  on_face: Callable[[dict[str, Any]], None] | None = None,
                  batch_frames: int = 16) -> VideoResult:
    """Analyze every sampled frame with ``analyzer`` (its detector, ``min_face``, model,
    tasks, landmark refiner and identity networks, as for a photo; the faces of
    ``batch_frames`` frames share model batches; a small frame is never taken whole as a
    face), track the ``max_faces`` most confident faces of each frame, and keep each track's
    statistics of the model's trunk features (the clip feature).

    Per-face records go to ``records`` as they are made (JSON lines: the video as
    ``source``, frame, time, track, then the face as a photo's result gives it, without the
    embedding and attribute scores; ``landmarks`` are the same 68 points in image pixels),
    and ``on_face`` receives each face as a flat table row (``source``, frame, time and
    track, then the columns of :func:`facefuse.inference.rows.face_row`). A video with
    no frames or no face gives a result with a note and no clip feature, not an error.

    Raises:
        VideoError: the file is missing or OpenCV cannot open it.
        ValueError: ``fps`` not positive, ``stride`` or ``max_faces`` below 1.
    """
    check_sampling(fps, stride)
    if max_faces < 1:
        raise ValueError(f"max_faces must be at least 1, got {max_faces}")
    tracker: IoUTracker | None = None
    n_frames = n_faces = 0
    pending: deque[Frame] = deque()

    def frames() -> Iterator[np.ndarray]:
        for frame in iter_frames(path, fps=fps, stride=stride):
            pending.append(frame)
            yield frame.rgb

    for result in analyzer.iter_analyze(frames(), raise_errors=True, batch_images=batch_frames):
        frame = pending.popleft()
        n_frames += 1
        # a frame is not a face crop: the small-image fallback's whole frame is no face here
        faces = sorted((f for f in result.faces if f.found_by != "whole_image"),
                       key=lambda f: -f.score)[:max_faces]
        if faces and tracker is None:
            tracker = IoUTracker(len(faces[0].features))
        ids = tracker.update(faces, frame.time) if tracker is not None else []
        for k, (face, tid) in enumerate(zip(faces, ids, strict=True)):
            track = tracker.tracks[tid]
            track.stats.add(face.features)
            p = face.predictions
            for task, value in p.items():
                if isinstance(value, dict) and "label" in value:
                    counts = track.label_counts.setdefault(task, {})
                    counts[value["label"]] = counts.get(value["label"], 0) + 1
            where = {"source": str(path), "frame": frame.index,
                     "time_s": round(frame.time, 3), "track": tid}
            if records is not None:
                slim = {key: v for key, v in face.to_dict().items()
                        if key not in ("embedding", "attributes_scores")}
                records.write(json.dumps({**where, **slim, "face": k}) + "\n")
            if on_face is not None:
                on_face({**where, **face_row(str(path), k, face.box, face.score, p)})
        n_faces += len(faces)
        if on_frame is not None:
            on_frame(frame.index)
    tracks = tracker.all_tracks() if tracker is not None else []
    note = "" if n_frames else "no frames could be decoded"
    if n_frames and not n_faces:
        note = "no face found in any sampled frame"
    main = max(tracks, key=lambda t: t.stats.count) if tracks else None
    return VideoResult(str(path), n_frames, n_faces, [t.summary() for t in tracks],
                       main.stats.vector() if main is not None and main.stats.count else None,
                       note)


def clip_features(paths: Sequence[str | Path], analyzer: FaceAnalyzer,
                  fps: float | None = 5.0, stride: int | None = None,
                  on_clip: Callable[[], None] | None = None
                  ) -> tuple[list[np.ndarray | None], list[str | None]]:
    """Each video's clip feature (:func:`analyze_video`; None where it has none) and, per
    video, why not (None where it has one): a video that cannot be read, or has no face,
    is a note, not an error. ``on_clip`` is called after each video."""
    feats: list[np.ndarray | None] = []
    notes: list[str | None] = []
    for p in paths:
        try:
            r = analyze_video(p, analyzer, fps=fps, stride=stride)
        except VideoError as exc:
            feats.append(None)
            notes.append(str(exc))
        else:
            feats.append(r.clip_feature)
            notes.append(None if r.clip_feature is not None else f"{p}: {r.note}")
        if on_clip is not None:
            on_clip()
    return feats, notes
