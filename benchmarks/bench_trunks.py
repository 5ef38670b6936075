"""Trunk speed: inference latency per face and throughput (PyTorch and ONNX Runtime on the
CPU), and on CUDA the multi-task training pipeline against the model alone.

For each trunk, a multi-task model (every task head) at --size:
* CPU: latency of one face (batch 1, median of repeats) and throughput at --batch, in
  PyTorch and, when onnxruntime is installed, in ONNX Runtime;
* CUDA (when available): training images/s of the model alone (random tensors already on the
  GPU, bf16 autocast, channels_last) and of the full pipeline (cache loader, device-side
  augmentation, masked multi-task losses), same batch and size, and their ratio; with
  --trainer, also of ``facefuse train``'s own epochs (identity head and all), as configured
  by default (the cache in RAM when it fits), with fused AdamW, and reading the cache's
  memory map (``TRAINER_VARIANTS``).

Usage: python benchmarks/bench_trunks.py [--trunks mobilenetv3_large_100 ...] [--size 112]
       [--batch 64] [--cuda-batch 512] [--cache DIR | --synthetic N [--trainer]]
       [--cuda-only]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from facefuse.models.checkpoint import save_checkpoint
from facefuse.models.multitask import HeadSpec, ModelSpec, build_model

HEADS = {"identity": HeadSpec(500, (), 0.0, "cosine", {"embedding": 128}),
         "age": HeadSpec(1), "gender": HeadSpec(2), "race": HeadSpec(5), "emotion": HeadSpec(7),
         "attributes": HeadSpec(40), "landmarks": HeadSpec(136, (256,))}


def synthetic_cache(folder: Path, n: int, size: int) -> Path:
    """A training cache of ``n`` random images at ``size`` px whose rows carry the label mix
    of the real datasets (UTKFace's age/gender/race, FER2013's emotion, CelebA's attributes
    and 200 identities, 300-W's landmarks), for timing where no real cache is at hand. Its
    settings are the trainer's defaults at ``size``, so ``facefuse train`` accepts it."""
    import json

    import numpy as np

    from facefuse.data.cache import FORMAT_VERSION
    from facefuse.data.table import SampleTable
    from facefuse.train.mtl import MTLConfig

    rng = np.random.default_rng(0)
    kinds = np.array(["utkface", "fer2013", "celeba", "300w"])[rng.integers(0, 4, n)]
    nan = np.full(n, np.nan, dtype=np.float32)
    labels = {
        "age": np.where(kinds == "utkface", rng.uniform(1, 90, n), nan),
        "gender": np.where(kinds == "utkface", rng.integers(0, 2, n), -1),
        "race": np.where(kinds == "utkface", rng.integers(0, 5, n), -1),
        "emotion": np.where(kinds == "fer2013", rng.integers(0, 7, n), -1),
        "attributes": np.where((kinds == "celeba")[:, None], rng.integers(0, 2, (n, 40)), -1),
        "landmarks": np.where((kinds == "300w")[:, None, None],
                              rng.uniform(0.1, 0.9, (n, 68, 2)), np.nan),
        "identity": np.where(kinds == "celeba", [f"person{k}" for k in rng.integers(0, 200, n)],
                             ""),
    }
    table = SampleTable.from_columns([f"{k}/{i}" for i, k in enumerate(kinds)],
                                     [f"{i}.jpg" for i in range(n)], kinds.tolist(), labels,
                                     split=["train"] * n)
    folder.mkdir(parents=True, exist_ok=True)
    images = np.memmap(folder / "images.u8", mode="w+", dtype=np.uint8,
                       shape=(n, size, size, 3))
    images[:] = rng.integers(0, 256, images.shape, dtype=np.uint8)
    images.flush()
    table.save(folder / "table.npz")
    np.save(folder / "boxes.npy", np.zeros((n, 4), dtype=np.float32))
    np.save(folder / "valid.npy", np.ones(n, dtype=bool))
    (folder / "meta.json").write_text(json.dumps({
        "format": FORMAT_VERSION, "key": "synthetic",
        "spec": MTLConfig(image_size=size).cache_spec().to_dict(),
        "samples": n, "valid": n, "skipped": [], "datasets": sorted(set(kinds))}))
    return folder


def cpu_rates(trunk: str, size: int, batch: int, repeats: int) -> dict[str, float]:
    model = build_model(ModelSpec(trunk, {"image_size": size}, HEADS)).eval()
    out: dict[str, float] = {}
    x1, xb = torch.randn(1, 3, size, size), torch.randn(batch, 3, size, size)
    with torch.no_grad():
        for _ in range(3):
            model(x1)
        lat = []
        for _ in range(repeats):
            t = time.perf_counter()
            model(x1)
            lat.append(time.perf_counter() - t)
        out["torch_latency_ms"] = 1000 * statistics.median(lat)
        model(xb)
        t = time.perf_counter()
        for _ in range(3):
            model(xb)
        out["torch_img_s"] = 3 * batch / (time.perf_counter() - t)
    try:
        import onnxruntime as ort

        from facefuse.models.onnx_export import export_onnx
    except ImportError:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(model, Path(tmp) / "m", input_size=size)
        onnx = export_onnx(Path(tmp) / "m", Path(tmp) / "m.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = os.cpu_count() or 1
        s = ort.InferenceSession(str(onnx), opts, providers=["CPUExecutionProvider"])
        a1, ab = x1.numpy(), xb.numpy()
        for _ in range(3):
            s.run(None, {"images": a1})
        lat = []
        for _ in range(repeats):
            t = time.perf_counter()
            s.run(None, {"images": a1})
            lat.append(time.perf_counter() - t)
        out["onnx_latency_ms"] = 1000 * statistics.median(lat)
        s.run(None, {"images": ab})
        t = time.perf_counter()
        for _ in range(3):
            s.run(None, {"images": ab})
        out["onnx_img_s"] = 3 * batch / (time.perf_counter() - t)
    return out


def cuda_training_rates(trunk: str, size: int, batch: int, cache_dir: str | None,
                        steps: int = 40) -> dict[str, float]:
    from facefuse.data.augment import AugmentSpec
    from facefuse.data.cache import TrainingCache
    from facefuse.data.loader import CacheLoader
    from facefuse.train.loop import task_loss

    dev = torch.device("cuda")
    tasks = ["age", "gender", "race", "emotion", "attributes", "landmarks"]
    heads = {t: HEADS[t] for t in tasks}
    model = build_model(ModelSpec(trunk, {"image_size": size}, heads)).to(dev)
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(images: torch.Tensor, labels: dict, masks: dict) -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(images)
        loss = sum(task_loss(t, out[t].float(), labels[t], masks[t]) for t in tasks)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    x = torch.randn(batch, 3, size, size, device=dev).contiguous(
        memory_format=torch.channels_last)
    labels = {"age": torch.rand(batch, device=dev) * 80,
              "gender": torch.randint(0, 2, (batch,), device=dev),
              "race": torch.randint(0, 5, (batch,), device=dev),
              "emotion": torch.randint(0, 7, (batch,), device=dev),
              "attributes": torch.randint(0, 2, (batch, 40), device=dev),
              "landmarks": torch.rand(batch, 68, 2, device=dev)}
    masks = {t: torch.ones(batch, dtype=torch.bool, device=dev) for t in tasks}
    for _ in range(5):
        step(x, labels, masks)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step(x, labels, masks)
    torch.cuda.synchronize()
    model_only = steps * batch / (time.perf_counter() - t)
    out = {"model_only_img_s": model_only}
    if cache_dir is None:
        return out
    cache = TrainingCache.open(cache_dir)
    cache.load_into_memory()
    loader = CacheLoader(cache, cache.rows("train"), batch, device=dev, augment=AugmentSpec(),
                         tasks=tasks, drop_last=True, channels_last=True)
    n, done = 0, 0
    t = None
    while done < steps + 5:
        for b in loader:
            if done == 5:
                torch.cuda.synchronize()
                t, n = time.perf_counter(), 0
            step(b.images, b.labels, b.masks)
            n += len(b)
            done += 1
            if done >= steps + 5:
                break
    torch.cuda.synchronize()
    out["pipeline_img_s"] = n / (time.perf_counter() - t)
    out["pipeline_share_of_model_only"] = out["pipeline_img_s"] / model_only
    return out


#: ``facefuse train`` settings --trainer times beside its defaults: (label, MTLConfig
#: fields, OptimConfig fields)
TRAINER_VARIANTS = (("trainer", {}, {}),
                    ("trainer_fused_adamw", {}, {"fused": True}),
                    ("trainer_memory_map", {"cache_in_memory": False}, {}))


def trainer_rate(trunk: str, size: int, batch: int, cache_dir: str, device: str = "cuda",
                 epoch_images: int = 20480, settings: dict | None = None,
                 optim: dict | None = None) -> float:
    """Images/s of ``facefuse train`` itself (every head, identity's margin loss, loss
    weighting, gradient clipping; validation excluded): the second of two epochs of
    ``epoch_images`` draws on ``cache_dir`` (a :func:`synthetic_cache`). ``settings`` and
    ``optim`` change fields of the trainer's config and of its optimiser's (as
    :data:`TRAINER_VARIANTS` does)."""
    from facefuse.train.loop import OptimConfig
    from facefuse.train.mtl import MTLConfig, MTLTrainer

    with tempfile.TemporaryDirectory() as out:
        cfg = MTLConfig(output=out, cache=cache_dir, device=device, trunk=trunk,
                        image_size=size, datasets=("utkface", "fer2013", "celeba", "300w"),
                        sampling={"utkface": 1.0, "fer2013": 1.0, "celeba": 1.0, "300w": 1.0},
                        epoch_size=epoch_images, batch_size=batch,
                        optim=OptimConfig(optimizer="adamw", lr=1e-3, epochs=2,
                                          **(optim or {})), **(settings or {}))
        trainer = MTLTrainer(cfg)
        trainer.engine.train_epoch(1)  # warm-up: kernel selection, allocator
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        steps = trainer.engine.train_epoch(2)["steps"]
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        return steps * batch / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trunks", nargs="+", default=["mobilenetv3_large_100", "efficientnet_b0",
                                                    "rexnet_100"])
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--cuda-batch", type=int, default=512)
    p.add_argument("--cache", default=None, help="a built training cache (for the pipeline)")
    p.add_argument("--cuda-only", action="store_true", help="skip the CPU measurements")
    p.add_argument("--synthetic", type=int, default=0, metavar="N",
                   help="time the pipeline on a synthetic cache of N random images "
                        "(when no real cache at --size is at hand)")
    p.add_argument("--trainer", action="store_true",
                   help="with --synthetic: also time `facefuse train`'s own epochs")
    args = p.parse_args(argv)
    if args.trainer and not args.synthetic:
        raise SystemExit("--trainer needs --synthetic N (its cache must match the trainer's "
                         "settings)")
    if args.synthetic and args.cache:
        raise SystemExit("--cache and --synthetic: give one of them")
    if args.synthetic and torch.cuda.is_available():
        tmp = tempfile.mkdtemp(prefix="bench-cache-")
        args.cache = str(synthetic_cache(Path(tmp), args.synthetic, args.size))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; size {args.size}px")
    for trunk in args.trunks:
        if not args.cuda_only:
            r = cpu_rates(trunk, args.size, args.batch, args.repeats)
            line = (f"{trunk:24s} CPU torch: {r['torch_latency_ms']:.1f} ms/face (batch 1), "
                    f"{r['torch_img_s']:.0f} img/s (batch {args.batch})")
            if "onnx_img_s" in r:
                line += (f" | onnxruntime: {r['onnx_latency_ms']:.1f} ms/face, "
                         f"{r['onnx_img_s']:.0f} img/s")
            print(line, flush=True)
        if torch.cuda.is_available():
            c = cuda_training_rates(trunk, args.size, args.cuda_batch, args.cache)
            if args.trainer:
                for label, settings, optim in TRAINER_VARIANTS:
                    c[f"{label}_img_s"] = trainer_rate(trunk, args.size, args.cuda_batch,
                                                       args.cache, settings=settings,
                                                       optim=optim)
                    c[f"{label}_share_of_model_only"] = (c[f"{label}_img_s"]
                                                         / c["model_only_img_s"])
            print(f"{trunk:24s} CUDA {torch.cuda.get_device_name()}: "
                  + ", ".join(f"{k} {v:,.2f}" if "share" in k else f"{k} {v:,.0f}"
                              for k, v in c.items()), flush=True)


if __name__ == "__main__":
    main()
