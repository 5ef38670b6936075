"""Choose the mixing share of two checkpoints before averaging them: the weighted mean
``(1 - alpha) * A + alpha * B`` (``facefuse.models.averaging``) scored on the training
cache's validation split for each alpha; prints the Markdown table of the model card.

Validation rows only, so the test split stays unseen by the choice; one pass without flip
and without any calibration (the mean carries none; fit one after choosing, with
facefuse model calibrate). Alpha 0 is A itself, alpha 1 is B.

Usage: python benchmarks/soup_scan.py A B --config configs/mtl.yaml \
           --profile shipped_finetune [--alphas 0 0.3 0.5 0.7 1]
       (A and B checkpoint paths without suffix; the profile says which cache they train on)
"""

from __future__ import annotations

import argparse

from facefuse.config import load_config
from facefuse.lifecycle.average import scan_mixing_shares
from facefuse.train.mtl import MTLConfig, training_cache


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", help="checkpoint A (alpha 0)")
    p.add_argument("b", help="checkpoint B (alpha 1)")
    p.add_argument("--config", required=True, help="the config A and B were trained with")
    p.add_argument("--profile", help="its profile")
    p.add_argument("--alphas", nargs="+", type=float, default=[0, 0.3, 0.5, 0.7, 1])
    args = p.parse_args()
    try:
        cfg = load_config(MTLConfig, args.config, profile=args.profile)
        cache, _ = training_cache(cfg, progress=True)
        tasks = [t for t in cfg.tasks if t != "identity"]
        rows = scan_mixing_shares(args.a, args.b, cache, tasks, args.alphas)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"soup_scan: {exc}") from None
    cells = [(t, m) for t, metrics in rows[0].items() if t != "alpha" for m in metrics]
    print("| alpha | " + " | ".join(f"{t} {m}" for t, m in cells) + " |")
    print("|---|" + "---|" * len(cells))
    for r in rows:
        print(f"| {r['alpha']:g} | " + " | ".join(
            f"{r[t][m]:.3f}" if m == "mae" else f"{100 * r[t][m]:.2f}" for t, m in cells)
            + " |")


if __name__ == "__main__":
    main()
