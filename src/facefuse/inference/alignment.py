"""Alignment by a similarity transform (rotation, uniform scale, translation) that maps five
facial points onto a canonical template (the ArcFace 112x112 layout, scaled to any size)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from facefuse.identity_format import ARCFACE_TEMPLATE_112

#: Eye (image left), eye (image right), nose tip, mouth corners, in a 112x112 crop.
TEMPLATE_112 = ARCFACE_TEMPLATE_112


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 least-squares similarity transform taking ``src`` points onto ``dst``
    (Umeyama's method)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching (K>=2, 2) point arrays, got {src.shape}, {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    var = (s ** 2).sum() / len(src)
    if var <= 0:
        raise ValueError("source points are all identical")
    scale = (sig * sign).sum() / var
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def align_face(rgb: np.ndarray, five_points: np.ndarray, size: int = 112,
               zoom: float = 1.0) -> np.ndarray:
    """Warp ``rgb`` so the five points land on the template for a ``size`` crop; ``zoom``
    < 1 shows more context around the face."""
    template = (TEMPLATE_112 - 56.0) * (size / 112.0) * zoom + size / 2.0
    m = similarity_transform(five_points, template)
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]  # PIL maps output -> input
    return np.asarray(Image.fromarray(rgb).transform(
        (size, size), Image.AFFINE, inv.reshape(-1).tolist(), resample=Image.BILINEAR))
