"""Fit the shipped fused identity (weights, centring, threshold) on training identities.

Training identities: every CelebA identity in ../shared/data (241 people, in-the-wild loose
crops) and the LFW people that LFW View-2's pairs.txt never names (52 people, tight 90x90
crops). View-2 is what the fusion is scored on (benchmarks/identity_lfw.py); none of its
people is used here. Each photo's largest face is found and described by every network as
`facefuse verify` does it (facefuse.evaluation.identity_faces), then:

1. the weights are fitted on CelebA pairs (facefuse.train.identity_fusion.fit_fusion), once
   with every network's descriptors centred and once with none centred, and the variant with
   the better accuracy on the LFW people outside View-2 (photos of the kind View-2 holds,
   unseen by the fit) is kept;
2. the threshold is the one with the best mean accuracy over the CelebA pairs and the LFW
   pairs (so neither kind of photo alone decides it).

    python tools/fit_identity_fusion.py                     # writes the shipped JSON
    python tools/fit_identity_fusion.py --out /tmp/fusion.json --cache /tmp/desc.npz

The networks are read from --networks-dir (default: the shipped ones; written by
`facefuse model import`), and the fusion JSON needs them beside it.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facefuse.evaluation.identity_faces import FaceDescriptors, describe_largest_faces
from facefuse.inference.identity import IdentityNetwork
from facefuse.train.identity_fusion import (
    balanced_threshold,
    fit_fusion,
    pair_accuracy,
    write_fusion,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "src" / "facefuse" / "weights" / "identity"


def view2_people(pairs_file: Path) -> set[str]:
    """Every name pairs.txt mentions (read from the text, so a pair whose photo is missing
    still excludes its people)."""
    names: set[str] = set()
    for line in pairs_file.read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) == 3:
            names.add(fields[0])
        elif len(fields) == 4:
            names.update((fields[0], fields[2]))
    if not names:
        raise ValueError(f"{pairs_file}: no pairs read")
    return names


def training_photos(data: Path) -> tuple[list[Path], list[str]]:
    """CelebA photos by identity, then LFW photos of people outside View-2's pairs."""
    paths: list[Path] = []
    labels: list[str] = []
    for line in (data / "celeba" / "identity_CelebA.txt").read_text().splitlines():
        fields = line.split()
        if len(fields) == 2 and (data / "celeba" / "img_celeba" / fields[0]).is_file():
            paths.append(data / "celeba" / "img_celeba" / fields[0])
            labels.append(f"celeba:{fields[1]}")
    images = data / "lfw" / "lfw"
    in_view2 = view2_people(data / "lfw" / "pairs.txt")
    for person in sorted(p for p in images.iterdir() if p.is_dir()):
        if person.name not in in_view2:
            for photo in sorted(person.glob("*.jpg")):
                paths.append(photo)
                labels.append(f"lfw:{person.name}")
    return paths, labels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--networks-dir", default=str(SHIPPED))
    p.add_argument("--out", default=str(SHIPPED / "facefuse-identity.json"),
                   help="fusion JSON to write (the networks are copied beside it if needed)")
    p.add_argument("--networks", nargs="+", default=["dlib_resnet", "sface"])
    p.add_argument("--no-flip", action="store_true", help="no mirror-image averaging")
    p.add_argument("--cache", default=None, help="descriptors .npz: reused when present")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out, folder = Path(args.out), Path(args.networks_dir)
    flip = not args.no_flip
    paths, labels = training_photos(Path(args.data))
    cache = Path(args.cache) if args.cache else None
    start = time.perf_counter()
    if cache is not None and cache.is_file():
        described = FaceDescriptors.load(cache)
        if list(described.paths) != [str(x) for x in paths] \
                or list(described.networks) != args.networks:
            print(f"{cache} describes other photos or networks; remove it", file=sys.stderr)
            return 2
    else:
        networks = [IdentityNetwork(folder / f"{n}.json") for n in args.networks]
        with tqdm(total=len(paths), unit="img", desc="describing") as bar:
            described = describe_largest_faces(paths, networks, progress=bar.update)
        if cache is not None:
            described.save(cache)
    found = described.found
    print(f"{found.sum()} of {len(found)} photos with a face, "
          f"{int((described.found_by == 'whole_image').sum())} of them taken whole "
          f"({time.perf_counter() - start:.0f} s)")
    labels_arr = np.asarray(labels, dtype=object)
    parts = described.descriptors(flip)
    is_lfw = np.array([lab.startswith("lfw:") for lab in labels])
    train, val = found & ~is_lfw, found & is_lfw
    train_set = ([d[train] for d in parts], labels_arr[train])
    val_set = ([d[val] for d in parts], labels_arr[val])
    names = described.networks
    fits = {}
    for centre in (True, False):
        fit = fit_fusion(names, *train_set, centre=[centre] * len(names))
        fits[centre] = fit
        print(f"centred={centre}: kept {fit.networks}, weights "
              f"{[round(w, 4) for w in fit.weights]}, CelebA training pairs "
              f"{100 * fit.train_accuracy:.2f} %, LFW outside View-2 "
              f"{100 * pair_accuracy(fit, names, *val_set):.2f} % (at the CelebA threshold "
              f"{fit.threshold:.4f})")
    centre = max(fits, key=lambda c: pair_accuracy(fits[c], names, *val_set))
    fit = fits[centre]
    threshold = balanced_threshold(fit, [train_set, val_set], names)
    fit = replace(fit, threshold=threshold,
                  train_accuracy=pair_accuracy(fit, names, *train_set, threshold=threshold))
    val_accuracy = pair_accuracy(fit, names, *val_set)
    print(f"kept centred={centre}; balanced threshold {threshold:.4f}: CelebA pairs "
          f"{100 * fit.train_accuracy:.2f} %, LFW outside View-2 {100 * val_accuracy:.2f} %")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.parent.resolve() != folder.resolve():
        for n in fit.networks:
            for f in folder.glob(f"{n}.*"):
                shutil.copyfile(f, out.parent / f.name)
    write_fusion(out, fit, flip, centred=centre, training_data={
        "celeba_photos": int((~is_lfw).sum()), "lfw_outside_view2_photos": int(is_lfw.sum()),
        "photos_with_face": int(found.sum()), "identities": len(set(labels)),
        "note": "weights fitted on CelebA identities; centring chosen and threshold balanced "
                "with the LFW people outside View-2's pairs.txt; no View-2 person"},
        validation={"lfw_outside_view2_pair_accuracy": round(val_accuracy, 5)},
        fitted_by="tools/fit_identity_fusion.py")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
