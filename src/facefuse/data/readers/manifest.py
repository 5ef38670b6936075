"""A CSV manifest for the user's own data: one row per image, any label columns.

Columns (header required; only ``image`` is mandatory; an empty cell is a missing label):

* ``image``: path, relative to the manifest's folder (it may not escape that folder);
* ``split``: ``train``, ``val`` or ``test`` (rows without one are assigned, seeded,
  identity-disjoint when identities are given);
* ``identity``: any string;
* ``age``: years, 0-116;
* ``gender``, ``race``, ``emotion``: a class index or name (see ``facefuse.tasks``);
* one column per CelebA attribute name with ``1`` (yes) and ``0`` or ``-1`` (no);
* ``landmarks``: 136 space-separated numbers ``x1 y1 ... x68 y68`` in pixels.

Other columns are ignored and named in the reader's notes. A bad cell skips its row with a
reason naming line and column.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from facefuse.data.readers.base import (
    READERS,
    DatasetError,
    DatasetReader,
    ReadResult,
    SkipLog,
    SplitConfig,
    build_result,
    keep_readable,
)
from facefuse.data.splits import assign_splits
from facefuse.data.table import SPLITS
from facefuse.tasks import CELEBA_ATTRIBUTES, LANDMARK_68_NAMES, get_task

CLASS_COLUMNS = ("gender", "race", "emotion")
KNOWN_COLUMNS = {"image", "split", "identity", "age", "landmarks", *CLASS_COLUMNS,
                 *CELEBA_ATTRIBUTES}


def find_manifests(root: Path) -> list[Path]:
    """CSV files directly under ``root`` whose header has an ``image`` column."""
    found = []
    for p in sorted(root.glob("*.csv")):
        try:
            with p.open(newline="") as f:
                header = next(csv.reader(f), [])
        except (OSError, UnicodeDecodeError):
            continue
        if "image" in [h.strip() for h in header]:
            found.append(p)
    return found


def _parse_class(task_name: str, value: str) -> int:
    names = get_task(task_name).label_names
    if value.lower() in names:
        return names.index(value.lower())
    if value.lstrip("-").isdigit():
        index = int(value)
        if 0 <= index < len(names):
            return index
        raise ValueError(f"{task_name} {index} out of range 0-{len(names) - 1}")
    raise ValueError(f"{task_name} {value!r} is neither an index nor one of {', '.join(names)}")


def _parse_row(row: dict[str, str], attr_cols: list[str]) -> dict[str, object]:
    """Labels of one row; raises ValueError naming the column."""
    out: dict[str, object] = {}
    for col, raw in row.items():
        value = (raw or "").strip()
        if not value or col not in KNOWN_COLUMNS or col in ("image", "split"):
            continue
        try:
            if col == "identity":
                out["identity"] = value
            elif col == "age":
                age = float(value)
                lo, hi = get_task("age").value_range or (0, 0)
                if not lo <= age <= hi:
                    raise ValueError(f"age {age} out of range {lo:g}-{hi:g}")
                out["age"] = age
            elif col in CLASS_COLUMNS:
                out[col] = _parse_class(col, value)
            elif col == "landmarks":
                pts = np.asarray(value.split(), dtype=np.float32)
                if pts.size != 2 * len(LANDMARK_68_NAMES) or not np.isfinite(pts).all():
                    raise ValueError(f"landmarks need {2 * len(LANDMARK_68_NAMES)} finite "
                                     f"numbers, got {pts.size}")
                out["landmarks"] = pts.reshape(-1, 2)
        except ValueError as exc:
            raise ValueError(f"column {col!r}: {exc}") from None
    if attr_cols:
        attrs = np.full(len(CELEBA_ATTRIBUTES), -1, dtype=np.int8)
        for col in attr_cols:
            value = (row.get(col) or "").strip()
            if not value:
                continue
            if value not in ("1", "0", "-1"):
                raise ValueError(f"column {col!r}: {value!r} is not 1, 0 or -1")
            attrs[CELEBA_ATTRIBUTES.index(col)] = 1 if value == "1" else 0
        if (attrs >= 0).any():
            out["attributes"] = attrs
    return out


@READERS.register("manifest")
class ManifestReader(DatasetReader):
    name = "manifest"
    description = "CSV manifest (image path + label columns)"

    def locate(self, root: Path) -> Path | None:
        found = find_manifests(root) if root.is_dir() else []
        return found[0] if found else None

    def read(self, root: Path, splits: SplitConfig = SplitConfig()) -> ReadResult:
        path = root
        if not path.is_file():
            raise DatasetError(f"manifest: file {path} does not exist")
        dataset = path.stem
        log = SkipLog(dataset)
        base = path.parent.resolve()
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            if "image" not in header:
                raise DatasetError(f"manifest: {path} has no 'image' column in its header "
                                   f"(found {header})")
            reader.fieldnames = header
            unknown = [h for h in header if h not in KNOWN_COLUMNS]
            if unknown:
                log.note(f"ignored columns (not a known task): {', '.join(unknown)}")
            attr_cols = [h for h in header if h in CELEBA_ATTRIBUTES]
            rows = list(enumerate(reader, start=2))
        paths, ids, labels, given_split = [], [], [], []
        for lineno, row in rows:
            where = f"{path}:{lineno}"
            image = (row.get("image") or "").strip()
            if not image:
                log.skip(where, "empty 'image' cell")
                continue
            target = (base / image).resolve()
            if not target.is_relative_to(base):
                log.skip(where, f"image path {image!r} escapes the manifest's root {base}")
                continue
            split = (row.get("split") or "").strip()
            if split and split not in SPLITS:
                log.skip(where, f"column 'split': {split!r} is not one of {', '.join(SPLITS)}")
                continue
            try:
                parsed = _parse_row(row, attr_cols)
            except ValueError as exc:
                log.skip(where, str(exc))
                continue
            if not parsed:
                log.skip(where, "no label in any known column")
                continue
            rel = target.relative_to(base).as_posix()
            paths.append(target)
            ids.append(f"{dataset}/{rel}")
            labels.append(parsed)
            given_split.append(split)
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            keep = []
            for i, sid in enumerate(ids):
                if sid in seen:
                    log.skip(paths[i], "listed twice in the manifest; the first row is kept")
                else:
                    seen.add(sid)
                    keep.append(i)
            paths, ids, labels, given_split = ([x[i] for i in keep] for x in
                                               (paths, ids, labels, given_split))
        paths, ids, labels, given_split = keep_readable(log, paths, ids, labels, given_split)
        if not paths:
            raise DatasetError(f"manifest: no readable labelled image in {path} "
                               f"({len(log.skipped)} row(s) skipped)")
        columns: dict[str, np.ndarray] = {}
        for task_name in {k for row_labels in labels for k in row_labels}:
            task = get_task(task_name)
            col = task.empty_column(len(labels))
            for j, row_labels in enumerate(labels):
                if task_name in row_labels:
                    col[j] = row_labels[task_name]
            columns[task_name] = col
        split = np.asarray(given_split, dtype=object)
        split = self._complete_splits(ids, split, columns, splits, log)
        if "identity" in columns:
            columns["identity"] = np.asarray([f"{dataset}:{v}" if v else "" for v in
                                              columns["identity"]], dtype=object)
        return build_result(log, path, ids, paths, split, labels=columns)

    @staticmethod
    def _complete_splits(ids: list[str], split: np.ndarray, columns: dict[str, np.ndarray],
                         splits: SplitConfig, log: SkipLog) -> np.ndarray:
        """Assign rows without a split; a person already placed by another row follows it,
        so identities never straddle splits."""
        todo = np.flatnonzero(split == "")
        if not len(todo):
            return split
        identity = columns.get("identity")
        groups = None
        if identity is not None and (identity[todo] != "").any():
            groups = identity[todo]
            placed: dict[str, set[str]] = {}
            for person, s in zip(identity, split, strict=True):
                if person and s:
                    placed.setdefault(person, set()).add(s)
            straddling = sorted(p for p, s in placed.items() if len(s) > 1)
            if straddling:
                log.note(f"the manifest's own split puts {len(straddling)} identities in "
                         f"several splits (e.g. {straddling[0]!r})")
        out = split.copy()
        out[todo] = assign_splits([ids[i] for i in todo], splits.fractions, splits.seed,
                                  groups=groups)
        if groups is not None:
            for i in todo:
                given = placed.get(identity[i])
                if given:
                    out[i] = sorted(given)[0]
        disjoint = ", identity-disjoint, following rows that name a split" \
            if groups is not None else ""
        log.note(f"{len(todo)} rows without a split assigned (seed {splits.seed}{disjoint})")
        return out
