"""Start-up cost of the core install: each figure beside a bare ``python -c pass`` of the same
interpreter, measured in the same run (these machines are noisy; compare the differences).

Usage:
    python benchmarks/bench_startup.py                        # this interpreter's venv
    python benchmarks/bench_startup.py --python /tmp/core/bin/python --runs 7
    python benchmarks/bench_startup.py --photo some.jpg

Times, as whole processes (the minimum and the median of ``--runs``):

* ``python -c pass`` (the baseline);
* ``python -c "import facefuse"``;
* ``facefuse --help``;
* ``facefuse analyze PHOTO`` end to end (the embedded photo by default: detection, every
  task, the identity networks, the landmark refiner);
* ``facefuse verify PHOTO PHOTO`` (two analyses for the identity embedding);

and the size of the interpreter's environment (``sys.prefix``) on disk, with whether torch
can be imported in it. Targets (issue 32): ``--help`` within 0.5 s of bare Python, ``import``
within 0.3 s, ``analyze`` under 2 s, the core environment under 500 MB.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path


def timed(cmd: list[str], runs: int) -> tuple[float, float]:
    """(minimum, median) wall seconds of ``runs`` runs of ``cmd``; a failing run raises."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): "
                             f"{done.stderr.strip().splitlines()[-1:]}")
    return min(times), statistics.median(times)


def tree_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            p = Path(root) / f
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--python", default=sys.executable,
                   help="the interpreter of the environment to measure (default: this one)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--photo", default=None, help="photo to analyze (default: the embedded one)")
    args = p.parse_args()
    py = args.python
    prefix = Path(subprocess.run([py, "-c", "import sys; print(sys.prefix)"],
                                 capture_output=True, text=True, check=True).stdout.strip())
    has_torch = subprocess.run([py, "-c", "import torch"], capture_output=True).returncode == 0
    script = Path(py).parent / "facefuse"  # the console script, as a user runs it
    cli = [str(script)] if script.is_file() else [py, "-m", "facefuse"]
    photo = args.photo or subprocess.run(
        [py, "-c", "from facefuse.assets import demo_image_path; print(demo_image_path())"],
        capture_output=True, text=True, check=True).stdout.strip()
    rows = [("python -c pass", [py, "-c", "pass"]),
            ("import facefuse", [py, "-c", "import facefuse"]),
            ("facefuse --help", [*cli, "--help"]),
            ("facefuse analyze PHOTO", [*cli, "analyze", "--quiet", photo]),
            ("facefuse verify PHOTO PHOTO", [*cli, "verify", photo, photo])]
    print(f"{platform.node()}: {os.cpu_count()} CPUs, {platform.python_implementation()} "
          f"{platform.python_version()}; environment {prefix} "
          f"({tree_size(prefix) / 2**20:.0f} MB on disk, torch "
          f"{'importable' if has_torch else 'not installed'}); {args.runs} runs each")
    base = None
    print(f"{'command':<44} {'min s':>7} {'median s':>9} {'median - bare s':>16}")
    for name, cmd in rows:
        low, mid = timed(cmd, args.runs)
        base = mid if base is None else base
        print(f"{name:<44} {low:7.3f} {mid:9.3f} {mid - base:16.3f}")


if __name__ == "__main__":
    main()
