"""Training-cache throughput: build, read batches, and decode-per-batch for comparison.

Prints images/s for
1. building the cache (decode + crop + resize + write, all cores);
2. reading ready batches from the cache with :class:`CacheLoader` (memory map and in RAM;
   with device-side augmentation on the chosen device);
3. decoding the JPEGs per batch with a torch ``DataLoader`` (PIL decode + resize in workers),
   which is what the cache replaces;
4. on CUDA, the model-only training throughput of MobileNetV3-Large at the same batch and
   size, the figure the loader must stay well above.

Usage: python benchmarks/bench_cache.py [--root ../shared/data] [--dataset utkface]
       [--size 112] [--batch 512] [--device cpu|cuda] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facefuse.data.augment import AugmentSpec
from facefuse.data.cache import CacheSpec, build_cache
from facefuse.data.images import load_rgb
from facefuse.data.loader import CacheLoader
from facefuse.data.readers import read_dataset


class DecodePerItem(torch.utils.data.Dataset):
    def __init__(self, paths: list[str], size: int) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        im = Image.fromarray(load_rgb(self.paths[i])).resize((self.size, self.size),
                                                            Image.BILINEAR)
        return torch.from_numpy(np.array(im)).permute(2, 0, 1)


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} img/s ({n} images in {seconds:.2f}s)"


def time_loader(loader, epochs: int, device: torch.device) -> tuple[int, float]:
    n = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            n += len(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n, time.perf_counter() - start


def model_training_rate(size: int, batch: int, device: torch.device, steps: int = 30) -> float:
    import timm

    model = timm.create_model("mobilenetv3_large_100", num_classes=1000).to(device)
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)
    for i in range(steps + 5):
        if i == 5:
            torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="../shared/data")
    p.add_argument("--dataset", default="utkface")
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--cache-dir", default=None, help="default: a fresh temporary folder")
    args = p.parse_args()
    device = torch.device(args.device)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""))
    table = read_dataset(args.dataset, args.root).table
    if args.limit:
        table = table.select(np.arange(min(args.limit, len(table))))
    print(f"dataset {args.dataset}: {len(table)} images, size {args.size}px, "
          f"batch {args.batch}")
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = Path(args.cache_dir or tmp)
        start = time.perf_counter()
        cache = build_cache(table, cache_dir, CacheSpec(size=args.size), name="bench",
                            workers=args.workers)
        print(f"cache build ({args.workers} processes): "
              f"{rate(len(table), time.perf_counter() - start)}")
        rows = cache.rows()
        for label, in_memory, augment in (("memory map", False, None),
                                          ("in RAM", True, None),
                                          ("in RAM + augment on device", True, AugmentSpec())):
            if in_memory:
                cache.load_into_memory()
            loader = CacheLoader(cache, rows, batch_size=args.batch, device=device,
                                 augment=augment, channels_last=device.type == "cuda")
            time_loader(loader, 1, device)  # warm the page cache / allocator
            n, s = time_loader(loader, args.epochs, device)
            print(f"cache read, {label}: {rate(n, s)}")
        ds = DecodePerItem(list(table.image), args.size)
        dl = torch.utils.data.DataLoader(ds, batch_size=args.batch, shuffle=True,
                                         num_workers=args.workers,
                                         pin_memory=device.type == "cuda")
        n, start = 0, time.perf_counter()
        for x in dl:
            x = x.to(device, non_blocking=True).float().div_(255)
            n += len(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        print(f"JPEG decode per batch (DataLoader, {args.workers} workers): "
              f"{rate(n, time.perf_counter() - start)}")
    if device.type == "cuda":
        print(f"MobileNetV3-Large training alone (bf16, channels_last): "
              f"{model_training_rate(args.size, args.batch, device):,.0f} img/s")


if __name__ == "__main__":
    main()
