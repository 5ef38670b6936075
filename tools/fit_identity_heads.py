"""Fit the shipped heads on the identity networks' features (age, gender, race, emotion,
attributes) and write them beside the networks, for the analyzer to fuse with the shipped
model's own heads.

Usage: python tools/fit_identity_heads.py [--study reports/identity_heads]
           [--data ../shared/data] [--out src/facefuse/weights/identity/facefuse-identity-heads]

It reads what ``benchmarks/identity_heads.py`` left in ``--study``: the features of every
row (``cache/``, the same detector, alignment and networks as the analyzer) and, per task,
the feature set, head and hyper-parameter that study chose on the validation rows
(``results.json``, "best_identity"). Each head is refitted on the training rows alone, its
late-fusion weight with the shipped model's heads is chosen on the validation rows (as the
study did), and the validation and test figures of the fused prediction go into the JSON.
The test rows are never used for a choice. Needs the training extra (scikit-learn).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

#: the study's feature blocks -> the names the analyzer's identity networks give them
BLOCK_NAMES = {"dlib_desc": "dlib_resnet:features", "dlib_pool": "dlib_resnet:pool",
               "dlib_s3": "dlib_resnet:s3", "sface_feat": "sface:features",
               "sface_m14": "sface:m14", "sface_m7": "sface:m7"}
OUTPUT_OF = {"age": "linear", "gender": "softmax", "race": "softmax", "emotion": "softmax",
             "attributes": "sigmoid"}


def main() -> None:
    import identity_heads as study  # benchmarks/identity_heads.py: its rows and cache

    from facefuse.runtime.linear_heads import fuse_scores
    from facefuse.tasks import get_task
    from facefuse.train.identity_heads import (
        choose_fusion_weight,
        fit_linear_head,
        score,
        write_heads,
    )

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", default=str(ROOT / "reports" / "identity_heads"))
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--out", default=str(ROOT / "src" / "facefuse" / "weights" / "identity" /
                                        "facefuse-identity-heads"))
    args = p.parse_args()
    study_dir = Path(args.study)
    results = json.loads((study_dir / "results.json").read_text())
    study_args = results["args"]
    rows = study.select_rows(args.data, study_args["fer_train_max"], study_args["limit"])
    feats = study.extract(rows, study_dir / "cache")
    heads, figures = {}, {}
    for task, chosen in ((t, r["best_identity"]) for t, r in results["tasks"].items()):
        dataset = next(d for d, ts in study.TASKS_OF.items() if task in ts)
        arrays = feats[dataset]["arrays"]
        y, labelled = study.labels_for(task, rows[dataset])
        split = np.where(labelled, rows[dataset].split, "none")
        keys = study.FEATURE_SETS[chosen["features"]]
        x = np.hstack([arrays[k].reshape(len(split), -1) for k in keys]).astype(np.float64)
        output = OUTPUT_OF[task]
        param = chosen["param"].get("C", chosen["param"].get("alpha"))
        t = get_task(task)
        tr, va, te = (split == s for s in ("train", "val", "test"))
        head = fit_linear_head(task, x[tr], y[tr], output, float(param),
                               tuple(BLOCK_NAMES[k] for k in keys),
                               tuple(t.label_names or ()),
                               (0.0, 116.0) if output == "linear" else None)
        features = {BLOCK_NAMES[k]: arrays[k] for k in keys}
        ident = head.scores(features)
        own = study.shipped_scores(arrays, task)
        w, val_fused = choose_fusion_weight(output, ident[va], own[va], y[va])
        fused = fuse_scores(output, ident, own, w)
        head = type(head)(**{**head.__dict__, "fusion_weight": w})
        heads[task] = head
        figures[task] = {
            "metric": "mae" if output == "linear" else
            ("mean_accuracy" if output == "sigmoid" else "accuracy"),
            "dataset": dataset, "rows": {s: int(m.sum()) for s, m in
                                         (("train", tr), ("val", va), ("test", te))},
            "features": chosen["features"], "head": chosen["head"], "param": chosen["param"],
            "fusion_weight": w,
            "val": {"identity_head": score(output, ident[va], y[va]),
                    "shipped_heads": score(output, own[va], y[va]), "fused": val_fused},
            "test": {"identity_head": score(output, ident[te], y[te]),
                     "shipped_heads": score(output, own[te], y[te]),
                     "fused": score(output, fused[te], y[te])}}
        print(f"{task}: {chosen['features']} {chosen['head']} {chosen['param']}, fusion w "
              f"{w:.2f}; test {figures[task]['test']}", flush=True)
    weights = write_heads(
        args.out, heads, model="facefuse-mtl-small", identity="facefuse-identity.json",
        fitted_by="tools/fit_identity_heads.py",
        fitted=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        machine=f"{platform.machine()} {platform.python_version()}",
        training_data={d: {"rows": {s: int((rows[d].split == s).sum())
                                    for s in ("train", "val", "test")},
                           "split": "read_dataset(SplitConfig(seed=0)), as the shipped model"}
                       for d in rows},
        licence="Research and non-commercial use only: fitted on UTKFace, FER2013 and CelebA, "
                "whose terms are non-commercial; the heads inherit them.",
        figures=figures, model_card="docs/MODEL_CARD.md")
    print(f"wrote {weights} ({weights.stat().st_size / 1024:.0f} kB) and its .json")


if __name__ == "__main__":
    main()
