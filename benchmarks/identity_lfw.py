"""LFW View-2 verification of the identity networks and their fusion, as `facefuse verify`
runs: each photo's largest face through the analyzer (detector, five points, alignment per
network), with a pair where either photo gives no face counted as an error.

Each network's descriptor is the mean of the face's and its mirror image's (flip) or the
face's alone (no flip); both are reported from one pass. Two modes (--modes): ``detector``,
the analyzer's default detector on the photos as they are (90x90 tight crops here; a crop
where it finds nothing is searched again enlarged, then taken whole); ``crop``, the whole
photo taken as the face (``full_frame``, five points from the multi-task model's
landmarks). For each: every network alone and the fusion, 10-fold accuracy (threshold
chosen on the other nine folds), and the accuracy, false-accept and false-reject rates at
the shipped threshold (fitted on training identities only, by tools/fit_identity_fusion.py).
With --with-model, also the multi-task model's own embedding, alone and in a logistic fusion
with the networks fitted on the other nine folds (whether it adds anything).

    python benchmarks/identity_lfw.py --out reports/identity_lfw
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facefuse.data.readers.lfw import read_pairs
from facefuse.evaluation.identity_faces import FaceDescriptors, describe_largest_faces
from facefuse.evaluation.verification import verification_accuracy
from facefuse.inference.identity import FusedIdentity
from facefuse.train.identity_fusion import centred, unit_rows

ROOT = Path(__file__).resolve().parents[1]
MODES = {"detector": {}, "crop": {"detector": "full_frame"}}


def scores_at(fixed: float, scores: np.ndarray, same: np.ndarray) -> dict[str, float]:
    """Accuracy, false-accept and false-reject rates of threshold ``fixed`` (NaN scores,
    pairs without a face, are errors either way)."""
    ok = np.where(np.isnan(scores), False, (scores > fixed) == same)
    accept = ~np.isnan(scores) & (scores > fixed)
    return {"accuracy": float(ok.mean()),
            "false_accept": float((accept & ~same).sum() / max((~same).sum(), 1)),
            "false_reject": float((~accept & same).sum() / max(same.sum(), 1)),
            **twenty_pair_draws(ok)}


def twenty_pair_draws(ok: np.ndarray, draws: int = 10_000, seed: int = 0) -> dict[str, float]:
    """How ``facefuse verify`` fares on 20 pairs drawn at random (distinct pairs, numpy seed
    ``seed``), from each pair's outcome ``ok``: the mean number right, and the share of
    ``draws`` draws with at least 19 and with all 20 right."""
    rng = np.random.default_rng(seed)
    right = np.array([ok[rng.choice(len(ok), 20, replace=False)].sum() for _ in range(draws)])
    return {"draws_of_20_mean_right": float(right.mean()),
            "draws_of_20_at_least_19": float((right >= 19).mean()),
            "draws_of_20_all_right": float((right == 20).mean())}


def folds_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict:
    """10-fold accuracy with pairs lacking a face scored as errors: they get a score that
    is wrong whatever the threshold (below every score for same, above for different)."""
    s = scores.copy()
    missing = np.isnan(s)
    lo, hi = np.nanmin(s) - 1.0, np.nanmax(s) + 1.0
    s[missing & same] = lo
    s[missing & ~same] = hi
    r = verification_accuracy(s, same, folds)
    return {"accuracy": r.accuracy, "std": r.std}


def lr_cv(features: np.ndarray, same: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Out-of-fold scores of a logistic regression on per-network cosines."""
    from sklearn.linear_model import LogisticRegression

    out = np.full(len(same), np.nan)
    ok = ~np.isnan(features).any(1)
    for f in np.unique(folds):
        train, test = ok & (folds != f), ok & (folds == f)
        model = LogisticRegression(C=100.0, max_iter=1000).fit(features[train], same[train])
        out[test] = model.decision_function(features[test])
    return out


def evaluate(described: FaceDescriptors, fusion: FusedIdentity, pairs, with_model: bool
             ) -> dict:
    index = {p: i for i, p in enumerate(described.paths)}
    ia = np.array([index[p.image_a] for p in pairs])
    ib = np.array([index[p.image_b] for p in pairs])
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    missing = ~(described.found[ia] & described.found[ib])
    rows: dict[str, dict] = {}
    per_net: dict[str, np.ndarray] = {}
    for flip in (True, False):
        tag = "flip" if flip else "no flip"
        descriptors = [np.nan_to_num(d) for d in described.descriptors(flip)]
        for part, d in zip(fusion.parts, descriptors, strict=True):
            e = centred(d, part.centre)
            cos = (e[ia] * e[ib]).sum(1)
            cos[missing] = np.nan
            rows[f"{part.network} ({tag})"] = folds_accuracy(cos, same, folds)
            if flip == fusion.flip:
                per_net[part.network] = cos
        fused = fusion.fuse(descriptors)
        scores = (fused[ia] * fused[ib]).sum(1)
        scores[missing] = np.nan
        rows[f"fused, shipped weights ({tag})"] = {
            **folds_accuracy(scores, same, folds),
            "at_shipped_threshold": scores_at(fusion.threshold, scores, same)}
    if with_model and described.model_embedding.shape[1]:
        m = unit_rows(np.nan_to_num(described.model_embedding))
        mcos = (m[ia] * m[ib]).sum(1)
        mcos[missing] = np.nan
        rows["multi-task model embedding"] = folds_accuracy(mcos, same, folds)
        feats = np.stack([*per_net.values()], 1)
        rows["networks, logistic (9-fold fit)"] = folds_accuracy(lr_cv(feats, same, folds),
                                                                 same, folds)
        rows["networks + model, logistic (9-fold fit)"] = folds_accuracy(
            lr_cv(np.concatenate([feats, mcos[:, None]], 1), same, folds), same, folds)
    whole = described.found_by == "whole_image"
    return {"pairs": len(pairs), "pairs_without_face": int(missing.sum()),
            "photos": len(described.paths),
            "photos_without_face": int((~described.found).sum()),
            "photos_taken_whole": int(whole.sum()), "results": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--identity", default=None, help="fused identity JSON (default: shipped)")
    p.add_argument("--modes", nargs="+", choices=sorted(MODES), default=["detector", "crop"])
    p.add_argument("--with-model", action="store_true",
                   help="also the multi-task model's embedding (a second analyzer pass)")
    p.add_argument("--cache", default=None, help="folder for descriptor .npz files (reused)")
    p.add_argument("--limit-folds", type=int, default=None, help="only the first K folds")
    p.add_argument("--out", default=str(ROOT / "reports" / "identity_lfw"))
    args = p.parse_args(argv)
    if args.identity is None:
        from facefuse.weights import shipped_identity_path

        args.identity = shipped_identity_path()
    fusion = FusedIdentity.read(args.identity)
    lfw = Path(args.data) / "lfw"
    pairs = read_pairs(lfw / "pairs.txt", lfw / "lfw")
    if args.limit_folds:
        pairs = [q for q in pairs if q.fold < args.limit_folds]
    photos = sorted({x for q in pairs for x in (q.image_a, q.image_b)})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache) if args.cache else None
    report: dict = {"identity": str(args.identity), "threshold": fusion.threshold,
                    "flip": fusion.flip, "modes": {}}
    for mode in args.modes:
        cached = cache / f"lfw_{mode}.npz" if cache else None
        start = time.perf_counter()
        if cached is not None and cached.is_file():
            described = FaceDescriptors.load(cached)
        else:
            with tqdm(total=len(photos) * (2 if args.with_model else 1), unit="img",
                      desc=mode) as bar:
                described = describe_largest_faces(photos, fusion.networks,
                                                   progress=bar.update,
                                                   with_model=args.with_model, **MODES[mode])
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                described.save(cached)
        result = evaluate(described, fusion, pairs, args.with_model)
        result["seconds"] = round(time.perf_counter() - start, 1)
        report["modes"][mode] = result
        print(f"\n## {mode}: {result['pairs_without_face']} of {result['pairs']} pairs "
              f"without a face ({result['photos_without_face']} of {result['photos']} "
              f"photos; {result['photos_taken_whole']} taken whole)")
        for name, r in result["results"].items():
            extra = ""
            if "at_shipped_threshold" in r:
                t = r["at_shipped_threshold"]
                extra = (f"; at the shipped threshold {fusion.threshold:.4f}: "
                         f"{100 * t['accuracy']:.2f} %, false accepts "
                         f"{100 * t['false_accept']:.2f} %, false rejects "
                         f"{100 * t['false_reject']:.2f} %; of 10,000 draws of 20 pairs, "
                         f"{100 * t['draws_of_20_at_least_19']:.1f} % had at least 19 right "
                         f"(mean {t['draws_of_20_mean_right']:.2f})")
            print(f"{name:45s} {100 * r['accuracy']:.2f} ± {100 * r['std']:.2f} %{extra}")
    (out / "results.json").write_text(json.dumps(report, indent=1))
    print(f"\nwrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
