"""Augmentation on whole batches, on the batch's device (GPU when training there).

Geometric transforms move landmark labels with the pixels (a horizontal flip also swaps the
left and right points of the 68-point markup), so landmark targets stay correct.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from facefuse.tasks import FLIP_68


@dataclass(frozen=True)
class AugmentSpec:
    """Random batch augmentation settings (all applied per sample)."""

    flip: float = 0.5  # probability of a horizontal flip
    max_rotation: float = 10.0  # degrees
    max_scale: float = 0.1  # zoom in/out by up to this share
    max_shift: float = 0.05  # share of the side
    brightness: float = 0.2  # multiplicative jitter
    contrast: float = 0.2
    grayscale: float = 0.05  # probability of dropping colour
    blur: float = 0.0  # probability of a 3x3 Gaussian blur (image filter)
    sharpen: float = 0.0  # probability of a 3x3 sharpening filter
    noise: float = 0.0  # std of additive Gaussian noise (0..1 pixel scale)


def paper_augment() -> AugmentSpec:
    """Li and Zhu's augmentation: affine transforms plus image filters, drawn anew for every
    sample in every epoch (their 10x expansion of the training set, on the fly)."""
    return AugmentSpec(flip=0.5, max_rotation=10.0, max_scale=0.1, max_shift=0.08,
                       brightness=0.2, contrast=0.2, grayscale=0.0, blur=0.2, sharpen=0.2,
                       noise=0.02)


def _filter(images: torch.Tensor, kernel: list[list[float]]) -> torch.Tensor:
    k = torch.tensor(kernel, dtype=images.dtype, device=images.device)
    k = (k / k.sum()).expand(images.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), k, groups=images.shape[1])


def augment_batch(images: torch.Tensor, landmarks: torch.Tensor | None, spec: AugmentSpec,
                  generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Augment float images ``(N, 3, H, W)`` in 0..1 and their landmarks ``(N, 68, 2)``
    (normalised 0..1 coordinates; NaN where missing)."""
    n, dev = images.shape[0], images.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device="cpu").to(dev)

    flip = rand(n) < spec.flip
    angle = (rand(n) * 2 - 1) * math.radians(spec.max_rotation)
    scale = 1 + (rand(n) * 2 - 1) * spec.max_scale
    shift = (rand(n, 2) * 2 - 1) * spec.max_shift * 2  # in [-1, 1] grid units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    sign = torch.where(flip, -1.0, 1.0).to(images.dtype)
    # theta maps output grid coords to input grid coords; flip mirrors the input x
    theta = torch.zeros(n, 2, 3, device=dev, dtype=images.dtype)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = sign * cos, sign * -sin, sign * shift[:, 0]
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sin, cos, shift[:, 1]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                        align_corners=False)
    bright = 1 + (rand(n, 1, 1, 1) * 2 - 1) * spec.brightness
    contrast = 1 + (rand(n, 1, 1, 1) * 2 - 1) * spec.contrast
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = ((out - mean) * contrast + mean) * bright
    gray = (rand(n) < spec.grayscale).view(n, 1, 1, 1)
    out = torch.where(gray, out.mean(dim=1, keepdim=True).expand_as(out), out)
    if spec.blur > 0:
        chosen = (rand(n) < spec.blur).view(n, 1, 1, 1)
        out = torch.where(chosen, _filter(out, [[1, 2, 1], [2, 4, 2], [1, 2, 1]]), out)
    if spec.sharpen > 0:
        chosen = (rand(n) < spec.sharpen).view(n, 1, 1, 1)
        out = torch.where(chosen, _filter(out, [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]), out)
    if spec.noise > 0:
        noise = torch.randn(out.shape, generator=generator, device="cpu").to(dev)
        out = out + noise * spec.noise
    out = out.clamp(0, 1)
    if landmarks is None:
        return out, None
    # invert the affine map for points: p_in = A p_out + t  =>  p_out = A^-1 (p_in - t)
    pts = landmarks * 2 - 1  # to grid units
    a = theta[:, :, :2]
    t = theta[:, :, 2]
    pts = torch.linalg.solve(a, (pts - t[:, None, :]).transpose(1, 2)).transpose(1, 2)
    pts = (pts + 1) / 2
    if pts.shape[1] == len(FLIP_68):
        perm = torch.tensor(FLIP_68, device=dev)
        pts = torch.where(flip.view(n, 1, 1), pts[:, perm], pts)
    return out, pts
