"""Analyzer speed on any device: per-stage ms an image (one image at a time, as
``compare_peers.py`` times it) and batched images/s (``iter_analyze``, faces of several
images sharing model batches).

Usage:
    python benchmarks/bench_analyzer.py                       # CelebA test photos, CPU
    python benchmarks/bench_analyzer.py --device cuda --batch 64
    python benchmarks/bench_analyzer.py photos/ a.jpg --limit 50 --no-flip

PATHS are image files or folders; without them, the first --limit CelebA test photos under
--data (the photos ``compare_peers.py`` times, so the figures sit beside the peers').
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_peers import Ours, _test_split  # noqa: E402  (a sibling script)

from facefuse.inference.backends import BACKENDS  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def image_paths(items: list[str], data: str, limit: int) -> list[str]:
    """Files named or found in folders, or the CelebA test photos; at most ``limit``."""
    if not items:
        table, rows = _test_split("celeba", data, None)
        return [str(table.image[i]) for i in rows[:limit]]
    paths: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            paths += sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            paths.append(str(p))
        else:
            raise SystemExit(f"no such file or folder: {item}")
    if not paths:
        raise SystemExit(f"no images in {items}")
    return paths[:limit]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="*")
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--model", help="a checkpoint (default: the shipped model)")
    p.add_argument("--no-flip", action="store_true")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="what runs the model (default: the analyzer's, auto: ONNX Runtime "
                        "on the CPU, PyTorch on a GPU)")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--batch", type=int, default=32, help="images predicted together (batch_images)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.limit < 1 or args.batch < 1:
        raise SystemExit("--limit and --batch must be at least 1")

    import torch

    torch.set_num_threads(args.threads)
    paths = image_paths(args.paths, args.data, args.limit)
    ours = Ours(None, None, not args.no_flip, args.model, args.device, backend=args.backend)
    device = ours.analyzer.model.device if hasattr(ours.analyzer.model, "device") \
        else args.device
    name = torch.cuda.get_device_name() if str(device).startswith("cuda") else \
        f"{platform.machine()} CPU, {os.cpu_count()} cores"
    for q in paths[:3]:  # warm-up
        ours.stages(q)
    stages = [ours.stages(q) for q in paths]
    mean = {k: float(np.mean([s[k] for s in stages])) for k in stages[0]}
    print(f"{len(paths)} images on {name} ({device}), {args.threads} torch thread(s), "
          f"flip {'off' if args.no_flip else 'on'}, backend {ours.analyzer.model.backend}; "
          f"{mean['faces']:.2f} faces an image")
    print("| decode | detect | crop | model | landmark refiner | identity networks | "
          "total ms/image | images/s |")
    print("|---|---|---|---|---|---|---|---|")
    print("| " + " | ".join(f"{1000 * mean[k]:.1f}" for k in
                            ("decode", "detect", "crop", "model", "refine", "identity",
                             "total"))
          + f" | {1 / mean['total']:.1f} |")
    ours.analyzer.analyze_many(paths[:args.batch], batch_images=args.batch)  # warm-up
    t = time.perf_counter()
    faces = sum(len(r.faces) for r in ours.analyzer.iter_analyze(paths,
                                                                 batch_images=args.batch))
    seconds = time.perf_counter() - t
    print(f"batched (iter_analyze, {args.batch} images a batch): "
          f"{len(paths) / seconds:.1f} images/s, {faces / seconds:.1f} faces/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
