"""Would refitting a trained model's linear heads on its frozen features help? Ridge
regression (age) and logistic regression (gender, race) fitted on the trunk features of the
training split, scored on the validation split beside the model's own heads.

The features are the model's, with test-time flip (the mean of each crop's and its mirror
image's, as the analyzer computes them), on the training cache's crops; standardised on the
training rows. Validation rows only decide; no calibration anywhere (the model's map is
ignored, a refit head would need its own). Each line also prints the training split's score,
which shows how far the trunk has learned its training faces by heart.

Usage: python benchmarks/head_refit.py [CHECKPOINT] --config configs/mtl.yaml \
           --profile shipped_finetune [--alphas 1 10 100 1000] [--cs 0.001 0.01 0.1]
       (CHECKPOINT without suffix, default the shipped model; the profile says which cache)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from facefuse.config import load_config
from facefuse.data.cache import TrainingCache
from facefuse.evaluation.cache_predictions import cache_predictions, labelled_rows
from facefuse.evaluation.metrics import accuracy, mae
from facefuse.inference.face_model import FaceModel
from facefuse.train.mtl import MTLConfig, training_cache

TASKS = ("age", "gender", "race")


def features_and_heads(model: FaceModel, cache: TrainingCache, split: str
                       ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """(features, the model's own predictions per task, row indices) of ``split``'s rows
    labelled with any of TASKS: age in years (uncalibrated), classes as indices."""
    rows = labelled_rows(cache, split, TASKS)
    return (*cache_predictions(model, cache, rows, TASKS), rows)


def score(task: str, predicted: np.ndarray, true: np.ndarray) -> float:
    """Age: mean absolute error in years; classes: accuracy in %."""
    return mae(predicted, true) if task == "age" else accuracy(predicted, true) * 100


def main() -> None:
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="?", help="default: the shipped model")
    p.add_argument("--config", required=True, help="the config the model was trained with")
    p.add_argument("--profile", help="its profile")
    p.add_argument("--alphas", nargs="+", type=float, default=[1, 10, 100, 1000],
                   help="ridge penalties for age")
    p.add_argument("--cs", nargs="+", type=float, default=[0.001, 0.01, 0.1],
                   help="inverse penalties for the logistic regressions")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.checkpoint is None:
        from facefuse.weights import shipped_model_path

        args.checkpoint = shipped_model_path()
    try:
        cfg = load_config(MTLConfig, args.config, profile=args.profile)
        cache, _ = training_cache(cfg, progress=True)
        model = FaceModel.from_checkpoint(args.checkpoint, flip=True)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"head_refit: {exc}") from None
    t = time.perf_counter()
    x = {}
    own = {}
    rows = {}
    for split in ("train", "val"):
        x[split], own[split], rows[split] = features_and_heads(model, cache, split)
    print(f"<!-- features of {len(rows['train'])} + {len(rows['val'])} crops: "
          f"{time.perf_counter() - t:.0f} s -->")
    print("| task | head | train | validation |\n|---|---|---|---|")
    for task in TASKS:
        keep = {s: cache.table.present(task)[rows[s]] for s in x}
        y = {s: cache.table.labels[task][rows[s]][keep[s]] for s in x}
        scaler = StandardScaler().fit(x["train"][keep["train"]])
        z = {s: scaler.transform(x[s][keep[s]]) for s in x}
        unit = "years MAE" if task == "age" else "% accuracy"
        print(f"| {task} ({unit}; {len(y['train'])} / {len(y['val'])} rows) | the model's "
              f"own | {score(task, own['train'][task][keep['train']], y['train']):.3f} | "
              f"{score(task, own['val'][task][keep['val']], y['val']):.3f} |")
        for value in (args.alphas if task == "age" else args.cs):
            fitted = (Ridge(alpha=value) if task == "age" else
                      LogisticRegression(C=value, max_iter=1000)).fit(z["train"], y["train"])
            name = f"ridge, alpha {value:g}" if task == "age" else f"logistic, C {value:g}"
            print(f"| {task} | {name} | {score(task, fitted.predict(z['train']), y['train']):.3f}"
                  f" | {score(task, fitted.predict(z['val']), y['val']):.3f} |")


if __name__ == "__main__":
    main()
