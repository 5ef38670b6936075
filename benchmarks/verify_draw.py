"""One draw of 20 distinct LFW View-2 pairs, each checked with the ``facefuse verify``
command as a user runs it, on the photos as they are (one process a pair, the default
analyzer and threshold). Prints each pair, the truth, the answer and the similarity; a pair
where a photo has no face or the command fails counts as wrong.

Usage: python benchmarks/verify_draw.py --seed 36 [--data ../shared/data] [--pairs 20]
(`benchmarks/identity_lfw.py` gives the share of all such draws with 19 or more right.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def view2_pairs(lfw: Path) -> list[tuple[str, int, str, int, bool]]:
    """View 2's pairs (``pairs.txt``): (name, number, name, number, same person)."""
    out = []
    for line in (lfw / "pairs.txt").read_text().splitlines()[1:]:
        f = line.split()
        if len(f) == 3:
            out.append((f[0], int(f[1]), f[0], int(f[2]), True))
        elif len(f) == 4:
            out.append((f[0], int(f[1]), f[2], int(f[3]), False))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, required=True, help="numpy seed of the draw")
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--pairs", type=int, default=20)
    args = p.parse_args()
    lfw = Path(args.data) / "lfw"
    pairs = view2_pairs(lfw)
    pick = np.random.default_rng(args.seed).choice(len(pairs), args.pairs, replace=False)

    def photo(name: str, number: int) -> Path:
        return lfw / "lfw" / name / f"{name}_{number:04d}.jpg"

    right = 0
    for k in pick:
        a, i, b, j, same = pairs[k]
        done = subprocess.run([sys.executable, "-m", "facefuse", "verify", str(photo(a, i)),
                               str(photo(b, j))], capture_output=True, text=True)
        try:
            answer = json.loads(done.stdout.strip().splitlines()[-1])
            said, similarity = answer["same_person"], answer["similarity"]
        except (IndexError, KeyError, ValueError):
            said, similarity = None, done.stderr.strip().splitlines()[-1:]
        ok = said is same
        right += ok
        print(f"{'right' if ok else 'WRONG'}  {a} {i} / {b} {j}: "
              f"{'same' if same else 'different'} people; said {said}, similarity "
              f"{similarity}", flush=True)
    print(f"{right} of {args.pairs} right (seed {args.seed}; {len(pairs)} pairs in View 2)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
