"""Faces per second of batch analysis on the same photos, in one run: ``facefuse analyze``
(one process), ``facefuse batch --engine local`` and ``facefuse batch --engine ray`` with 1
and 2 workers; and Ray's start-up cost.

Usage:
    python benchmarks/bench_batch.py                       # 2,000 CelebA photos
    python benchmarks/bench_batch.py --photos 200 --data ../shared/data

Each configuration runs as a whole command (``python -m facefuse ...``) into a fresh output
folder, so its wall time includes the interpreter, the models' loading and, for Ray, its
start; ``work s`` is the part a batch run spends on the units (``manifest.json``'s
``seconds``: the engine from its first to its last commit, Ray's start and actors'
model loading included, the driver's own analyzer and the listing of inputs not). Ray's
start-up is also timed alone: ``import ray`` and ``ray.init(num_cpus=2)`` to
``ray.shutdown()`` in a fresh interpreter. The photos are linked into one folder, so every
configuration reads the same files. Each configuration is run once (a run of 2,000 photos
is long enough that its noise is small against the differences measured); the load
average before and after says how busy the machine was.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY_START = ("import time; t = time.perf_counter(); import ray; i = time.perf_counter(); "
             "ray.init(num_cpus={cpus}, include_dashboard=False, log_to_driver=False); "
             "s = time.perf_counter(); ray.shutdown(); "
             "print(i - t, s - i, time.perf_counter() - s)")


def run(cmd: list[str], env: dict[str, str]) -> float:
    """Wall seconds of ``cmd``; a failing command stops the benchmark."""
    began = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env=env)
    seconds = time.perf_counter() - began
    if done.returncode not in (0, 1):  # 1: some photo had no readable image; counted
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): "
                         f"{done.stderr.strip().splitlines()[-3:]}")
    return seconds


def batch_figures(out: Path) -> tuple[int, float]:
    manifest = json.loads((out / "manifest.json").read_text())
    return manifest["totals"]["faces"], manifest["runs"][-1]["seconds"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data", help="data root (CelebA inside)")
    p.add_argument("--photos", type=int, default=2000)
    p.add_argument("--only", nargs="*", default=None,
                   help="run only these configurations (analyze, local1, local2, ray1, ray2)")
    args = p.parse_args()
    photos = sorted((Path(args.data) / "celeba" / "img_celeba").glob("*.jpg"))[:args.photos]
    if len(photos) < args.photos:
        raise SystemExit(f"only {len(photos)} CelebA photos under {args.data}")
    work = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    folder = work / "photos"
    folder.mkdir()
    for photo in photos:
        (folder / photo.name).symlink_to(photo.resolve())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    cli = [sys.executable, "-m", "facefuse"]
    cpus = os.cpu_count() or 1
    print(f"{platform.node()}: {cpus} CPUs, {platform.machine()}, CPython "
          f"{platform.python_version()}; {len(photos)} CelebA photos; load average before "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    import ray

    timings = subprocess.run([sys.executable, "-c", RAY_START.format(cpus=cpus)],
                             capture_output=True, text=True, env=env, check=True)
    import_s, init_s, shutdown_s = map(float, timings.stdout.split()[-3:])
    print(f"ray {ray.__version__}: import {import_s:.2f} s, ray.init({cpus} CPUs) "
          f"{init_s:.2f} s, shutdown {shutdown_s:.2f} s", flush=True)
    configs = {
        "analyze": ("facefuse analyze (one process)",
                    [*cli, "analyze", str(folder), "--quiet", "--format", "csv"]),
        "local1": ("facefuse batch --engine local --workers 1",
                   [*cli, "batch", str(folder), "--quiet", "--workers", "1"]),
        "local2": ("facefuse batch --engine local --workers 2",
                   [*cli, "batch", str(folder), "--quiet", "--workers", "2"]),
        "ray1": ("facefuse batch --engine ray --workers 1",
                 [*cli, "batch", str(folder), "--quiet", "--engine", "ray", "--workers", "1"]),
        "ray2": ("facefuse batch --engine ray --workers 2",
                 [*cli, "batch", str(folder), "--quiet", "--engine", "ray", "--workers", "2"]),
    }
    rows = []
    for key, (name, cmd) in configs.items():
        if args.only and key not in args.only:
            continue
        out = work / key
        if key == "analyze":
            cmd = [*cmd, "--out", str(out / "faces.csv")]
            wall = run(cmd, env)
            with open(out / "faces.csv", newline="") as f:
                faces = sum(1 for r in csv.DictReader(f) if r.get("face") not in (None, ""))
            work_s = None
        else:
            wall = run([*cmd, "--out", str(out)], env)
            faces, work_s = batch_figures(out)
        rows.append((name, faces, wall, work_s))
        print(f"  {name}: {faces} faces, {wall:.1f} s wall", flush=True)
    base = rows[0][1] / rows[0][2] if rows else 1.0
    print(f"\nload average after {os.getloadavg()[0]:.2f}\n")
    print("| command | faces | wall s | faces/s (wall) | vs first | work s | faces/s (work) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, faces, wall, work_s in rows:
        rate = faces / wall
        work_rate = f"{faces / work_s:.1f}" if work_s else "-"
        print(f"| `{name}` | {faces} | {wall:.1f} | {rate:.1f} | {rate / base:.2f}x | "
              f"{'-' if work_s is None else f'{work_s:.1f}'} | {work_rate} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
