"""LFW View 2 with a learned metric (LDA fitted per test fold on the other folds' people,
the unrestricted protocol) beside plain cosine similarity of the same model's vectors;
prints a Markdown table.

Every LFW image is run whole through the checkpoint (as ``compare_peers.py`` does, test-time
flip on); the rows are the identity embedding and the trunk's feature vector, each by cosine
and through ``facefuse.evaluation.learned_metric.foldwise_lda_verification``.

Usage: python benchmarks/lfw_learned_metric.py [--data ../shared/data] [--checkpoint CKPT]
           [--pca 256 128] [--out 64 128] [--shrinkage 0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from facefuse.data.images import load_rgb
from facefuse.data.readers.lfw import person_folds, read_pairs
from facefuse.evaluation.learned_metric import foldwise_lda_verification
from facefuse.evaluation.verification import pair_scores, verification_accuracy
from facefuse.inference.face_model import FaceModel
from facefuse.weights import shipped_model_path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--checkpoint", help="checkpoint path without suffix (default: shipped)")
    p.add_argument("--pca", type=int, nargs="+", default=[256])
    p.add_argument("--out", type=int, nargs="+", default=[64])
    p.add_argument("--shrinkage", type=float, default=0.0)
    args = p.parse_args()
    root = Path(args.data) / "lfw"
    paths = sorted((root / "lfw").glob("*/*.jpg"))
    if not paths:
        raise SystemExit(f"no LFW images under {root / 'lfw'}")
    model = FaceModel.from_checkpoint(args.checkpoint or shipped_model_path(), flip=True)
    t0 = time.perf_counter()
    feats, embs = [], []
    with torch.inference_mode():
        for i in range(0, len(paths), 256):
            f, _ = model.raw([load_rgb(q) for q in paths[i:i + 256]])
            feats.append(np.asarray(f, np.float32))
            embs.append(model.embedding_from(f))
    print(f"{len(paths)} images in {time.perf_counter() - t0:.0f} s")
    row = {str(q): i for i, q in enumerate(paths)}
    people = [q.parent.name for q in paths]
    pairs = [pr for pr in read_pairs(root / "pairs.txt", root / "lfw")
             if pr.image_a in row and pr.image_b in row]
    person_fold = person_folds(pairs)
    a = np.array([row[pr.image_a] for pr in pairs])
    b = np.array([row[pr.image_b] for pr in pairs])
    print(f"{len(pairs)} pairs, {len(set(people))} people\n")
    print("| vectors | metric | accuracy (10 folds) | people fitting each fold |\n"
          "|---|---|---|---|")
    for name, vectors in (("identity embedding", np.concatenate(embs)),
                          ("trunk features", np.concatenate(feats))):
        scores, same, fold = pair_scores(pairs, dict(zip(row, vectors, strict=True)))
        r = verification_accuracy(scores, same, fold)
        print(f"| {name} ({vectors.shape[1]}-d) | cosine | {100 * r.accuracy:.1f} ± "
              f"{100 * r.std:.1f} % | - |")
        for pca in args.pca:
            for out in args.out:
                if out > pca or pca > vectors.shape[1]:
                    why = (f"{out} dims > PCA {pca}" if out > pca
                           else f"PCA {pca} > the vectors' {vectors.shape[1]} dims")
                    print(f"| {name} | LDA (PCA {pca}, {out} dims) | skipped: {why} | - |")
                    continue
                r, fitted = foldwise_lda_verification(vectors, people, person_fold, a, b,
                                                      same, fold, pca, out, args.shrinkage)
                print(f"| {name} | LDA (PCA {pca}, {out} dims) | {100 * r.accuracy:.1f} ± "
                      f"{100 * r.std:.1f} % | {min(fitted)}-{max(fitted)} |", flush=True)


if __name__ == "__main__":
    main()
