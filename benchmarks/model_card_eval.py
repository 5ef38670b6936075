"""Quality of a multi-task checkpoint on the test splits in ../shared/data, with the
breakdown per gender, race and age group on UTKFace; prints Markdown for the model card.

It reuses the training run's cache (same crops and size as training), so figures are for
the training crops: the datasets' own crops, or the detector's where the run's config lists
the dataset under ``detector_crop``. Age goes through the checkpoint's calibration map when
it has one (``facefuse model calibrate``), as the analyzer applies it; the uncalibrated
figure is printed beside it.

Usage: python benchmarks/model_card_eval.py RUN_FOLDER [--checkpoint NAME]
       python benchmarks/model_card_eval.py src/facefuse/weights --checkpoint facefuse-mtl-small \
           --config configs/mtl.yaml --profile shipped_finetune   (the shipped model)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from facefuse.config import load_config
from facefuse.data.loader import CacheLoader
from facefuse.evaluation.groups import demographic_groups
from facefuse.models.checkpoint import load_checkpoint
from facefuse.runtime.calibration import apply_monotone_map
from facefuse.train.loop import predict, score
from facefuse.train.mtl import MTLConfig, lfw_verification, training_cache


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a `facefuse train` output folder, or the folder holding the "
                   "checkpoint (then --config and --profile say how it was trained)")
    p.add_argument("--checkpoint", default="final")
    p.add_argument("--config", help="the run's config (default: RUN_FOLDER/config.yaml)")
    p.add_argument("--profile", help="profile of --config the checkpoint was trained with")
    args = p.parse_args()
    run = Path(args.run)
    cfg = load_config(MTLConfig, args.config or run / "config.yaml", profile=args.profile)
    cache, _ = training_cache(cfg, progress=True)
    checkpoint = load_checkpoint(run / args.checkpoint)
    model = checkpoint.model
    tasks = [t for t in cfg.tasks if t != "identity"]
    rows = cache.rows("test")
    loader = CacheLoader(cache, rows, 256, shuffle=False, tasks=tasks)
    preds = predict(model, loader, tasks)
    calibration = checkpoint.meta.get("calibration", {})
    raw_age_mae = None
    if "age" in preds and "age" in calibration:
        raw_age_mae = score("age", preds["age"]["pred"], preds["age"]["target"])["mae"]
        preds["age"]["pred"] = apply_monotone_map(preds["age"]["pred"], calibration["age"])
    ident = {}
    if "identity" in cfg.tasks:  # View 2 with the checkpoint's own weights
        ident = lfw_verification(model, cache, torch.device("cpu"))
    print("| task | test set | metric | value |\n|---|---|---|---|")
    sets = {"age": "UTKFace", "gender": "UTKFace", "race": "UTKFace", "emotion": "FER2013",
            "attributes": "CelebA subset (identity-disjoint)", "landmarks": "300-W split"}
    for t in tasks:
        for m, v in score(t, preds[t]["pred"], preds[t]["target"]).items():
            pct = m not in ("mae",)
            print(f"| {t} | {sets[t]} ({len(preds[t]['target'])}) | {m} | "
                  f"{v * 100:.1f} %|" if pct else f"| {t} | {sets[t]} "
                  f"({len(preds[t]['target'])}) | {m} | {v:.2f} years |")
    if raw_age_mae is not None:
        print(f"| age | UTKFace ({len(preds['age']['target'])}) | mae, uncalibrated | "
              f"{raw_age_mae:.2f} years |")
    if ident:
        print(f"| identity | LFW View-2 (6000 pairs, 10 folds) | verification accuracy | "
              f"{100 * ident['lfw_verification_accuracy']:.1f} ± "
              f"{100 * ident['lfw_verification_std']:.1f} % (threshold "
              f"{ident['lfw_verification_threshold']:.3f}) |")
    # breakdown on UTKFace test rows: by the true gender, race and age group
    lab = cache.table.labels
    print("\n| group | images | age MAE | gender acc % | race acc % |\n|---|---|---|---|---|")
    by = {t: dict(zip(preds[t]["index"].tolist(), preds[t]["pred"], strict=True)) for t in
          ("age", "gender", "race") if t in preds}
    utk = np.array([i for i in rows if cache.table.dataset[i] == "utkface"])
    for name, mask in demographic_groups(lab["gender"][utk], lab["race"][utk], lab["age"][utk]):
        idx = utk[mask]
        cells = [name, str(len(idx))]
        for t in ("age", "gender", "race"):
            if t not in by or not len(idx):
                cells.append("-")
                continue
            p_ = np.array([by[t][i] for i in idx])
            y = lab[t][idx]
            cells.append(f"{np.mean(np.abs(p_ - y)):.2f}" if t == "age"
                         else f"{100 * np.mean(p_ == y):.1f}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
