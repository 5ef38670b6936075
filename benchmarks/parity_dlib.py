"""Parity and speed of facefuse's port of dlib's ResNet face descriptor against dlib-bin.

On real faces (CelebA's loose crops in ../shared/data; LFW's 90x90 tight crops are too
small for dlib's detector), dlib-bin itself makes the 150x150 chips: its frontal (HOG)
detector, the 5-point predictor ``shape_predictor_5_face_landmarks.dat`` (CC0, same package
as the descriptor) and ``dlib.get_face_chip(img, shape, 150, 0.25)``. On those chips it
compares ``dlib.face_recognition_model_v1(dat).compute_face_descriptor(chip)`` with
:class:`facefuse.models.dlib_resnet.DlibResNet` read from the same ``.dat`` file, in PyTorch
and exported to ONNX (opset 17, static 150x150) in ONNX Runtime: max and mean absolute
difference over all descriptor values, and the largest Euclidean distance between the two
descriptors of one face (dlib's same-person threshold is 0.6). It times one face at a time:
dlib-bin, PyTorch (1 thread) and ONNX Runtime (1 thread).

Environment: dlib must not go into facefuse's own venv, so use a separate venv holding
dlib-bin, the model package and facefuse (editable)::

    python -m venv /tmp/dlibfull
    /tmp/dlibfull/bin/pip install dlib-bin face_recognition_models   # models: a 100 MB sdist
    /tmp/dlibfull/bin/pip install -e /work/main                      # torch, onnxruntime, ...
    /tmp/dlibfull/bin/python benchmarks/parity_dlib.py --images 100

(``face_recognition_models`` is not imported, only located: its ``__init__`` needs
``pkg_resources``, which current setuptools no longer ships.)

Usage: python benchmarks/parity_dlib.py [--dat PATH] [--predictor PATH] [--data DIR]
       [--dataset celeba|lfw] [--images N] [--repeats R] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

MODELS_PACKAGE = "face_recognition_models"
DESCRIPTOR = "dlib_face_recognition_resnet_model_v1.dat"
PREDICTOR = "shape_predictor_5_face_landmarks.dat"


def package_model(name: str) -> Path | None:
    """A model file inside the installed face_recognition_models package, or None."""
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    return path if path.is_file() else None


def image_paths(data: Path, dataset: str) -> list[Path]:
    folder = data / ("celeba/img_celeba" if dataset == "celeba" else "lfw/lfw")
    paths = sorted(folder.rglob("*.jpg"))
    if not paths:
        raise SystemExit(f"no images under {folder}")
    return paths


def make_chips(paths: list[Path], predictor: Path, n: int) -> tuple[np.ndarray, list[str]]:
    """Up to ``n`` 150x150 RGB chips, dlib's way: largest frontal detection (upsampled once),
    five points, ``get_face_chip(img, shape, 150, 0.25)``."""
    import dlib

    detector = dlib.get_frontal_face_detector()
    shape_predictor = dlib.shape_predictor(str(predictor))
    chips, names = [], []
    for path in paths:
        img = np.array(Image.open(path).convert("RGB"))
        found = detector(img, 1)
        if not found:
            continue
        box = max(found, key=lambda r: r.area())
        chips.append(dlib.get_face_chip(img, shape_predictor(img, box), 150, 0.25))
        names.append(path.name)
        if len(chips) == n:
            break
    return np.stack(chips), names


def timed(fn, items: list, repeats: int) -> tuple[list, float]:
    """Outputs of ``fn`` on each item, and the median over ``repeats`` passes of the mean
    seconds per item (one warm-up call first)."""
    fn(items[0])
    per_pass, outputs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        outputs = [fn(item) for item in items]
        per_pass.append((time.perf_counter() - start) / len(items))
    return outputs, statistics.median(per_pass)


def differences(ours: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    diff = np.abs(ours - ref)
    return {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
            "max_euclidean": float(np.linalg.norm(ours - ref, axis=1).max())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dat", type=Path, default=package_model(DESCRIPTOR),
                   help=f"{DESCRIPTOR} (default: the installed {MODELS_PACKAGE} file)")
    p.add_argument("--predictor", type=Path, default=None,
                   help=f"{PREDICTOR} (default: beside --dat)")
    p.add_argument("--data", type=Path,
                   default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--dataset", choices=("celeba", "lfw"), default="celeba")
    p.add_argument("--images", type=int, default=100, help="faces to compare")
    p.add_argument("--repeats", type=int, default=3, help="timing passes (median)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = p.parse_args()
    if args.dat is None or not args.dat.is_file():
        raise SystemExit(f"descriptor file not found ({args.dat}); install {MODELS_PACKAGE} "
                         "or pass --dat")
    predictor = args.predictor or args.dat.with_name(PREDICTOR)

    import dlib
    import onnxruntime as ort
    import torch

    from facefuse.models.dlib_resnet import DlibResNet
    from facefuse.models.onnx_export import features_graph

    torch.set_num_threads(1)
    chips, names = make_chips(image_paths(args.data, args.dataset), predictor, args.images)
    items = list(chips)
    print(f"{len(chips)} chips from {args.dataset} (dlib frontal detector, 5 points)")

    net = dlib.face_recognition_model_v1(str(args.dat))
    ref, t_dlib = timed(lambda c: np.asarray(net.compute_face_descriptor(c)), items,
                        args.repeats)
    ref = np.stack(ref)

    model = DlibResNet.from_dat(args.dat).eval()
    mean = torch.tensor(model.normalisation["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.normalisation["std"]).view(1, 3, 1, 1)

    def to_input(chip: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(chip)).permute(2, 0, 1)[None].float() / 255
        return (x - mean) / std

    with torch.no_grad():
        ours_torch, t_torch = timed(lambda c: model(to_input(c))[0].numpy(), items,
                                    args.repeats)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(features_graph(model, 150), options,
                                   providers=["CPUExecutionProvider"])
    ours_onnx, t_onnx = timed(lambda c: session.run(None, {"images": to_input(c).numpy()})[0][0],
                              items, args.repeats)
    results = {
        "faces": len(chips), "dataset": args.dataset, "dat": str(args.dat),
        "torch_vs_dlib": differences(np.stack(ours_torch), ref),
        "onnx_vs_dlib": differences(np.stack(ours_onnx), ref),
        "ms_per_face": {"dlib_bin": 1000 * t_dlib, "torch_1_thread": 1000 * t_torch,
                        "onnxruntime_1_thread": 1000 * t_onnx},
        "descriptor_norm_mean": float(np.linalg.norm(ref, axis=1).mean()),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor(),
                    "dlib": dlib.__version__, "torch": torch.__version__,
                    "onnxruntime": ort.__version__,
                    "dlib_uses_cuda": bool(getattr(dlib, "DLIB_USE_CUDA", False))},
        "first_faces": names[:5],
    }
    for key in ("torch_vs_dlib", "onnx_vs_dlib"):
        d = results[key]
        print(f"{key:14s} max abs {d['max_abs']:.3g}  mean abs {d['mean_abs']:.3g}  "
              f"max Euclidean {d['max_euclidean']:.3g}")
    t = results["ms_per_face"]
    print(f"ms per face: dlib-bin {t['dlib_bin']:.1f}, torch (1 thread) "
          f"{t['torch_1_thread']:.1f}, ONNX Runtime (1 thread) {t['onnxruntime_1_thread']:.1f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
