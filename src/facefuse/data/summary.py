"""Per-dataset counts, label distributions and skipped files, as data, text or JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from facefuse.data.readers import ReadResult, SplitConfig, find_datasets, read_dataset
from facefuse.data.readers.base import DatasetError
from facefuse.data.table import SPLITS, SampleTable
from facefuse.tasks import TaskKind, age_group, get_task


@dataclass(frozen=True)
class DatasetSummary:
    """What one dataset holds: counts per split, label distributions, skipped files."""

    name: str
    location: str
    samples: int
    per_split: dict[str, int]
    labels: dict[str, dict[str, object]]
    skipped: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def label_distribution(table: SampleTable, task_name: str) -> dict[str, object]:
    """A compact description of one task's labels in ``table``."""
    task = get_task(task_name)
    column = table.labels[task_name]
    present = task.is_present(column)
    out: dict[str, object] = {"labelled": int(present.sum())}
    values = column[present]
    if task.kind is TaskKind.CLASSIFICATION:
        counts = np.bincount(values.astype(int), minlength=len(task.label_names))
        out["counts"] = {n: int(c) for n, c in zip(task.label_names, counts, strict=True)}
    elif task.kind is TaskKind.REGRESSION and len(values):
        out.update(min=float(values.min()), mean=round(float(values.mean()), 2),
                   max=float(values.max()))
        groups = np.bincount(age_group(values), minlength=3)
        out["groups"] = {"young (<18)": int(groups[0]), "adult (18-59)": int(groups[1]),
                         "old (60+)": int(groups[2])}
    elif task.kind is TaskKind.MULTI_LABEL and len(values):
        rate = np.where(values >= 0, values, 0).sum(0) / np.maximum((values >= 0).sum(0), 1)
        out["positive_rate"] = {n: round(float(r), 3)
                                for n, r in zip(task.label_names, rate, strict=True)}
    elif task.kind is TaskKind.IDENTITY:
        ids, counts = np.unique(values.astype(str), return_counts=True)
        out.update(identities=len(ids), images_per_identity_max=int(counts.max(initial=0)),
                   identities_with_2_plus=int((counts >= 2).sum()))
    elif task.kind is TaskKind.LANDMARKS:
        out["points"] = len(task.label_names)
    return out


def summarize_result(result: ReadResult) -> DatasetSummary:
    """Summarize one reader's result."""
    t = result.table
    return DatasetSummary(
        name=result.name, location=result.root, samples=len(t),
        per_split={s: int((t.split == s).sum()) for s in SPLITS},
        labels={task: label_distribution(t, task) for task in t.tasks_present()},
        skipped=[s.to_dict() for s in result.skipped], notes=list(result.notes))


def summarize_root(root: str | Path, splits: SplitConfig = SplitConfig()) -> list[DatasetSummary]:
    """Find every known layout under ``root`` and summarize it.

    A dataset that cannot be read at all becomes a summary with ``error`` set; the others
    are still summarized.
    """
    out = []
    for name, location in find_datasets(root):
        try:
            out.append(summarize_result(read_dataset(name, location, splits)))
        except DatasetError as exc:
            out.append(DatasetSummary(name, str(location), 0, {}, {}, error=str(exc)))
    return out


def format_summary(summaries: list[DatasetSummary], max_skipped: int | None = None) -> str:
    """A readable text report; every skipped file is listed unless ``max_skipped`` is set."""
    lines = []
    header = f"{'dataset':<10} {'samples':>8} {'train':>7} {'val':>7} {'test':>7} {'skipped':>8}"
    lines += [header, "-" * len(header)]
    for s in summaries:
        if s.error:
            lines.append(f"{s.name:<10} ERROR: {s.error}")
            continue
        lines.append(f"{s.name:<10} {s.samples:>8} " + " ".join(
            f"{s.per_split.get(k, 0):>7}" for k in SPLITS) + f" {len(s.skipped):>8}")
    for s in summaries:
        if s.error:
            continue
        lines += ["", f"== {s.name} ({s.location})"]
        for task, dist in s.labels.items():
            lines.append(f"  {task}: {_format_distribution(dist)}")
        for note in s.notes:
            lines.append(f"  note: {note}")
        shown = s.skipped if max_skipped is None else s.skipped[:max_skipped]
        if s.skipped:
            lines.append(f"  skipped {len(s.skipped)}:")
            lines += [f"    {k['path']}: {k['reason']}" for k in shown]
            if len(shown) < len(s.skipped):
                lines.append(f"    ... and {len(s.skipped) - len(shown)} more (--json lists all)")
    return "\n".join(lines)


def _format_distribution(dist: dict[str, object]) -> str:
    parts = [f"{dist['labelled']} labelled"]
    for key, value in dist.items():
        if key == "labelled":
            continue
        if key == "positive_rate" and isinstance(value, dict):
            ranked = sorted(value.items(), key=lambda kv: kv[1])
            show = lambda items: ", ".join(f"{k} {v:.2f}" for k, v in items)  # noqa: E731
            parts.append(f"positive rate lowest {show(ranked[:3])}; highest {show(ranked[-3:])}")
        elif isinstance(value, dict):
            parts.append(", ".join(f"{k} {v}" for k, v in value.items()))
        else:
            parts.append(f"{key.replace('_', ' ')} {value}")
    return "; ".join(parts)
