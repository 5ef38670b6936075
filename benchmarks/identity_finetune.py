"""Partial fine-tuning of an identity network for the other tasks, on the 2-core CPU: does
training dlib's last stage pay over heads on its frozen features, and over the default
analyzer?

dlib's ResNet is cut before ``--from-block`` (default 10: the start of its fourth stage,
whose input is the third stage's 128x8x8 map). Everything before the cut is frozen and run
once: its output is cached (float16, each training chip and its mirror image), so that an
epoch only runs the tail (blocks 10 to 13, 4.7 M of the network's 5.6 M parameters) and the
heads. Two arms, trained the same way (AdamW, cosine schedule, --epochs, a batch mixing the
three datasets, masked losses: L1 for age, cross-entropy for gender, race and emotion, binary
cross-entropy for the 40 attributes), over --seeds:

* ``probe``: the tail frozen at dlib's weights, linear heads on its pooled 256-d vector;
* ``finetune``: the tail trained with the heads (its learning rate 3 % of theirs).

Each task keeps the epoch that scores best on the validation rows. Then each arm's
predictions are fused late with the default ``FaceAnalyzer()``'s (the shipped model's heads
fused with the shipped identity heads, as a user gets them; ``runtime.linear_heads.
fuse_scores``), the weight chosen per task on the validation rows.

Rows and splits: ``identity_heads.py``'s (``select_rows``: split seed 0, FER2013's training
rows subsampled to --fer-train-max). A training row: the analyzer's detector
(``FaceAnalyzer.detect``, small face crops taken whole with the detector's points), its
largest face, dlib's chip on the detector's five points (a face without points: the ArcFace
layout of its box); a row without a face is left out. A validation or test row: the default
``FaceAnalyzer()`` on the photo; its largest face's predictions, and dlib's chip on the five
points that the analyzer aligned that face with (captured from its identity pass); a row
without a face is left out of every arm (the count is reported).

Writes --out/{report.md, results.json}; the cache (--cache) makes reruns train only.
Usage: python benchmarks/identity_finetune.py [--epochs 6] [--seeds 0 1 2] [--limit N]
       python benchmarks/identity_finetune.py --extract-only --shard 0/2 &   # two processes
       python benchmarks/identity_finetune.py --extract-only --shard 1/2
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE_VERSION = "identity-finetune-1"
CHUNK = 500
TASKS = ("age", "gender", "race", "emotion", "attributes")
AGE_CENTRE, AGE_SCALE = 35.0, 15.0


def _identity_heads_module():
    spec = importlib.util.spec_from_file_location("identity_heads", HERE / "identity_heads.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["identity_heads"] = mod
    spec.loader.exec_module(mod)
    return mod


def label_names() -> dict[str, list[str]]:
    from facefuse.tasks import EMOTIONS, GENDERS, RACES, get_task

    return {"gender": list(GENDERS), "race": list(RACES), "emotion": list(EMOTIONS),
            "attributes": list(get_task("attributes").label_names)}


# -- extraction ---------------------------------------------------------------------------------
class Extractor:
    """The default analyzer, and dlib's network up to the cut in PyTorch (one thread)."""

    def __init__(self, from_block: int, threads: int = 1) -> None:
        import torch

        from facefuse.inference.analyzer import FaceAnalyzer
        from facefuse.models.identity_import import import_network

        torch.set_num_threads(threads)
        self.analyzer = FaceAnalyzer()
        nets = {n.name: n for n in self.analyzer.describer.networks}
        self.dlib = nets["dlib_resnet"]
        self.mean = np.asarray(self.dlib.spec.mean, np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(self.dlib.spec.std, np.float32).reshape(1, 3, 1, 1)
        self.module = import_network("dlib").module.eval()
        self.from_block = from_block
        self.names = label_names()
        self._captured: list[np.ndarray] = []
        describe = self.analyzer.describer.describe

        def capturing(images, points):  # the five points the analyzer aligns each face with
            self._captured = [np.asarray(p, np.float64) for p in points]
            return describe(images, points)

        self.analyzer.describer.describe = capturing

    def head_maps(self, chips: list[np.ndarray]) -> np.ndarray:
        """dlib's frozen part on ``chips`` (uint8 150x150x3): (N, C, H, W) float16."""
        import torch

        x = (np.stack(chips).astype(np.float32).transpose(0, 3, 1, 2) / 255.0 - self.mean) \
            / self.std
        with torch.no_grad():
            h = self.module.map_before(torch.from_numpy(x), self.from_block)
        return h.numpy().astype(np.float16)

    @staticmethod
    def _points(det) -> np.ndarray:
        from facefuse.identity_format import ARCFACE_TEMPLATE_112

        if det.landmarks is not None:
            return np.asarray(det.landmarks, np.float64)
        x0, y0, x1, y1 = det.box
        return ARCFACE_TEMPLATE_112 / 112.0 * [x1 - x0, y1 - y0] + [x0, y0]

    def train_rows(self, paths: np.ndarray) -> dict[str, np.ndarray]:
        from facefuse.data.images import load_rgb

        chips, ok = [], np.zeros(len(paths), bool)
        for i, p in enumerate(paths):
            rgb = load_rgb(p)
            dets = self.analyzer.detect(rgb)
            if not dets:
                continue
            det = max(dets, key=lambda d: d.width * d.height)
            chips.append(self.dlib.align(rgb, self._points(det)))
            ok[i] = True
        maps = self._maps(chips)
        mirrored = self._maps([c[:, ::-1] for c in chips])
        return {"ok": ok, "maps": maps, "maps_mirrored": mirrored}

    def eval_rows(self, paths: np.ndarray) -> dict[str, np.ndarray]:
        from facefuse.data.images import load_rgb

        n = len(paths)
        chips, ok = [], np.zeros(n, bool)
        age = np.full(n, np.nan, np.float32)
        probs = {t: np.full((n, len(v)), np.nan, np.float32) for t, v in self.names.items()}
        found_by = np.full(n, "", dtype=object)
        for i, p in enumerate(paths):
            rgb = load_rgb(p)
            self._captured = []
            result = self.analyzer.analyze(rgb)
            face = result.largest_face()
            if face is None:
                continue
            ok[i] = True
            found_by[i] = face.found_by
            chips.append(self.dlib.align(rgb, self._captured[face.index]))
            pr = face.predictions
            age[i] = pr["age"]
            for t in ("gender", "race", "emotion"):
                probs[t][i] = [pr[t]["probabilities"][k] for k in self.names[t]]
            probs["attributes"][i] = [pr["attributes_scores"][k]
                                      for k in self.names["attributes"]]
        return {"ok": ok, "maps": self._maps(chips), "default_age": age,
                **{f"default_{t}": v for t, v in probs.items()},
                "found_by": found_by.astype(str)}

    def _maps(self, chips: list[np.ndarray], batch: int = 32) -> np.ndarray:
        if not chips:
            return np.zeros((0, 0, 0, 0), np.float16)
        return np.concatenate([self.head_maps([np.ascontiguousarray(c)
                                               for c in chips[s:s + batch]])
                               for s in range(0, len(chips), batch)])


def derive(rows, cache: Path, from_block: int, base_block: int) -> None:
    """The cache at cut ``from_block`` from the cache at an earlier cut ``base_block``: dlib's
    frozen blocks between the two run on the cached maps (minutes, where extracting from the
    photos again takes most of an hour). Every other array is copied as it is."""
    import torch
    from tqdm import tqdm

    from facefuse.models.identity_import import import_network

    if base_block >= from_block:
        raise SystemExit(f"--derive-from {base_block} must be below --from-block {from_block}")
    m = import_network("dlib").module.eval()
    sizes = m.block_sizes((150, 150))
    todo = [(src[3], dst[3]) for src, dst in zip(plan(rows, cache, base_block),
                                                  plan(rows, cache, from_block), strict=True)
            if not dst[3].exists()]

    def run(maps: np.ndarray, batch: int = 256) -> np.ndarray:
        out = []
        with torch.no_grad():
            for s in range(0, len(maps), batch):
                h = torch.from_numpy(maps[s:s + batch].astype(np.float32))
                for i in range(base_block, from_block):
                    h = m.blocks[i](h, sizes[i])
                out.append(h.numpy().astype(np.float16))
        return np.concatenate(out) if out else maps

    for src, dst in tqdm(todo, unit="chunk", file=sys.stderr, mininterval=30):
        if not src.exists():
            raise SystemExit(f"{src} is missing: extract the cut at {base_block} first")
        with np.load(src, allow_pickle=False) as z:
            res = {k: (run(z[k]) if k.startswith("maps") else z[k]) for k in z.files}
        tmp = dst.with_name(dst.stem + f".tmp{os.getpid()}.npz")
        np.savez(tmp, **res)
        os.replace(tmp, dst)


def plan(rows, cache: Path, from_block: int) -> list[tuple[str, str, np.ndarray, Path]]:
    out = []
    for split in ("val", "test", "train"):
        for name, r in rows.items():
            idx = np.flatnonzero(r.split == split)
            for c, s in enumerate(range(0, len(idx), CHUNK)):
                part = idx[s:s + CHUNK]
                key = f"{CACHE_VERSION}/{from_block}\n" + "\n".join(r.sample_id[part].tolist())
                digest = hashlib.sha256(key.encode()).hexdigest()[:12]
                out.append((name, split, part, cache / f"{name}-{split}-{c:03d}-{digest}.npz"))
    return out


def extract(rows, cache: Path, from_block: int, shard: tuple[int, int]) -> None:
    from tqdm import tqdm

    cache.mkdir(parents=True, exist_ok=True)
    todo = [p for i, p in enumerate(plan(rows, cache, from_block))
            if i % shard[1] == shard[0] and not p[3].exists()]
    if not todo:
        return
    ex = Extractor(from_block)
    bar = tqdm(total=sum(len(p[2]) for p in todo), unit="img", mininterval=30, file=sys.stderr)
    for name, split, part, path in todo:
        bar.set_postfix_str(f"{name}/{split}")
        paths = rows[name].image[part]
        res = ex.train_rows(paths) if split == "train" else ex.eval_rows(paths)
        res["sample_id"] = rows[name].sample_id[part].astype(str)
        tmp = path.with_name(path.stem + f".tmp{os.getpid()}.npz")
        np.savez(tmp, **res)
        os.replace(tmp, path)
        bar.update(len(part))
    bar.close()


# -- data ----------------------------------------------------------------------------------------
def labels_of(r, part: np.ndarray, names: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Each task's labels of rows ``part`` (missing: age nan, classes -1, attributes -1)."""
    n = len(part)
    out = {"age": np.full(n, np.nan, np.float32), "gender": np.full(n, -1, np.int64),
           "race": np.full(n, -1, np.int64), "emotion": np.full(n, -1, np.int64),
           "attributes": np.full((n, len(names["attributes"])), -1, np.int64)}
    for t, v in r.labels.items():
        v = np.asarray(v)[part]
        out[t] = v.astype(np.float32) if t == "age" else v.astype(np.int64)
        if t == "age":
            out[t][v < 0] = np.nan
    return out


def load_split(rows, cache: Path, from_block: int, split: str, names) -> dict[str, np.ndarray]:
    """Every cached row of ``split`` that has a face: maps, labels, dataset and (val, test)
    the default analyzer's predictions."""
    parts: dict[str, list] = {}
    missing = 0
    for name, s, part, path in plan(rows, cache, from_block):
        if s != split:
            continue
        if not path.exists():
            raise SystemExit(f"{path} is missing: run the extraction first")
        with np.load(path, allow_pickle=False) as z:
            ok = z["ok"]
            missing += int((~ok).sum())
            labels = labels_of(rows[name], part[ok], names)
            for k, v in labels.items():
                parts.setdefault(k, []).append(v)
            parts.setdefault("dataset", []).append(np.full(int(ok.sum()), name))
            for k in z.files:
                if k in ("ok", "sample_id"):
                    continue
                v = z[k]
                parts.setdefault(k, []).append(v if k.startswith("maps") else v[ok])
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out["missing"] = np.array(missing)
    return out


# -- model ---------------------------------------------------------------------------------------
def build(module, from_block: int, in_size: tuple[int, int], pool_mean, pool_std, n_out: int,
          trainable: bool):
    from facefuse.train.identity_tail import IdentityTail

    return IdentityTail(module, from_block, in_size, pool_mean, pool_std, n_out, trainable)


def layout(names) -> dict[str, slice]:
    widths = {"age": 1, "gender": len(names["gender"]), "race": len(names["race"]),
              "emotion": len(names["emotion"]), "attributes": len(names["attributes"])}
    out, s = {}, 0
    for t in TASKS:
        out[t] = slice(s, s + widths[t])
        s += widths[t]
    return out


def losses(out, y: dict, cols: dict[str, slice]):
    import torch
    import torch.nn.functional as F

    total = out.new_zeros(())
    age = y["age"]
    have = ~torch.isnan(age)
    if have.any():
        pred = AGE_CENTRE + AGE_SCALE * out[have, cols["age"]].squeeze(1)
        total = total + F.l1_loss(pred, age[have]) / AGE_SCALE
    for t in ("gender", "race", "emotion"):
        have = y[t] >= 0
        if have.any():
            total = total + F.cross_entropy(out[have, cols[t]], y[t][have])
    have = y["attributes"] >= 0
    if have.any():
        logits = out[:, cols["attributes"]]
        total = total + F.binary_cross_entropy_with_logits(
            logits[have], y["attributes"][have].float())
    return total


def frozen_pooled(module, from_block: int, maps: np.ndarray, batch: int = 512) -> np.ndarray:
    """dlib's own tail (frozen) on cached maps: the pooled 256-d vectors, float32."""
    import torch

    tail = build(module, from_block, tuple(maps.shape[2:]), np.zeros(256), np.ones(256), 1,
                 False).eval()
    with torch.no_grad():
        return np.concatenate([tail.pooled(torch.from_numpy(maps[s:s + batch].astype(
            np.float32))).numpy() for s in range(0, len(maps), batch)])


def predict(fn, inputs: np.ndarray, cols, batch: int = 256) -> dict[str, np.ndarray]:
    """Decoded predictions of ``fn`` (the model on maps, or its head on pooled vectors)."""
    import torch

    outs = []
    with torch.no_grad():
        for s in range(0, len(inputs), batch):
            outs.append(fn(torch.from_numpy(inputs[s:s + batch].astype(np.float32))).numpy())
    o = np.concatenate(outs).astype(np.float64)
    from facefuse.runtime.decoding import sigmoid, softmax

    res = {"age": AGE_CENTRE + AGE_SCALE * o[:, cols["age"]][:, 0],
           "attributes": sigmoid(o[:, cols["attributes"]])}
    for t in ("gender", "race", "emotion"):
        res[t] = softmax(o[:, cols[t]])
    return res


def score(task: str, pred: np.ndarray, y: np.ndarray) -> float:
    """Age MAE (years); accuracy (%) for classes; mean accuracy (%) over the 40 attributes."""
    if task == "age":
        have = ~np.isnan(y)
        return float(np.abs(pred[have] - y[have]).mean())
    if task == "attributes":
        have = (y >= 0).all(1)
        return float(100 * ((pred[have] >= 0.5) == (y[have] == 1)).mean())
    have = y >= 0
    return float(100 * (pred[have].argmax(1) == y[have]).mean())


def better(task: str, a: float, b: float) -> bool:
    return a < b if task == "age" else a > b


def train_arm(module, args, data: dict[str, np.ndarray], train, val, test, cols, pool_stats,
              trainable: bool, seed: int, n_out: int) -> dict:
    """One arm, one seed: per task the validation-best epoch's val and test predictions.
    ``data``: the inputs (``train``, ``train_mirrored``, ``val``, ``test``): cached maps for
    the fine-tune, the frozen tail's pooled vectors for the probe (its head alone runs)."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    in_size = tuple(train["maps"].shape[2:])
    model = build(module, args.from_block, in_size, *pool_stats, n_out, trainable)
    head_params = list(model.head.parameters())
    groups = [{"params": head_params, "lr": args.lr}]
    if trainable:
        groups.append({"params": list(model.blocks.parameters()), "lr": args.lr * args.tail_lr})
    opt = torch.optim.AdamW(groups, weight_decay=args.weight_decay)
    fn = model if trainable else model.head_of
    n = len(data["train"])
    bs = min(args.batch, n)
    steps = args.epochs * (n // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in groups], total_steps=steps, pct_start=0.1)
    ys = {t: torch.from_numpy(train[t]) for t in TASKS}
    best: dict[str, dict] = {}
    history = []
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(n)
        t0 = time.perf_counter()
        run_loss = 0.0
        for s in range(0, n - bs + 1, bs):
            idx = np.sort(order[s:s + bs])
            flip = rng.random(len(idx)) < 0.5
            x = np.where(flip.reshape(-1, *[1] * (data["train"].ndim - 1)),
                         data["train_mirrored"][idx], data["train"][idx]).astype(np.float32)
            out = fn(torch.from_numpy(x))
            loss = losses(out, {t: v[idx] for t, v in ys.items()}, cols)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_([q for g in groups for q in g["params"]], 5.0)
            opt.step()
            sched.step()
            run_loss += float(loss.detach())
        model.eval()
        pv, pt = predict(fn, data["val"], cols), predict(fn, data["test"], cols)
        row = {"epoch": epoch + 1, "seconds": time.perf_counter() - t0,
               "loss": run_loss / (n // bs)}
        for t in TASKS:
            v = score(t, pv[t], val[t])
            row[t] = v
            if t not in best or better(t, v, best[t]["val"]):
                best[t] = {"val": v, "epoch": epoch + 1, "pred_val": pv[t], "pred_test": pt[t]}
                if trainable and t == "age":  # what --ship-age writes
                    best[t]["state"] = {k: w.detach().clone()
                                        for k, w in model.state_dict().items()}
        history.append(row)
        print(f"  {'finetune' if trainable else 'probe'} seed {seed} epoch {epoch + 1}: "
              + ", ".join(f"{t} {row[t]:.2f}" for t in TASKS)
              + f" ({row['seconds']:.0f} s)", file=sys.stderr, flush=True)
    return {"best": best, "history": history}


def fuse(task: str, ours: np.ndarray, default: np.ndarray, w: float) -> np.ndarray:
    from facefuse.runtime.linear_heads import fuse_scores

    output = {"age": "linear", "attributes": "sigmoid"}.get(task, "softmax")
    return fuse_scores(output, ours, default, w)


def ship_age(args, module, run: dict, entry: dict, maps_val: np.ndarray, pool_stats,
             n_out: int, age_column: int) -> Path:
    """Write the fine-tuned tail of ``run`` (the first seed's, at its age-best epoch) as the
    age tail of the identity heads in ``--ship-age``: its int8 graph, and a ``tails`` entry
    in the heads' JSON with the fusion weight chosen on validation."""
    from facefuse.files import write_json_atomic
    from facefuse.train.identity_tail import write_value_graph

    if args.from_block != len(module.blocks) - 1:
        raise SystemExit(f"--ship-age needs the cut before the last block "
                         f"(--from-block {len(module.blocks) - 1}): the shipped dlib graph "
                         f"gives the map entering it (tail_in)")
    out = Path(args.ship_age)
    heads_json = out / "facefuse-identity-heads.json"
    if not heads_json.is_file():
        raise SystemExit(f"{heads_json} is missing: --ship-age adds the tail to those heads")
    tail = build(module, args.from_block, tuple(maps_val.shape[2:]), *pool_stats, n_out, True)
    tail.load_state_dict(run["best"]["age"]["state"])
    graph = out / "facefuse-age-tail.onnx"
    check = maps_val[:256].astype(np.float32).reshape(min(256, len(maps_val)), -1)
    report = write_value_graph(tail, age_column, AGE_CENTRE, AGE_SCALE,
                               tuple(maps_val.shape[1:]), graph, "int8-block", check)
    doc = json.loads(heads_json.read_text())
    doc["tails"] = [{
        "task": "age", "graph": graph.name, "feature": "dlib_resnet:tail_in",
        "output": "linear", "range": [0.0, 100.0],
        "fusion_weight": entry["fused_weight"][0],
        "fitted": {"command": "python benchmarks/identity_finetune.py " + " ".join(sys.argv[1:]),
                   "seed": args.seeds[0], "epoch": run["best"]["age"]["epoch"],
                   "from_block": args.from_block,
                   "validation_mae_alone": round(entry["val"][0], 3),
                   "validation_mae_fused": round(entry["fused_val"][0], 3),
                   "test_mae_alone": round(entry["test"][0], 3),
                   "test_mae_fused": round(entry["fused_test"][0], 3)},
        **report}]
    write_json_atomic(heads_json, doc)
    print(f"wrote {graph} ({report['graph_bytes'] / 1e6:.2f} MB, parity "
          f"{report['parity_max_abs']:.2e} years) and its entry in {heads_json}",
          file=sys.stderr)
    return graph


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--cache", default="reports/identity_finetune/cache")
    p.add_argument("--out", default="reports/identity_finetune")
    p.add_argument("--from-block", type=int, default=10)
    p.add_argument("--derive-from", type=int, metavar="BLOCK",
                   help="make the cache at --from-block from the cache cut at BLOCK")
    p.add_argument("--fer-train-max", type=int, default=12000)
    p.add_argument("--limit", type=int, help="at most N training rows a dataset (a quick look)")
    p.add_argument("--extract-only", action="store_true")
    p.add_argument("--shard", default="0/1", help="K/N: extract every N-th chunk from the K-th")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--tail-lr", type=float, default=0.03, help="the tail's lr, a share of --lr")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ship-age", metavar="DIR",
                   help="write the first seed's fine-tuned tail as the age tail of the "
                        "identity heads in DIR (src/facefuse/weights/identity to ship it)")
    args = p.parse_args()
    k, n = (int(v) for v in args.shard.split("/"))

    import torch

    torch.set_num_threads(args.threads)
    ih = _identity_heads_module()
    rows = ih.select_rows(args.data, args.fer_train_max, args.limit)
    cache = Path(args.cache)
    t0 = time.perf_counter()
    if args.derive_from is not None:
        derive(rows, cache, args.from_block, args.derive_from)
    extract(rows, cache, args.from_block, (k, n))
    if args.extract_only:
        return
    extract_s = time.perf_counter() - t0
    names = label_names()
    cols = layout(names)
    n_out = sum(s.stop - s.start for s in cols.values())
    train, val, test = (load_split(rows, cache, args.from_block, s, names)
                        for s in ("train", "val", "test"))
    from facefuse.models.identity_import import import_network

    module = import_network("dlib").module.eval()
    frozen = {"train": frozen_pooled(module, args.from_block, train["maps"]),
              "train_mirrored": frozen_pooled(module, args.from_block, train["maps_mirrored"]),
              "val": frozen_pooled(module, args.from_block, val["maps"]),
              "test": frozen_pooled(module, args.from_block, test["maps"])}
    pool_stats = (frozen["train"].mean(0), frozen["train"].std(0) + 1e-6)
    maps = {"train": train["maps"], "train_mirrored": train["maps_mirrored"],
            "val": val["maps"], "test": test["maps"]}

    results: dict = {"arms": {}, "settings": vars(args) | {"extract_seconds": extract_s},
                     "rows": {s: {"faces": int(len(d["maps"])), "no_face": int(d["missing"])}
                              for s, d in (("train", train), ("val", val), ("test", test))}}
    arms = {}
    for arm, trainable in (("probe", False), ("finetune", True)):
        arms[arm] = [train_arm(module, args, maps if trainable else frozen, train, val, test,
                               cols, pool_stats, trainable, seed, n_out)
                     for seed in args.seeds]

    default = {t: (val[f"default_{t}"], test[f"default_{t}"]) for t in TASKS}
    table = {}
    weights = np.round(np.linspace(0, 1, 11), 2)
    for t in TASKS:
        d_val, d_test = score(t, default[t][0], val[t]), score(t, default[t][1], test[t])
        entry = {"default": {"val": d_val, "test": d_test}}
        for arm, runs in arms.items():
            alone_v = [r["best"][t]["val"] for r in runs]
            alone_t = [score(t, r["best"][t]["pred_test"], test[t]) for r in runs]
            fused_v, fused_t, ws = [], [], []
            for r in runs:
                pv, pt = r["best"][t]["pred_val"], r["best"][t]["pred_test"]
                per_w = [score(t, fuse(t, pv, default[t][0], w), val[t]) for w in weights]
                i = int(np.argmin(per_w) if t == "age" else np.argmax(per_w))
                ws.append(float(weights[i]))
                fused_v.append(per_w[i])
                fused_t.append(score(t, fuse(t, pt, default[t][1], weights[i]), test[t]))
            entry[arm] = {"val": alone_v, "test": alone_t,
                          "epochs": [r["best"][t]["epoch"] for r in runs],
                          "fused_val": fused_v, "fused_test": fused_t, "fused_weight": ws}
        table[t] = entry
    results["tasks"] = table
    if args.ship_age:
        ship_age(args, module, arms["finetune"][0], table["age"]["finetune"], val["maps"],
                 pool_stats, n_out, cols["age"].start)
    for runs in arms.values():  # the kept weights are not results
        for r in runs:
            r["best"].get("age", {}).pop("state", None)
    results["history"] = {arm: [r["history"] for r in runs] for arm, runs in arms.items()}
    results["environment"] = {"python": platform.python_version(), "torch": torch.__version__,
                              "machine": platform.machine(), "cpus": os.cpu_count()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))

    def ms(v: list[float]) -> str:
        return f"{np.mean(v):.2f} ± {np.std(v):.2f}"

    unit = {"age": "MAE, years", "gender": "%", "race": "%", "emotion": "%",
            "attributes": "mean %"}
    lines = ["# Partial fine-tuning of dlib's ResNet: its last stage against its frozen features",
             "", f"`python benchmarks/identity_finetune.py --epochs {args.epochs} --seeds "
             f"{' '.join(map(str, args.seeds))} --from-block {args.from_block}` "
             f"(cut before block {args.from_block}; "
             f"{platform.machine()} CPU, {os.cpu_count()} cores). Rows with a face: train "
             f"{results['rows']['train']['faces']}, validation {results['rows']['val']['faces']}"
             f", test {results['rows']['test']['faces']} (without a face, left out: "
             f"{results['rows']['val']['no_face']} validation, "
             f"{results['rows']['test']['no_face']} test). Mean ± standard deviation over the "
             "seeds; each task at its validation-best epoch; fused: with the default "
             "analyzer's predictions, the weight (of the arm) chosen on validation.", "",
             "| task | default analyzer (val / test) | probe (val / test) | fine-tune (val / "
             "test) | probe + default (test; weight) | fine-tune + default (test; weight) |",
             "|---|---|---|---|---|---|"]
    for t in TASKS:
        e = table[t]
        lines.append(
            f"| {t} ({unit[t]}) | {e['default']['val']:.2f} / {e['default']['test']:.2f} | "
            f"{ms(e['probe']['val'])} / {ms(e['probe']['test'])} | "
            f"{ms(e['finetune']['val'])} / {ms(e['finetune']['test'])} | "
            f"{ms(e['probe']['fused_test'])}; {e['probe']['fused_weight']} | "
            f"{ms(e['finetune']['fused_test'])}; {e['finetune']['fused_weight']} |")
    ep = results["history"]["finetune"][0]
    lines += ["", f"Epoch time (fine-tune, seed {args.seeds[0]}): "
              f"{np.mean([h['seconds'] for h in ep]):.0f} s for {results['rows']['train']['faces']}"
              f" rows; extraction {extract_s / 60:.0f} min in this run (0 when cached)."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
