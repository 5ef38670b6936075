"""The Parquet tables a batch job writes, with explicit Arrow schemas (the same whichever
engine runs the job).

``faces``: one row per face: ``source``, ``frame`` and ``time_s`` (videos; null for a
photo), ``face`` (its number in the photo or frame), the box ``x0 y0 x1 y1``, ``score``,
``found_by``, ``landmarks`` (68 points as 136 floats, x then y, image pixels), then each
task's prediction: a class's label and ``<task>_confidence``, a value (``age``), the
attributes present as a list with ``attributes_scores`` (one per attribute, in the order
``manifest.json`` names), and the identity ``embedding`` as a fixed-size list of float32
(and the trunk ``features`` with ``--features``).

``files``: one row per work unit (a photo, or a frame range of a video): ``path``,
``size``, ``mtime_ns`` (the resume key), ``kind``, ``frame_start``, ``frame_stop``,
``status`` (``ok`` or ``error``), ``faces``, ``error``, ``seconds`` and ``worker``
(``host:pid``).

A worker returns one row per unit with the unit's faces nested (:func:`unit_schema`);
:func:`split_units` turns those rows into the two tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from facefuse.inference.rows import face_row
from facefuse.tasks import TaskKind, get_task

if TYPE_CHECKING:
    import pyarrow as pa

    from facefuse.inference.analyzer import FaceAnalyzer, FaceResult

LANDMARK_POINTS = 68
FILE_STATUS = ("ok", "error")


@dataclass(frozen=True)
class FaceLayout:
    """What the ``faces`` table holds for one analyzer's settings: its tasks by kind, the
    attribute names, and the embedding's and features' widths (0: no such column)."""

    classes: tuple[str, ...] = ()
    values: tuple[str, ...] = ()
    multi_label: dict[str, tuple[str, ...]] = field(default_factory=dict)
    landmarks: bool = False
    embedding_dim: int = 0
    features_dim: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "values": list(self.values),
                "multi_label": {k: list(v) for k, v in self.multi_label.items()},
                "landmarks": self.landmarks, "embedding_dim": self.embedding_dim,
                "features_dim": self.features_dim}


def layout_for(analyzer: FaceAnalyzer, features: bool = False) -> FaceLayout:
    """The :class:`FaceLayout` of what ``analyzer`` reports (the model's own identity
    embedding and the trunk features are measured on the embedded demo photo)."""
    decoder = analyzer.model.decoder
    classes, values, multi = [], [], {}
    for task in analyzer.tasks:
        if task == "embedding" or task not in analyzer.model.tasks:
            continue
        kind = get_task(task).kind
        if kind is TaskKind.CLASSIFICATION:
            classes.append(task)
        elif kind is TaskKind.REGRESSION:
            values.append(task)
        elif kind is TaskKind.MULTI_LABEL:
            multi[task] = tuple(decoder.label_names[task])
    wants_embedding = "identity" in analyzer.tasks or "embedding" in analyzer.tasks
    embedding_dim = features_dim = 0
    if wants_embedding and analyzer.identity is not None:
        embedding_dim = analyzer.identity.dim
    if (wants_embedding and not embedding_dim) or features:
        from facefuse.assets import demo_image_path

        face = analyzer.analyze(demo_image_path()).largest_face()
        if face is None:
            raise ValueError("the analyzer finds no face in the demo photo, so the width of "
                             "its embedding or features is unknown")
        if wants_embedding:
            if "embedding" not in face.predictions:
                raise ValueError("the model gives no identity embedding (it has no identity "
                                 "head; use the shipped identity networks)")
            embedding_dim = len(face.predictions["embedding"])
        if features:
            features_dim = int(len(face.features))
    return FaceLayout(tuple(classes), tuple(values), multi,
                      "landmarks" in analyzer.tasks and "landmarks" in analyzer.model.tasks,
                      embedding_dim, features_dim)


def face_schema(layout: FaceLayout) -> pa.Schema:
    """The ``faces`` table's schema for ``layout``."""
    import pyarrow as pa

    fields = [pa.field("source", pa.string(), nullable=False),
              pa.field("frame", pa.int64()), pa.field("time_s", pa.float64()),
              pa.field("face", pa.int32(), nullable=False),
              *(pa.field(c, pa.float64()) for c in ("x0", "y0", "x1", "y1", "score")),
              pa.field("found_by", pa.string())]
    if layout.landmarks:
        fields.append(pa.field("landmarks", pa.list_(pa.float32(), 2 * LANDMARK_POINTS)))
    for task in layout.values:
        fields.append(pa.field(task, pa.float64()))
    for task in layout.classes:
        fields += [pa.field(task, pa.string()), pa.field(f"{task}_confidence", pa.float32())]
    for task, names in layout.multi_label.items():
        fields += [pa.field(task, pa.list_(pa.string())),
                   pa.field(f"{task}_scores", pa.list_(pa.float32(), len(names)))]
    if layout.embedding_dim:
        fields.append(pa.field("embedding", pa.list_(pa.float32(), layout.embedding_dim)))
    if layout.features_dim:
        fields.append(pa.field("features", pa.list_(pa.float32(), layout.features_dim)))
    return pa.schema(fields)


def files_schema() -> pa.Schema:
    """The ``files`` table's schema."""
    import pyarrow as pa

    return pa.schema([pa.field("path", pa.string(), nullable=False),
                      pa.field("size", pa.int64()), pa.field("mtime_ns", pa.int64()),
                      pa.field("kind", pa.string()), pa.field("frame_start", pa.int64()),
                      pa.field("frame_stop", pa.int64()), pa.field("status", pa.string()),
                      pa.field("faces", pa.int32()), pa.field("error", pa.string()),
                      pa.field("seconds", pa.float64()), pa.field("worker", pa.string())])


def unit_schema(layout: FaceLayout) -> pa.Schema:
    """A worker's output: the ``files`` columns and the unit's faces as a list
    (``face_rows``) of ``faces`` rows."""
    import pyarrow as pa

    return files_schema().append(pa.field("face_rows",
                                          pa.list_(pa.struct(face_schema(layout)))))


def face_record(layout: FaceLayout, source: str, face: FaceResult,
                frame: int | None = None, time_s: float | None = None) -> dict[str, Any]:
    """One face as a ``faces`` row (a dict in the schema's columns)."""
    p = face.predictions
    flat = face_row(source, face.index, face.box, face.score, p)
    row: dict[str, Any] = {"source": source, "frame": frame, "time_s": time_s,
                           "face": face.index, **{c: flat[c] for c in ("x0", "y0", "x1",
                                                                       "y1", "score")},
                           "found_by": face.found_by}
    if layout.landmarks:
        row["landmarks"] = None if face.landmarks is None else \
            [v for point in face.landmarks for v in point]
    for task in (*layout.values, *layout.classes):
        row[task] = flat.get(task)
        if task in layout.classes:
            row[f"{task}_confidence"] = flat.get(f"{task}_confidence")
    for task, names in layout.multi_label.items():
        present = p.get(task) or {}
        scores = p.get(f"{task}_scores")
        row[task] = [n for n in names if present.get(n)]
        row[f"{task}_scores"] = None if scores is None else [scores[n] for n in names]
    if layout.embedding_dim:
        row["embedding"] = p.get("embedding")
    if layout.features_dim:
        row["features"] = None if face.features is None else \
            [float(v) for v in face.features]
    return row


def split_units(units: pa.Table, layout: FaceLayout) -> tuple[pa.Table, pa.Table]:
    """(``faces``, ``files``) from a table of :func:`unit_schema` rows: the nested faces
    flattened into one row each, in unit order."""
    import pyarrow as pa
    import pyarrow.compute as pc

    schema = face_schema(layout)
    files = units.drop_columns(["face_rows"]).cast(files_schema())
    nested = units.column("face_rows")
    flat = pc.list_flatten(nested)
    if isinstance(flat, pa.ChunkedArray):
        flat = flat.combine_chunks() if flat.num_chunks else pa.array([], pa.struct(schema))
    faces = pa.Table.from_struct_array(flat) if len(flat) else schema.empty_table()
    return faces.cast(schema), files
