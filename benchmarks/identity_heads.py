"""Every other task on identity-pretrained features: heads fitted on the frozen features of
dlib's ResNet and SFace (their descriptors and pooled intermediate maps), of the shipped
multi-task model's trunk, and on concatenations of them, scored on the test splits of the
shipped model's evaluation beside the shipped model's own heads.

Splits: the readers' own (``facefuse.data.readers.read_dataset`` with ``SplitConfig(seed=0)``),
which is exactly what ``facefuse.train.mtl_data.load_data`` puts in the training cache for
``configs/mtl.yaml`` (``seed: 0``, no ``limit_per_dataset`` in the shipped
profiles): UTKFace 80/10/10 stratified, FER2013 its official test folder as test and 10 % of
its train folder as validation, CelebA identity-disjoint 80/10/10. The test rows are the
model card's (UTKFace 1399, FER2013 3589, CelebA 469).

Per image: the analyzer's MTCNN detector (``FaceAnalyzer.detect``, small images enlarged),
the largest face; its five points align the face for each identity network (where the
detector gives none, five points from the shipped model's 68 landmarks on its crop). The
shipped model sees the crops it was trained and is evaluated on: the analyzer's crop of that
face for UTKFace and CelebA (the training cache's fallback crop where no face is found),
the whole 48x48 image for FER2013. Identity networks: the float32 modules rebuilt from the
package files (``facefuse.models.identity_import``), exported in memory to ONNX with the
pooled maps as extra outputs, one pass without flip; the shipped model: with and without
flip (features flip-averaged, as the analyzer computes them). Features are cached per chunk
of rows in ``--cache`` (.npz), so reruns only fit heads.

Heads (scikit-learn, on features standardised on the training rows; hyper-parameters chosen
on the validation rows, refitted on the training rows): logistic regression for gender,
race, emotion and each of the 40 attributes; ridge and a one-hidden-layer MLP for age (the
MLP over ``--seeds``; the logistic and ridge fits are deterministic).

Usage: python benchmarks/identity_heads.py [--data ../shared/data] [--out reports/identity_heads]
           [--cache reports/identity_heads/cache] [--seeds 0 1 2] [--limit N]
           [--fer-train-max 12000] [--extract-only]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pickle
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATASETS = ("utkface", "fer2013", "celeba")
SPLIT_ORDER = ("test", "val", "train")  # test first: a cut-short run still scores something
FEATURE_VERSION = "identity-heads-1"
CHUNK = 500
MTL_HEADS = ("age", "gender", "race", "emotion", "attributes", "landmarks")
#: cached feature blocks: key -> what it is
BLOCKS = {
    "dlib_desc": "dlib ResNet descriptor (128)",
    "dlib_pool": "dlib pooled vector the fc layer reads (256)",
    "dlib_s3": "dlib stage-3 map 128x8x8, average-pooled (128)",
    "dlib_s4": "dlib stage-4 map 256x4x4, average-pooled (256)",
    "sface_feat": "SFace feature (128)",
    "sface_m28": "SFace map 256x28x28, average-pooled (256)",
    "sface_m14": "SFace map 512x14x14, average-pooled (512)",
    "sface_m7": "SFace map 1024x7x7 (after bn1), average-pooled (1024)",
    "mtl_feat": "shipped multi-task model's trunk features, flip-averaged",
}
FEATURE_SETS = {
    "dlib": ["dlib_desc"],
    "dlib pooled-256": ["dlib_pool"],
    "dlib stage-3 GAP": ["dlib_s3"],
    "dlib stage-4 GAP": ["dlib_s4"],
    "sface": ["sface_feat"],
    "sface 28x28 GAP": ["sface_m28"],
    "sface 14x14 GAP": ["sface_m14"],
    "sface 7x7 GAP": ["sface_m7"],
    "mtl": ["mtl_feat"],
    "dlib+sface": ["dlib_desc", "sface_feat"],
    "dlib+sface+mtl": ["dlib_desc", "sface_feat", "mtl_feat"],
    "identity all": ["dlib_desc", "dlib_pool", "dlib_s3", "sface_feat", "sface_m14",
                     "sface_m7"],
    "all": ["dlib_desc", "dlib_pool", "dlib_s3", "sface_feat", "sface_m14", "sface_m7",
            "mtl_feat"],
}
TASKS_OF = {"utkface": ("age", "gender", "race"), "fer2013": ("emotion",),
            "celeba": ("attributes",)}


# -- rows ------------------------------------------------------------------------------------
@dataclass
class Rows:
    """The rows of one dataset that this study uses, in a fixed order."""

    dataset: str
    sample_id: np.ndarray
    image: np.ndarray
    split: np.ndarray
    labels: dict[str, np.ndarray]


def select_rows(data: str, fer_train_max: int | None, limit: int | None) -> dict[str, Rows]:
    """Each dataset's rows with the split that the shipped model's training cache gives
    them (``read_dataset`` with split seed 0, as ``mtl_data.load_data`` reads them);
    FER2013's training rows subsampled to ``fer_train_max`` (seed 0), and with ``limit`` at
    most ``limit`` training and ``limit // 4`` validation and test rows a dataset."""
    from facefuse.data.readers import SplitConfig, read_dataset

    out = {}
    for name in DATASETS:
        table = read_dataset(name, data, SplitConfig(seed=0)).table
        keep = []
        rng = np.random.default_rng(0)
        for split in ("train", "val", "test"):
            rows = np.flatnonzero(table.split == split)
            cap = None
            if name == "fer2013" and split == "train" and fer_train_max:
                cap = fer_train_max
            if limit:
                lim = limit if split == "train" else max(limit // 4, 1)
                cap = lim if cap is None else min(cap, lim)
            if cap is not None and cap < len(rows):
                rows = np.sort(rng.permutation(rows)[:cap])
            keep.append(rows)
        idx = np.sort(np.concatenate(keep))
        out[name] = Rows(name, table.sample_id[idx], table.image[idx], table.split[idx],
                         {t: np.asarray(table.labels[t])[idx] for t in TASKS_OF[name]})
    return out


# -- extraction --------------------------------------------------------------------------------
def _export(module, kind: str, size: int, threads: int):
    """An ONNX Runtime session of ``module`` returning its descriptor and pooled maps."""
    import onnxruntime as ort
    import torch
    from torch import nn

    class Probe(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            maps = self.net.forward_maps(x)
            if kind == "dlib":  # 32x35, 64x17, 128x8, 256x4, 256x2 maps, then the pooled 256
                pooled = maps[-1]
                return (self.net.fc(pooled), pooled, maps[2].mean((2, 3)),
                        maps[3].mean((2, 3)))
            last = maps[-1]  # 64x112, 128x56, 256x28, 512x14, 1024x7 (after bn1)
            feat = self.net.fc_bn(self.net.fc(torch.flatten(last, 1)))
            return (feat, maps[2].mean((2, 3)), maps[3].mean((2, 3)), last.mean((2, 3)))

    probe = Probe(module.eval()).eval()
    buf = io.BytesIO()
    names = [f"o{i}" for i in range(4)]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(probe, torch.zeros(1, 3, size, size), buf, input_names=["x"],
                          output_names=names, opset_version=17, dynamo=False,
                          dynamic_axes={"x": {0: "n"}, **{n: {0: "n"} for n in names}})
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])


class Extractor:
    """Detector, shipped model and both identity networks, one thread each."""

    def __init__(self, threads: int = 1) -> None:
        import torch

        torch.set_num_threads(threads)
        from facefuse.data.cache import CacheSpec
        from facefuse.inference.analyzer import FaceAnalyzer
        from facefuse.inference.identity import IdentityNetwork
        from facefuse.models.identity_import import import_network
        from facefuse.weights import shipped_model_path

        self.model_path = str(shipped_model_path())
        # flip handled here: plain and mirrored crops in one batch
        self.analyzer = FaceAnalyzer(identity=None, landmark_refiner=None, flip=False)
        self.model = self.analyzer.model
        self.spec = CacheSpec(size=self.model.size, center_crop={"celeba": 0.6},
                              detector_crop=("utkface", "celeba"))
        folder = Path(__file__).resolve().parents[1] / "src/facefuse/weights/identity"
        self.nets = {}
        for kind, name in (("dlib", "dlib_resnet"), ("sface", "sface")):
            net = IdentityNetwork(folder / f"{name}.json")
            size = net.spec.input_size
            self.nets[kind] = (net, _export(import_network(kind).module, kind, size, threads),
                               np.asarray(net.spec.mean, np.float32).reshape(1, 3, 1, 1),
                               np.asarray(net.spec.std, np.float32).reshape(1, 3, 1, 1))
        self.timing = np.zeros(5)  # decode, detect, shipped model, dlib, sface (seconds)

    def _mtl_crop(self, rgb: np.ndarray, dataset: str, det) -> tuple[np.ndarray, tuple]:
        """The shipped model's crop and its square (x0, y0, side) in image pixels."""
        from facefuse.data.cache import crop_box
        from facefuse.detection.detectors import square_around, square_crop

        h, w = rgb.shape[:2]
        if dataset == "fer2013":  # trained and evaluated on the whole 48x48 image
            return rgb, (0.0, 0.0, float(w))
        if det is not None:
            cx, cy, side = square_around(self.analyzer.face_box(det), self.analyzer.margin)
            return self.analyzer.crops(rgb, [det])[0], (cx - side / 2, cy - side / 2, side)
        x0, y0, x1, y1 = crop_box(w, h, None, dataset, self.spec)  # the cache's fallback
        return square_crop(rgb, (x0, y0, x1, y1), 0.0, self.model.size), (x0, y0, x1 - x0)

    def run(self, paths: np.ndarray, dataset: str, batch: int = 32) -> dict[str, np.ndarray]:
        import torch

        from facefuse.data.images import load_rgb
        from facefuse.runtime.decoding import unflip_output
        from facefuse.tasks import five_points_from_68

        n = len(paths)
        images, crops, squares, points = [], [], [], []
        found = np.zeros(n, np.int8)  # 0 no face, 1 detector (five points), 2 whole image
        n_faces = np.zeros(n, np.int16)
        for i, p in enumerate(paths):
            t = time.perf_counter()
            rgb = load_rgb(p)
            t1 = time.perf_counter()
            dets = self.analyzer.detect(rgb)
            self.timing[:2] += (t1 - t, time.perf_counter() - t1)
            det = max(dets, key=lambda d: d.width * d.height) if dets else None
            n_faces[i] = len(dets)
            found[i] = 0 if det is None else (2 if det.found_by == "whole_image" else 1)
            crop, square = self._mtl_crop(rgb, dataset, det)
            images.append(rgb)
            crops.append(np.ascontiguousarray(crop))
            squares.append(square)
            points.append(None if det is None or det.landmarks is None
                          else np.asarray(det.landmarks, np.float32))
        out: dict[str, list] = {}
        t = time.perf_counter()
        for s in range(0, n, batch):
            part = crops[s:s + batch]
            k = len(part)
            feats, heads = self.model.raw(part + [c[:, ::-1].copy() for c in part])
            feats = np.asarray(feats, np.float32)
            out.setdefault("mtl_feat", []).append((feats[:k] + feats[k:]) / 2)
            out.setdefault("mtl_feat_noflip", []).append(feats[:k])
            for task in MTL_HEADS:
                o = np.asarray(heads[task], np.float32)
                both = (o[:k] + unflip_output(task, o[k:])) / 2
                out.setdefault(f"head_{task}", []).append(both)
                if task != "landmarks":
                    out.setdefault(f"head_{task}_noflip", []).append(o[:k].numpy())
        self.timing[2] += time.perf_counter() - t
        res = {k: np.concatenate(v) for k, v in out.items()}
        # five points: the detector's, else from the model's 68 landmarks on its crop
        lm = res["head_landmarks"].reshape(n, 68, 2)
        from_model = np.array([p is None for p in points])
        for i in np.flatnonzero(from_model):
            x0, y0, side = squares[i]
            points[i] = five_points_from_68(lm[i] * side + np.array([x0, y0]))
        for kind, col in (("dlib", 3), ("sface", 4)):
            net, session, mean, std = self.nets[kind]
            t = time.perf_counter()
            outs: list[list[np.ndarray]] = [[], [], [], []]
            for s in range(0, n, 16):
                aligned = np.stack([net.align(images[i], points[i])
                                    for i in range(s, min(s + 16, n))])
                x = (aligned.astype(np.float32).transpose(0, 3, 1, 2) / 255.0 - mean) / std
                for j, o in enumerate(session.run(None, {"x": np.ascontiguousarray(x)})):
                    outs[j].append(o.astype(np.float32))
            keys = (("dlib_desc", "dlib_pool", "dlib_s3", "dlib_s4") if kind == "dlib" else
                    ("sface_feat", "sface_m28", "sface_m14", "sface_m7"))
            for key, v in zip(keys, outs, strict=True):
                res[key] = np.concatenate(v)
            self.timing[col] += time.perf_counter() - t
        del torch
        res.update(found=found, n_faces=n_faces, points_from_model=from_model,
                   five_points=np.stack(points).astype(np.float32))
        return res


def chunk_file(cache: Path, dataset: str, split: str, index: int, ids: np.ndarray) -> Path:
    digest = hashlib.sha256((FEATURE_VERSION + "\n" + "\n".join(ids.tolist())).encode())
    return cache / f"{dataset}-{split}-{index:03d}-{digest.hexdigest()[:12]}.npz"


def plan_chunks(rows: dict[str, Rows], cache: Path) -> list[tuple[str, str, np.ndarray, Path]]:
    plan = []
    for split in SPLIT_ORDER:
        for name, r in rows.items():
            idx = np.flatnonzero(r.split == split)
            for c, s in enumerate(range(0, len(idx), CHUNK)):
                part = idx[s:s + CHUNK]
                plan.append((name, split, part,
                             chunk_file(cache, name, split, c, r.sample_id[part])))
    return plan


def extract(rows: dict[str, Rows], cache: Path, threads: int = 1) -> dict[str, dict]:
    """Every row's features, from the cache or computed now (and cached); per dataset a dict
    of arrays in the rows' order, plus the extraction's timings."""
    from tqdm import tqdm

    cache.mkdir(parents=True, exist_ok=True)
    plan = plan_chunks(rows, cache)
    todo = [p for p in plan if not p[3].exists()]
    extractor = None
    if todo:
        extractor = Extractor(threads)
        bar = tqdm(total=sum(len(p[2]) for p in todo), unit="img", mininterval=20,
                   smoothing=0.05, file=sys.stderr)
        for name, split, part, path in todo:
            bar.set_postfix_str(f"{name}/{split}")
            t = time.perf_counter()
            before = extractor.timing.copy()
            res = extractor.run(rows[name].image[part], name)
            res["sample_id"] = rows[name].sample_id[part].astype(str)
            res["seconds"] = np.array([time.perf_counter() - t])
            res["stage_seconds"] = extractor.timing - before
            tmp = path.with_name(path.stem + f".tmp{os.getpid()}.npz")
            np.savez(tmp, **res)
            os.replace(tmp, path)
            bar.update(len(part))
        bar.close()
    per: dict[str, dict] = {name: {} for name in rows}
    stats = {name: {"seconds": 0.0, "stage_seconds": np.zeros(5), "images": 0}
             for name in rows}
    for name, _, part, path in plan:
        with np.load(path, allow_pickle=False) as z:
            if not np.array_equal(z["sample_id"], rows[name].sample_id[part].astype(str)):
                raise SystemExit(f"{path}: its rows are not this chunk's; delete it")
            for k in z.files:
                if k in ("sample_id", "seconds", "stage_seconds"):
                    continue
                per[name].setdefault(k, []).append((part, z[k]))
            stats[name]["seconds"] += float(z["seconds"][0])
            stats[name]["stage_seconds"] += z["stage_seconds"]
            stats[name]["images"] += len(part)
    out = {}
    for name, blocks in per.items():
        n = len(rows[name].sample_id)
        arrays = {}
        for k, parts in blocks.items():
            first = parts[0][1]
            a = np.zeros((n, *first.shape[1:]), first.dtype)
            for part, v in parts:
                a[part] = v
            arrays[k] = a
        out[name] = {"arrays": arrays, "stats": stats[name]}
    return out



# -- heads -------------------------------------------------------------------------------------
CS = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)  # logistic: inverse L2 penalties
CS_ATTRIBUTES = (1e-3, 1e-2, 0.1, 1.0)
ALPHAS = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5)  # ridge
MLP_ALPHAS = (1e-2, 1.0)  # MLP weight decay, chosen with the first seed
#: feature sets that get the age MLP by default (the intermediate maps get ridge alone)
MLP_SETS = ("dlib", "dlib pooled-256", "sface", "sface 7x7 GAP", "mtl", "dlib+sface",
            "dlib+sface+mtl", "identity all", "all")
FUSION_WEIGHTS = np.linspace(0.0, 1.0, 21)  # late fusion: the identity head's share
AGE_RANGE = (0.0, 116.0)
BOOTSTRAP = 1000


def standardised(arrays: dict[str, np.ndarray], keys: list[str], train: np.ndarray
                 ) -> np.ndarray:
    """The blocks ``keys`` side by side, each column standardised on the training rows."""
    x = np.hstack([arrays[k].reshape(len(train), -1) for k in keys]).astype(np.float64)
    mean, std = x[train].mean(0), x[train].std(0)
    return ((x - mean) / np.where(std > 1e-8, std, 1.0)).astype(np.float32)


def row_scores(task: str, pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-row score whose mean is the headline metric (absolute error; hit; attribute hits
    averaged over the 40 attributes)."""
    if task == "age":
        return np.abs(pred - y)
    if task == "attributes":
        return (pred == y).mean(1)
    return (pred == y).astype(np.float64)


def metrics(task: str, pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from facefuse.evaluation.metrics import (
        balanced_accuracy,
        mean_attribute_accuracy,
        mean_balanced_accuracy,
    )

    if task == "age":
        return {"mae": float(np.mean(np.abs(pred - y)))}
    if task == "attributes":
        return {"mean_accuracy": 100 * mean_attribute_accuracy(pred, y),
                "mean_balanced_accuracy": 100 * mean_balanced_accuracy(pred, y)}
    return {"accuracy": 100 * float(np.mean(pred == y)),
            "balanced_accuracy": 100 * balanced_accuracy(pred, y)}


HEADLINE = {"age": "mae", "gender": "accuracy", "race": "accuracy", "emotion": "accuracy",
            "attributes": "mean_accuracy"}


def bootstrap_std(scores: np.ndarray, seed: int = 0) -> float:
    """Standard deviation of the mean of ``scores`` over test rows resampled with
    replacement."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(scores), (BOOTSTRAP, len(scores)))
    return float(scores[idx].mean(1).std())


def bootstrap_ci(diff: np.ndarray, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), (BOOTSTRAP, len(diff)))
    means = diff[idx].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def logistic_path(x: np.ndarray, y: np.ndarray, split: np.ndarray, cs: tuple[float, ...]
                  ) -> dict[float, dict[str, np.ndarray]]:
    """Validation and test predictions of a logistic regression fitted on the training rows
    for each C (increasing C, each fit started from the previous one's weights)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    tr = split == "train"
    classes = np.unique(y[tr])
    if len(classes) < 2:  # a label with one value in training: predict it
        return {c: {s: np.full((split == s).sum(), classes[0]) for s in ("val", "test")}
                for c in cs}
    model = LogisticRegression(max_iter=300, warm_start=True)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for c in sorted(cs):
            model.set_params(C=c)
            model.fit(x[tr], y[tr])
            out[c] = {s: model.predict(x[split == s]) for s in ("val", "test")}
    return out


def fit_classifier(task: str, x: np.ndarray, y: np.ndarray, split: np.ndarray
                   ) -> dict:
    """Logistic regression (one per attribute for ``attributes``, with one C for all),
    C chosen on the validation rows by the headline metric."""
    cs = CS_ATTRIBUTES if task == "attributes" else CS
    if task == "attributes":
        per = [logistic_path(x, y[:, j], split, cs) for j in range(y.shape[1])]
        path = {c: {s: np.stack([p[c][s] for p in per], 1) for s in ("val", "test")}
                for c in cs}
    else:
        path = logistic_path(x, y, split, cs)
    key = HEADLINE[task]
    val = {c: metrics(task, path[c]["val"], y[split == "val"])[key] for c in cs}
    best = max(cs, key=lambda c: (val[c], -c))
    return {"head": "logistic", "param": {"C": best}, "val": val[best],
            "val_by_param": {str(c): v for c, v in val.items()},
            "test_preds": [path[best]["test"]]}


def mlp_age(x: np.ndarray, y: np.ndarray, tr: np.ndarray, alpha: float, seed: int):
    """The age MLP fitted on rows ``tr`` (targets standardised on them)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    mu, sd = y[tr].mean(), y[tr].std()
    m = MLPRegressor(hidden_layer_sizes=(256,), alpha=alpha, batch_size=256,
                     learning_rate_init=1e-3, max_iter=100, early_stopping=True,
                     validation_fraction=0.1, n_iter_no_change=6, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return m.fit(x[tr], ((y[tr] - mu) / sd).astype(np.float32))


def fit_age(x: np.ndarray, y: np.ndarray, split: np.ndarray, seeds: list[int],
            mlp: bool) -> list[dict]:
    """Ridge (alpha chosen on validation) and, with ``mlp``, a one-hidden-layer MLP (256
    ReLU units, Adam, early stopping on a random tenth of the training rows; its weight
    decay chosen on validation with the first seed, then refitted with every seed)."""
    tr, va, te = (split == s for s in ("train", "val", "test"))
    clip = lambda v: np.clip(v, *AGE_RANGE)  # noqa: E731
    val, preds = {}, {}
    # ridge with an intercept (as sklearn's Ridge), every alpha from one eigendecomposition
    xt = x[tr].astype(np.float64)
    x_mean, y_mean = xt.mean(0), y[tr].mean()
    xt -= x_mean
    eig, vec = np.linalg.eigh(xt.T @ xt)
    proj = vec.T @ (xt.T @ (y[tr] - y_mean))
    del xt
    for a in ALPHAS:
        w = vec @ (proj / (np.maximum(eig, 0) + a))
        val[a] = float(np.mean(np.abs(clip((x[va] - x_mean) @ w + y_mean) - y[va])))
        preds[a] = clip((x[te] - x_mean) @ w + y_mean)
    best = min(ALPHAS, key=lambda a: (val[a], -a))
    out = [{"head": "ridge", "param": {"alpha": best}, "val": val[best],
            "val_by_param": {str(a): v for a, v in val.items()}, "test_preds": [preds[best]]}]
    if not mlp:
        return out
    mu, sd = y[tr].mean(), y[tr].std()

    def mlp_fit(alpha: float, seed: int):
        return mlp_age(x, y, tr, alpha, seed)

    def predict(m, rows: np.ndarray) -> np.ndarray:
        return clip(m.predict(x[rows]) * sd + mu)

    val, fitted = {}, {}
    for a in MLP_ALPHAS:
        fitted[a] = mlp_fit(a, seeds[0])
        val[a] = float(np.mean(np.abs(predict(fitted[a], va) - y[va])))
    best = min(MLP_ALPHAS, key=lambda a: (val[a], -a))
    models = [fitted[best]] + [mlp_fit(best, s) for s in seeds[1:]]
    vals = [float(np.mean(np.abs(predict(m, va) - y[va]))) for m in models]
    out.append({"head": "mlp", "param": {"alpha": best, "hidden": 256},
                "val": float(np.mean(vals)), "val_by_param": {str(a): v for a, v in val.items()},
                "test_preds": [predict(m, te) for m in models],
                "epochs": [int(m.n_iter_) for m in models]})
    return out


def shipped_predictions(arrays: dict[str, np.ndarray], task: str, flip: bool
                        ) -> np.ndarray:
    """The shipped model's own prediction per row: with flip, age through its calibration
    map and attributes at its thresholds (as the analyzer decides); without, uncalibrated
    age and attribute logits above 0 (as ``model_card_eval.py``'s uncalibrated figures)."""
    from facefuse.inference.face_model import FaceModel
    from facefuse.weights import shipped_model_path

    model = _SHIPPED.get("model")
    if model is None:
        model = _SHIPPED["model"] = FaceModel.from_checkpoint(shipped_model_path())
    o = arrays[f"head_{task}" if flip else f"head_{task}_noflip"]
    if task == "age":
        return np.clip(model.regression_values("age", o, calibrated=flip), *AGE_RANGE)
    if task == "attributes":
        if not flip:
            return (o > 0).astype(np.int8)
        thr = np.asarray(model.meta.get("thresholds") or [0.5] * o.shape[1])
        return (1 / (1 + np.exp(-o)) >= thr).astype(np.int8)
    return o.argmax(1)


_SHIPPED: dict = {}


def labels_for(task: str, rows: Rows) -> tuple[np.ndarray, np.ndarray]:
    """(labels, mask of labelled rows) of ``task``."""
    from facefuse.tasks import get_task

    y = rows.labels[task]
    if task == "attributes":
        return y.astype(np.int8), (y >= 0).all(1)
    if get_task(task).kind.name == "REGRESSION":
        return y.astype(np.float64), np.isfinite(y)
    return y.astype(np.int64), y >= 0

def refit_outputs(task: str, x: np.ndarray, y: np.ndarray, split: np.ndarray, entry: dict,
                  seeds: list[int]) -> list[dict[str, np.ndarray]]:
    """``entry``'s head refitted on the training rows at its chosen hyper-parameter; per
    seed (one for deterministic heads), its continuous output on every split: class
    probabilities, attribute probabilities, or age in years."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, Ridge

    from facefuse.tasks import get_task

    tr = split == "train"
    parts = ("train", "val", "test")
    if entry["head"] == "logistic":
        def proba(yy: np.ndarray) -> dict[str, np.ndarray]:
            classes = np.unique(yy[tr])
            if len(classes) < 2:
                return {s: np.full((split == s).sum(), float(classes[0])) for s in parts}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                m = LogisticRegression(C=entry["param"]["C"], max_iter=1000).fit(x[tr], yy[tr])
            if task == "attributes":
                return {s: m.predict_proba(x[split == s]) for s in parts}
            width = len(get_task(task).label_names)  # every class, trained on or not
            out = {}
            for s in parts:
                full = np.zeros(((split == s).sum(), width))
                full[:, m.classes_] = m.predict_proba(x[split == s])
                out[s] = full
            return out

        if task == "attributes":
            per = [proba(y[:, j]) for j in range(y.shape[1])]
            return [{s: np.stack([p[s] if p[s].ndim == 1 else p[s][:, 1] for p in per], 1)
                     for s in parts}]
        return [proba(y)]
    if entry["head"] == "ridge":
        m = Ridge(alpha=entry["param"]["alpha"]).fit(x[tr].astype(np.float64), y[tr])
        return [{s: np.clip(m.predict(x[split == s].astype(np.float64)), *AGE_RANGE)
                 for s in parts}]
    mu, sd = y[tr].mean(), y[tr].std()
    out = []
    for seed in seeds:
        m = mlp_age(x, y, tr, entry["param"]["alpha"], seed)
        out.append({s: np.clip(m.predict(x[split == s]) * sd + mu, *AGE_RANGE)
                    for s in parts})
    return out


def decide(task: str, scores: np.ndarray) -> np.ndarray:
    """Predictions from continuous outputs (argmax; attribute probability >= 0.5)."""
    if task == "age":
        return scores
    if task == "attributes":
        return (scores >= 0.5).astype(np.int8)
    return scores.argmax(1)


def shipped_scores(arrays: dict[str, np.ndarray], task: str) -> np.ndarray:
    """The shipped model's continuous outputs as the analyzer computes them (flip):
    calibrated age, class probabilities, attribute probabilities."""
    if task == "age":
        return shipped_predictions(arrays, "age", True)
    o = arrays[f"head_{task}"].astype(np.float64)
    if task == "attributes":
        return 1 / (1 + np.exp(-o))
    e = np.exp(o - o.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def fuse(task: str, ident: np.ndarray, shipped: np.ndarray, w: float) -> np.ndarray:
    """Late fusion: the weighted mean of ages or attribute probabilities, the weighted
    geometric mean of class probabilities."""
    if task in ("age", "attributes"):
        return w * ident + (1 - w) * shipped
    return w * np.log(np.maximum(ident, 1e-12)) + (1 - w) * np.log(np.maximum(shipped, 1e-12))


def late_fusion(task: str, outputs: list[dict[str, np.ndarray]], shipped: np.ndarray,
                y: np.ndarray, split: np.ndarray) -> dict:
    """The identity head's outputs fused with the shipped model's, the weight chosen on the
    validation rows (per seed); test predictions per seed."""
    key = HEADLINE[task]
    sign = 1 if task == "age" else -1
    ship = {s: shipped[split == s] for s in ("val", "test")}
    yv = y[split == "val"]
    ws, vals, preds = [], [], []
    for o in outputs:
        val = {float(w): metrics(task, decide(task, fuse(task, o["val"], ship["val"], w)),
                                 yv)[key] for w in FUSION_WEIGHTS}
        w = min(val, key=lambda v: (sign * val[v], v))
        ws.append(w)
        vals.append(val[w])
        preds.append(decide(task, fuse(task, o["test"], ship["test"], w)))
    return {"param": {"w": ws[0]} if len(ws) == 1 else {"w": ws}, "val": float(np.mean(vals)),
            "test_preds": preds}


def cached(fits: Path, parts: list, make):
    """``make()``, or its pickled result from an earlier run with the same ``parts``."""
    key = json.dumps([FEATURE_VERSION, *parts], default=str)
    path = fits / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.pkl"
    if path.exists():
        with open(path, "rb") as fh:
            return pickle.load(fh)
    value = make()
    with open(path.with_suffix(".tmp"), "wb") as fh:
        pickle.dump(value, fh)
    os.replace(path.with_suffix(".tmp"), path)
    return value


def fusion_and_memorisation(task: str, arrays: dict[str, np.ndarray], y: np.ndarray,
                            split: np.ndarray, entries: list[dict], seeds: list[int],
                            fits: Path, ids: list[str]) -> tuple[dict, dict]:
    """Late fusion of the best identity-only head (chosen on validation) with the shipped
    model's heads; and, for that head and the heads on the shipped model's trunk features,
    the training split's figure beside the validation split's (how far the features know
    the training rows by heart)."""
    key = HEADLINE[task]
    sign = 1 if task == "age" else -1
    fitted = [e for e in entries if e["val"] is not None]
    ident = min((e for e in fitted if "mtl_feat" not in FEATURE_SETS[e["features"]]),
                key=lambda e: sign * e["val"])
    own = min((e for e in fitted if e["features"] == "mtl" and e["head"] != "mlp"),
              key=lambda e: sign * e["val"])
    memo, outs = {}, {}
    for e in (ident, own):
        t = time.perf_counter()
        outs[e["features"]] = cached(fits, ["refit", task, e["features"], e["head"],
                                            e["param"], seeds, ids, split.tolist()],
                                     lambda e=e: refit_outputs(
                                         task, standardised(arrays, FEATURE_SETS[e["features"]],
                                                            split == "train"),
                                         y, split, e, seeds))
        o = outs[e["features"]][0]
        memo[f"{e['features']} ({e['head']})"] = {
            s: metrics(task, decide(task, o[s]), y[split == s])[key] for s in
            ("train", "val", "test")}
        print(f"{task} refit {e['features']} {e['head']}: {time.perf_counter() - t:.0f} s",
              flush=True)
    fused = late_fusion(task, outs[ident["features"]], shipped_scores(arrays, task), y, split)
    fused.update(features=f"late fusion: {ident['features']} ({ident['head']}) + shipped "
                          f"heads", head="fusion", dim=ident.get("dim"), fit_seconds=0.0)
    return fused, memo


def run_heads(rows: dict[str, Rows], feats: dict[str, dict], seeds: list[int],
              mlp_sets: set[str], fits: Path) -> dict:
    """Every feature set's heads for every task; test figures and predictions. Each
    (task, feature set)'s fits are kept in ``fits`` (pickles), so a rerun reuses them."""
    fits.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for name in DATASETS:
        arrays = feats[name]["arrays"]
        for task in TASKS_OF[name]:
            y_all, labelled = labels_for(task, rows[name])
            split = np.where(labelled, rows[name].split, "")
            y_test = y_all[split == "test"]
            entries = []
            for flip in (True, False):
                pred = shipped_predictions(arrays, task, flip)[split == "test"]
                entries.append({"features": "shipped model's own heads"
                                + ("" if flip else ", no flip"), "head": "own",
                                "param": {"flip": flip, "calibrated_age": flip},
                                "val": None, "test_preds": [pred], "fit_seconds": 0.0})
            for set_name, keys in FEATURE_SETS.items():
                mlp = task == "age" and set_name in mlp_sets
                key = json.dumps([FEATURE_VERSION, task, keys, seeds, mlp, CS, CS_ATTRIBUTES,
                                  ALPHAS, MLP_ALPHAS, rows[name].sample_id.tolist(),
                                  split.tolist()])
                done = fits / f"{task}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pkl"
                if done.exists():  # fitted by an earlier run on the same rows and grid
                    with open(done, "rb") as fh:
                        fitted = pickle.load(fh)
                    entries.extend(fitted)
                    continue
                t = time.perf_counter()
                x = standardised(arrays, keys, split == "train")
                if task == "age":
                    fitted = fit_age(x, y_all, split, seeds, mlp)
                else:
                    fitted = [fit_classifier(task, x, y_all, split)]
                took = time.perf_counter() - t
                for f in fitted:
                    f.update(features=set_name, dim=int(x.shape[1]), fit_seconds=took)
                    entries.append(f)
                with open(done.with_suffix(".tmp"), "wb") as fh:
                    pickle.dump(fitted, fh)
                os.replace(done.with_suffix(".tmp"), done)
                print(f"{task} {set_name}: {took:.0f} s, " + ", ".join(
                    f"{f['head']} val {f['val']:.3f}" for f in fitted), flush=True)
            fused, memo = fusion_and_memorisation(task, arrays, y_all, split, entries, seeds,
                                                  fits, rows[name].sample_id.tolist())
            entries.append(fused)
            for e in entries:
                runs = [metrics(task, p, y_test) for p in e["test_preds"]]
                e["test"] = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
                e["test_std_seeds"] = {k: float(np.std([r[k] for r in runs])) for k in runs[0]}
                e["seeds"] = len(runs)
                e["test_bootstrap_std"] = bootstrap_std(
                    row_scores(task, e["test_preds"][0], y_test)
                    * (100 if task != "age" else 1))
            results[task] = {"dataset": name, "test_rows": int(len(y_test)),
                             "train_rows": int((split == "train").sum()),
                             "val_rows": int((split == "val").sum()),
                             "entries": entries, "y_test": y_test, "memorisation": memo}
    return results


def best_entry(task: str, entries: list[dict]) -> dict:
    """The fitted head with the best validation figure (not the test's)."""
    fitted = [e for e in entries if e["val"] is not None]
    sign = 1 if task == "age" else -1
    return min(fitted, key=lambda e: sign * e["val"])


def compare(task: str, best: dict, shipped: dict, y: np.ndarray) -> dict:
    """Test gain of ``best`` over the shipped heads, with a paired bootstrap 95 % CI
    (first seed's predictions)."""
    scale = 1 if task == "age" else 100
    diff = (row_scores(task, best["test_preds"][0], y)
            - row_scores(task, shipped["test_preds"][0], y)) * scale
    lo, hi = bootstrap_ci(diff)
    return {"diff": float(diff.mean()), "ci95": [lo, hi]}


# -- report ------------------------------------------------------------------------------------
UNIT = {"age": "MAE, years (lower is better)", "gender": "accuracy, %",
        "race": "accuracy, %", "emotion": "accuracy, %",
        "attributes": "mean accuracy over 40 attributes, %"}
TEST_SET = {"age": "UTKFace", "gender": "UTKFace", "race": "UTKFace", "emotion": "FER2013",
            "attributes": "CelebA subset (identity-disjoint)"}


def _pm(mean: float, std: float, seeds: int, digits: int) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if seeds > 1 else f"{mean:.{digits}f}"


def _param(e: dict) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in e["param"].items())


def write_report(out: Path, results: dict, rows: dict[str, Rows], feats: dict,
                 meta: dict) -> None:
    lines = ["# Every other task on identity-pretrained features", "",
             f"Command: `{meta['command']}`", "",
             f"Run {meta['date']} on {meta['machine']}; one thread (OMP_NUM_THREADS=1, "
             "ONNX Runtime intra-op 1, torch 1), niced; other jobs shared the 2 cores.", "",
             "## Split", "", meta["split_text"], "",
             "| dataset | train | val | test | no face found | whole-image fallback | five "
             "points from the model's 68 landmarks |", "|---|---|---|---|---|---|---|"]
    for name in DATASETS:
        a = feats[name]["arrays"]
        sp = rows[name].split
        lines.append(f"| {name} | " + " | ".join(str(int((sp == s).sum()))
                                                for s in ("train", "val", "test"))
                     + f" | {int((a['found'] == 0).sum())} | {int((a['found'] == 2).sum())}"
                     f" | {int(a['points_from_model'].sum())} |")
    lines += ["", "## Summary (test split; feature sets, heads and weights chosen on "
              "validation)", "",
              "| task (test set, rows) | metric | shipped model (flip, calibrated) | best "
              "identity-only head | late fusion of it with the shipped heads | best of all "
              "(by validation) | gain of the best [95 % CI] |",
              "|---|---|---|---|---|---|---|"]
    for task, r in results.items():
        d = 2 if task == "age" else 1
        key = HEADLINE[task]
        sign = -1 if task == "age" else 1

        def cell(e: dict, name: bool = True, key: str = key, d: int = d) -> str:
            fig = _pm(e["test"][key], e["test_std_seeds"][key], e["seeds"], d)
            return (f"{fig} (± {e['test_bootstrap_std']:.{d}f} bs)"
                    + (f"; {e['features']}, {e['head']}" if name else ""))

        c = r["gain"]
        lo, hi = sorted((sign * c["ci95"][0], sign * c["ci95"][1]))
        lines.append(
            f"| {task} ({TEST_SET[task]}, {r['test_rows']}) | {UNIT[task]} | "
            f"{r['entries'][0]['test'][key]:.{d}f} | {cell(r['best_identity'])} | "
            f"{cell(r['fusion'], False)} (w {r['fusion']['param']['w']}) | "
            f"{cell(r['best'])} | {sign * c['diff']:+.{d}f} [{lo:+.{d}f}, {hi:+.{d}f}] |")
    lines += ["", "'bs': standard deviation of the test figure over 1000 bootstrap "
              "resamplings of the test rows. Gain: the best head's test figure less the "
              "shipped model's on the same rows, signed so that positive is better (years "
              "for age, points otherwise), with a paired bootstrap 95 % interval. w: the "
              "identity head's weight in the late fusion (0: the shipped heads alone).", "",
              "## Do the features know the training rows by heart?", "",
              "The heads refitted at their chosen setting, scored on each split. The "
              "shipped model was trained on these training rows (with these labels); the "
              "identity networks never saw them.", "",
              "| task | head | train | val | test |", "|---|---|---|---|---|"]
    for task, r in results.items():
        d = 2 if task == "age" else 1
        for head, figs in r["memorisation"].items():
            lines.append(f"| {task} | {head} | " + " | ".join(
                f"{figs[s]:.{d}f}" for s in ("train", "val", "test")) + " |")
    lines.append("")
    for task, r in results.items():
        d = 2 if task == "age" else 1
        keys = list(r["entries"][0]["test"])
        lines += [f"## {task}: {TEST_SET[task]} ({r['train_rows']} train / {r['val_rows']} "
                  f"val / {r['test_rows']} test rows)", "",
                  "| features | dim | head (chosen on val) | val | " + " | ".join(
                      f"test {k}" for k in keys) + " | ± bootstrap | fit s |",
                  "|---|---|---|---|" + "---|" * len(keys) + "---|---|"]
        for e in r["entries"]:
            val = "-" if e["val"] is None else f"{e['val']:.{d + 1}f}"
            cells = [_pm(e["test"][k], e["test_std_seeds"][k], e["seeds"], d) for k in keys]
            name = f"**{e['features']}**" if e is r["best"] else e["features"]
            lines.append(f"| {name} | {e.get('dim', '-')} | {e['head']} ({_param(e)}) | {val} "
                         f"| " + " | ".join(cells) + f" | {e['test_bootstrap_std']:.{d}f} | "
                         f"{e['fit_seconds']:.0f} |")
        lines.append("")
    lines += ["## Feature blocks", ""] + [f"- `{k}`: {v}" for k, v in BLOCKS.items()] + [
        "", "Feature sets: " + "; ".join(f"{k} = {' + '.join(v)}" for k, v in
                                       FEATURE_SETS.items()), "",
        "## Timings", "", meta["timing_text"], "", "## Notes", "", meta["notes"], ""]
    (out / "report.md").write_text("\n".join(lines))


# -- main --------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared"
                                         / "data"),
                   help="the data root (default: ../shared/data beside the repository)")
    p.add_argument("--out", default="reports/identity_heads")
    p.add_argument("--cache", default="reports/identity_heads/cache",
                   help="feature cache folder")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--limit", type=int, help="at most this many training rows (a quarter as "
                   "many validation and test rows) a dataset: a quick check")
    p.add_argument("--fer-train-max", type=int, default=12000,
                   help="FER2013 training rows kept (a seeded subsample; 0: all 21,693)")
    p.add_argument("--mlp-sets", nargs="*", default=list(MLP_SETS),
                   help=f"feature sets that get the age MLP (default: {', '.join(MLP_SETS)})")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--extract-only", action="store_true", help="fill the cache, fit nothing")
    args = p.parse_args()
    import platform

    import threadpoolctl

    threadpoolctl.threadpool_limits(args.threads)
    out = Path(args.out)
    rows = select_rows(args.data, args.fer_train_max or None, args.limit)
    for r in rows.values():
        print(f"{r.dataset}: " + ", ".join(f"{s} {int((r.split == s).sum())}"
                                           for s in ("train", "val", "test")), flush=True)
    t0 = time.perf_counter()
    feats = extract(rows, Path(args.cache), args.threads)
    print(f"features ready in {time.perf_counter() - t0:.0f} s", flush=True)
    if args.extract_only:
        return
    t1 = time.perf_counter()
    results = run_heads(rows, feats, args.seeds, set(args.mlp_sets),
                        Path(args.cache) / "fits")
    fit_seconds = time.perf_counter() - t1
    for task, r in results.items():
        r["best"] = best_entry(task, r["entries"])
        r["fusion"] = r["entries"][-1]
        r["best_identity"] = best_entry(task, [
            e for e in r["entries"] if e["features"] in FEATURE_SETS
            and "mtl_feat" not in FEATURE_SETS[e["features"]]])
        r["gain"] = compare(task, r["best"], r["entries"][0], r["y_test"])
    out.mkdir(parents=True, exist_ok=True)
    stage = ["decode", "detect", "shipped model (plain + mirrored)", "dlib", "SFace"]
    timing = []
    for name in DATASETS:
        st = feats[name]["stats"]
        per = st["stage_seconds"] / max(st["images"], 1) * 1000
        timing.append(f"- {name}: {st['images']} images, extraction {st['seconds'] / 60:.1f} "
                      f"min ({st['seconds'] / max(st['images'], 1) * 1000:.0f} ms an image: "
                      + ", ".join(f"{s} {v:.0f}" for s, v in zip(stage, per, strict=True))
                      + " ms)")
    fitted = {(task, e["features"]): e["fit_seconds"] for task, r in results.items()
              for e in r["entries"] if e["features"] in FEATURE_SETS}
    timing.append(f"- head fitting, every task and feature set (ridge, logistic, age MLP "
                  f"over {len(args.seeds)} seeds): {sum(fitted.values()) / 60:.1f} min of "
                  f"fits, plus the refits for the fusion and the train/val/test table; "
                  f"this run {fit_seconds / 60:.1f} min (fits kept in "
                  f"`{Path(args.cache) / 'fits'}` by earlier runs are reused)")
    fer_note = (f"FER2013's training rows subsampled to {args.fer_train_max} of 21,693 "
                f"(seed 0); its validation and test rows all kept."
                if args.fer_train_max else "All FER2013 training rows.")
    split_text = (
        "The shipped model's evaluation split (`benchmarks/model_card_eval.py` reads the "
        "training cache of `configs/mtl.yaml`, whose rows and splits come from "
        "`facefuse.train.mtl_data.load_data`: `read_dataset(name, data_root, "
        "SplitConfig(seed=split_seed=0))`, no `limit_per_dataset`). No training cache was "
        "on this machine, so the same readers were called directly with seed 0; the split "
        "depends only on file ids and seed (`facefuse.data.splits`), and the test counts "
        "match the model card's (UTKFace 1399, FER2013 3589, CelebA 469). UTKFace: 80/10/10 "
        "stratified by hashed id; FER2013: the official test folder is the test split, 10 % "
        "of the train folder is validation; CelebA: 80/10/10 identity-disjoint. "
        + fer_note + (f" `--limit {args.limit}`: a quick check, not the study's figures."
                      if args.limit else ""))
    notes = (
        "- Detector: the analyzer's MTCNN (`FaceAnalyzer.detect`, 48 px FER2013 images "
        "enlarged with a border, whole-image fallback), the largest face. Identity networks "
        "are aligned on its five points; where it gave none, on five points from the shipped "
        "model's 68 landmarks on its crop (no landmark refiner). No image was skipped.\n"
        "- The shipped model sees its own training/evaluation crops: the analyzer's crop "
        "(margin 0.2, 96 px) of that face for UTKFace and CelebA (the cache's fallback crop "
        "where no face was found), the whole 48x48 image for FER2013. Its own heads are "
        "shown flip-averaged with calibrated age and its attribute thresholds (what the "
        "analyzer reports), and without flip, uncalibrated, attribute logits > 0. The "
        "training cache picks the face nearest the centre, here the largest: a few crops "
        "may differ from the model card's.\n"
        "- Identity descriptors and maps: the float32 torch modules rebuilt from the package "
        "files, exported in memory to ONNX with the pooled maps as extra outputs; on real "
        "crops their descriptors match the shipped graphs to a cosine of 0.9999998 (dlib's "
        "shipped weights are float16). One pass, no flip (flip would double the "
        "dominant cost); the shipped model's features are flip-averaged.\n"
        "- Logistic regressions and ridge are deterministic, so their seed std is 0 and "
        "only one fit is shown; '± bootstrap' is the standard deviation of the test figure "
        "over 1000 resamplings of the test rows (the first seed's predictions), the "
        "uncertainty that matters when comparing rows. The age MLP is fitted over "
        f"seeds {args.seeds} (initialisation and its early-stopping hold-out).\n"
        "- Hyper-parameters are chosen on the validation rows, heads fitted on the training "
        "rows alone; the best feature set per task is chosen on validation too.")
    meta = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": f"{platform.machine()} {os.cpu_count()}-core CPU, "
                       f"Python {platform.python_version()}",
            "split_text": split_text, "timing_text": "\n".join(timing), "notes": notes}
    write_report(out, results, rows, feats, meta)
    chosen = ("best", "best_identity", "fusion")
    slim = {task: {**{k: v for k, v in r.items() if k not in ("entries", "y_test", *chosen)},
                   **{c: {k: v for k, v in r[c].items() if k != "test_preds"} for c in chosen},
                   "entries": [{k: v for k, v in e.items() if k != "test_preds"}
                               for e in r["entries"]]}
            for task, r in results.items()}
    detection = {name: {"no_face": int((f["arrays"]["found"] == 0).sum()),
                        "whole_image": int((f["arrays"]["found"] == 2).sum()),
                        "points_from_model": int(f["arrays"]["points_from_model"].sum()),
                        "extraction_seconds": f["stats"]["seconds"],
                        "stage_ms_per_image": dict(zip(stage, (f["stats"]["stage_seconds"]
                                                               / max(f["stats"]["images"], 1)
                                                               * 1000).tolist(), strict=True))}
                 for name, f in feats.items()}
    (out / "results.json").write_text(json.dumps(
        {"meta": meta, "args": vars(args), "rows": {n: {s: int((r.split == s).sum())
                                                        for s in ("train", "val", "test")}
                                                    for n, r in rows.items()},
         "detection": detection, "fit_seconds": fit_seconds, "tasks": slim}, indent=1))
    print(f"wrote {out / 'report.md'} and {out / 'results.json'}")


if __name__ == "__main__":
    main()
