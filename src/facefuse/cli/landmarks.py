"""``facefuse fit-landmarks``: fit the cascaded landmark refiner on 300-W for a model.

The model is run on every 300-W photo as the analyzer runs it (detector, crop, model; the
whole photo as the face where the detector finds none); the refiner is fitted on the train
split from those starts and scored on the validation and test splits, stage by stage.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from facefuse.cli.options import examples
from facefuse.cli.outputs import make_folder


def model_starts(images: list[np.ndarray], model, detector: str, quiet: bool,
                 device: str = "cpu") -> np.ndarray:
    """The model's 68 points (image pixels, not refined) on each photo's largest face."""
    from tqdm.auto import tqdm

    from facefuse.inference.analyzer import FaceAnalyzer

    found = FaceAnalyzer(model=model, detector=detector, device=device, landmark_refiner=None)
    whole = FaceAnalyzer(model=found.model, detector="full_frame", device=device,
                         landmark_refiner=None)
    out = []
    for rgb in tqdm(images, desc="model landmarks", unit="img", disable=quiet):
        face = found.analyze(rgb).largest_face() or whole.analyze(rgb).largest_face()
        out.append(np.asarray(face.landmarks, np.float64))
    return np.stack(out)


def cmd_fit_landmarks(args: argparse.Namespace) -> int:
    from facefuse.data.images import load_rgb
    from facefuse.data.readers import read_dataset
    from facefuse.data.readers.base import DatasetError, SplitConfig
    from facefuse.inference.face_model import FaceModel
    from facefuse.inference.landmark_refiner import RefinerConfig
    from facefuse.train.landmark_refiner import fit_refiner, stage_errors
    from facefuse.weights import shipped_model_path

    try:
        config = RefinerConfig(cells=tuple(args.cells), grid=args.grid, ridge=args.ridge,
                               perturbations=args.perturbations, error_scale=args.error_scale)
    except ValueError as exc:
        print(f"facefuse fit-landmarks: {exc}", file=sys.stderr)
        return 2
    if not make_folder(Path(args.out).parent, args.out):  # now, not after the fit
        return 2
    model_path = args.model or shipped_model_path()
    try:
        model = FaceModel.load(model_path, args.device, flip=not args.no_flip)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        print(f"facefuse fit-landmarks: {exc}", file=sys.stderr)
        return 2
    if "landmarks" not in model.tasks:
        print(f"facefuse fit-landmarks: {model_path} has no landmark head", file=sys.stderr)
        return 2
    seed = args.split_seed if args.split_seed is not None else \
        int(model.meta.get("split_seed", 0))
    root = args.root or str(Path("..") / "shared" / "data")
    try:
        table = read_dataset("300w", root, SplitConfig(seed=seed)).table
    except DatasetError as exc:
        print(f"facefuse fit-landmarks: {exc}", file=sys.stderr)
        return 2
    paths = [str(p) for p in table.image]
    truths = np.asarray(table.labels["landmarks"], np.float64)
    split = np.asarray(table.split)
    if not (split == "train").any():
        print("facefuse fit-landmarks: the 300-W table has no training split", file=sys.stderr)
        return 2
    say = (lambda _m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    t0 = time.perf_counter()
    images = [load_rgb(p) for p in paths]
    starts = model_starts(images, model, args.detector, args.quiet, args.device)
    train = np.flatnonzero(split == "train")
    meta = {"trained_on": f"300-W train split ({len(train)} photos and their mirror images; "
                          f"split seed {seed})",
            "starts_from": Path(model_path).name, "detector": args.detector,
            "licence": "Research and non-commercial use only (fitted on 300-W).",
            "model_card": "docs/MODEL_CARD.md"}
    refiner = fit_refiner([images[i] for i in train], truths[train], starts[train], config,
                          progress=say, meta=meta)
    scores: dict[str, list[float]] = {}
    for name in ("val", "test"):
        rows = np.flatnonzero(split == name)
        if len(rows):
            errs = stage_errors(refiner, [images[i] for i in rows], truths[rows], starts[rows])
            scores[name] = [round(float(e.mean()), 5) for e in errs]
    refiner.meta["nme_by_stage"] = scores
    refiner.meta["fit_seconds"] = round(time.perf_counter() - t0, 1)
    weights = refiner.save(args.out)
    print("NME (outer eye corners), model's points then after each stage:")
    for name, vals in scores.items():
        print(f"  {name:5s} " + " -> ".join(f"{100 * v:.2f} %" for v in vals))
    print(f"wrote {weights} and its .json ({refiner.meta['fit_seconds']} s)")
    return 0


FIT_HELP = "fit the cascaded landmark refiner on 300-W from a model's own landmark predictions"


def add_model_fit_landmarks(model_sub: argparse._SubParsersAction) -> None:
    """``facefuse model fit-landmarks``."""
    _fit_landmarks_arguments(model_sub.add_parser(
        "fit-landmarks", help=FIT_HELP,
        **examples("facefuse model fit-landmarks ../shared/data --out my-refiner")))


def add_landmarks_parser(sub: argparse._SubParsersAction) -> None:
    """``facefuse fit-landmarks``: the older name of ``facefuse model fit-landmarks``."""
    _fit_landmarks_arguments(sub.add_parser(
        "fit-landmarks", help=f"{FIT_HELP} (= facefuse model fit-landmarks)",
        **examples("facefuse fit-landmarks ../shared/data --out my-refiner")))


def _fit_landmarks_arguments(p: argparse.ArgumentParser) -> None:
    from facefuse.inference.landmark_refiner import RefinerConfig

    d = RefinerConfig()
    p.add_argument("root", nargs="?", help="data root holding 300w/ (default: ../shared/data)")
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    p.add_argument("--out", required=True, help="refiner path (NAME: writes NAME.safetensors "
                                                "and NAME.json)")
    p.add_argument("--detector", default="mtcnn", help="face detector, as for analyze")
    p.add_argument("--no-flip", action="store_true", help="model without test-time flip")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                   help="where the model runs (default auto)")
    p.add_argument("--split-seed", type=int, default=None,
                   help="300-W split seed (default: the model's, so its test faces stay out)")
    p.add_argument("--cells", type=int, nargs="+", default=list(d.cells), metavar="PX",
                   help=f"cell side of each stage in frame pixels (default {list(d.cells)})")
    p.add_argument("--grid", type=int, default=d.grid, help=f"cells per side (default {d.grid})")
    p.add_argument("--ridge", type=float, default=d.ridge,
                   help=f"ridge penalty per sample (default {d.ridge})")
    p.add_argument("--perturbations", type=int, default=d.perturbations,
                   help=f"starts per face and mirror (default {d.perturbations})")
    p.add_argument("--error-scale", type=float, default=d.error_scale,
                   help=f"scale of the borrowed model errors (default {d.error_scale})")
    p.add_argument("--quiet", action="store_true", help="no progress")
    p.set_defaults(func=cmd_fit_landmarks)

