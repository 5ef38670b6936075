"""Quality of the default path, as a user calls it: ``FaceAnalyzer()`` on the test photos of
the shipped model's split (UTKFace age, gender, race; FER2013 emotion; CelebA attributes),
beside the same analyzer with the multi-task model's heads alone (``identity_heads=None``).

Usage: python benchmarks/analyzer_quality.py [--data ../shared/data] [--limit N]
           [--out reports/analyzer_quality]

Each photo goes through the analyzer whole (detector, small-image fallback, crops, every
plug-in); its largest face is scored. A photo where no face is found counts as a wrong
answer for the classification tasks and the attributes, and is left out of the age MAE
(the table gives how many). Test rows: ``read_dataset(name, data, SplitConfig(seed=0))``,
the shipped model's split (model card: UTKFace 1399, FER2013 3589, CelebA 469). Prints the
table and writes ``report.md`` and ``results.json`` in ``--out``. Needs only the core install.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

TASKS_OF = {"utkface": ("age", "gender", "race"), "fer2013": ("emotion",),
            "celeba": ("attributes",)}


def test_rows(data: str, limit: int | None, datasets: list[str]) -> dict:
    from facefuse.data.readers import SplitConfig, read_dataset

    out = {}
    for name in datasets:
        table = read_dataset(name, data, SplitConfig(seed=0)).table
        idx = np.flatnonzero(table.split == "test")[:limit]
        out[name] = (table.image[idx], {t: np.asarray(table.labels[t])[idx]
                                        for t in TASKS_OF[name]})
    return out


def predictions(analyzer, paths, tasks, label_names) -> dict:
    """Per task, one prediction per photo (None where no face was found)."""
    out = {t: [] for t in tasks}
    for r in analyzer.iter_analyze([str(p) for p in paths]):
        face = r.largest_face()
        for t in tasks:
            if face is None:
                out[t].append(None)
            elif t == "age":
                out[t].append(face.predictions["age"])
            elif t == "attributes":
                out[t].append([face.predictions["attributes"][n] for n in label_names[t]])
            else:
                out[t].append(label_names[t].index(face.predictions[t]["label"]))
    return out


def score(task: str, pred: list, y: np.ndarray) -> dict:
    found = np.array([p is not None for p in pred])
    if task == "age":
        err = np.abs(np.array([p for p in pred if p is not None]) - y[found])
        return {"mae": float(err.mean()), "faces_found": int(found.sum()), "rows": len(y)}
    if task == "attributes":
        hits = np.array([np.mean(np.asarray(p) == (yy > 0)) if p is not None else 0.0
                         for p, yy in zip(pred, y, strict=True)])
        return {"mean_accuracy": float(100 * hits.mean()), "faces_found": int(found.sum()),
                "rows": len(y)}
    hits = np.array([p == yy if p is not None else False for p, yy in zip(pred, y,
                                                                             strict=True)])
    return {"accuracy": float(100 * hits.mean()), "faces_found": int(found.sum()),
            "rows": len(y)}


def group_scores(pred: dict, labels: dict) -> dict:
    """Age MAE, gender and race accuracy per true gender, race and age group."""
    from facefuse.evaluation.groups import demographic_groups

    out = {}
    for name, mask in demographic_groups(labels["gender"], labels["race"], labels["age"]):
        rows = np.flatnonzero(mask)
        cell = {"photos": int(len(rows))}
        for t in ("age", "gender", "race"):
            sub = score(t, [pred[t][i] for i in rows], labels[t][rows]) if len(rows) else {}
            cell["age_mae" if t == "age" else t] = sub.get("mae", sub.get("accuracy",
                                                                           float("nan")))
        out[name] = cell
    return out


def main() -> None:
    from facefuse.inference.analyzer import FaceAnalyzer
    from facefuse.tasks import get_task

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" /
                                         "data"))
    p.add_argument("--limit", type=int, default=None, help="test rows per dataset")
    p.add_argument("--datasets", nargs="+", default=list(TASKS_OF), choices=list(TASKS_OF))
    p.add_argument("--out", default="reports/analyzer_quality")
    args = p.parse_args()
    rows = test_rows(args.data, args.limit, args.datasets)
    variants = {"default FaceAnalyzer()": {},
                "model heads alone (identity_heads=None)": {"identity_heads": None,
                                                            "identity": None}}
    results: dict = {}
    for variant, kwargs in variants.items():
        analyzer = FaceAnalyzer(**kwargs)
        results[variant] = {}
        for name, (paths, labels) in rows.items():
            tasks = TASKS_OF[name]
            names = {t: list(analyzer.model.meta["tasks"].get(t) or get_task(t).label_names
                             or []) for t in tasks}
            start = time.perf_counter()
            pred = predictions(analyzer, paths, tasks, names)
            seconds = time.perf_counter() - start
            for t in tasks:
                results[variant][t] = {**score(t, pred[t], labels[t]), "dataset": name,
                                       "seconds_per_photo": seconds / len(paths)}
            if name == "utkface":
                results[variant]["groups"] = group_scores(pred, labels)
            print(f"{variant} {name}: {len(paths)} photos, {seconds / len(paths):.3f} s each; "
                  + ", ".join(f"{t} {results[variant][t]}" for t in tasks), flush=True)
    head = f"Command: `python benchmarks/analyzer_quality.py" \
           f"{' --limit ' + str(args.limit) if args.limit else ''}`, " \
           f"{platform.machine()} {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M')}"
    lines = ["# The default path's quality on the shipped model's test split", "", head, "",
             "| task (test photos) | metric | " + " | ".join(variants) + " |",
             "|---|---|" + "---|" * len(variants)]
    for t in ("age", "gender", "race", "emotion", "attributes"):
        if t not in results[next(iter(variants))]:
            continue
        first = results[next(iter(variants))][t]
        metric = next(k for k in first if k in ("mae", "accuracy", "mean_accuracy"))
        cells = [f"{results[v][t][metric]:.2f} ({results[v][t]['faces_found']}/"
                 f"{results[v][t]['rows']} faces)" for v in variants]
        lines.append(f"| {t} ({first['dataset']}, {first['rows']}) | {metric} | "
                     + " | ".join(cells) + " |")
    if "groups" in results[next(iter(variants))]:
        lines += ["", "UTKFace test photos per true group (faces found only for the age MAE; "
                  "no face counts as wrong for gender and race):", "",
                  "| group | photos | " + " | ".join(
                      f"{m} ({v.split(' (')[0]})" for v in variants
                      for m in ("age MAE", "gender %", "race %")) + " |",
                  "|---|---|" + "---|" * (3 * len(variants))]
        first = results[next(iter(variants))]["groups"]
        for g, cell in first.items():
            vals = [results[v]["groups"][g] for v in variants]
            lines.append(f"| {g} | {cell['photos']} | " + " | ".join(
                f"{x['age_mae']:.2f} | {x['gender']:.1f} | {x['race']:.1f}" for x in vals)
                + " |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
