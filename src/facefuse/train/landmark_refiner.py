"""Fitting the cascaded landmark refiner (:mod:`facefuse.inference.landmark_refiner`).

Each training face gives several starting shapes: the multi-task model's own prediction on
the photo, and the true shape displaced by the model's error on another training face (put
into this face's frame, scaled by a random factor around ``error_scale``, then turned,
scaled and shifted a little). Mirror images double the faces. Stage ``k`` is a ridge
regression from the descriptors at the current shapes to the remaining error in the frame;
its moves are applied before stage ``k + 1`` is fitted, so every stage learns from the
errors the previous ones leave.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from facefuse.inference.landmark_refiner import (
    EYE_CORNERS,
    N_POINTS,
    LandmarkRefiner,
    RefinerConfig,
    RefinerStage,
    apply_affine,
    invert_affine,
    shape_descriptor,
    similarity_to,
)
from facefuse.tasks import FLIP_68

log = logging.getLogger(__name__)


def _normalised(shape: np.ndarray) -> np.ndarray:
    eyes = np.linalg.norm(shape[EYE_CORNERS[0]] - shape[EYE_CORNERS[1]])
    return (shape - shape.mean(0)) / eyes


def mean_shape_of(truths: np.ndarray, config: RefinerConfig) -> np.ndarray:
    """The mean of the true shapes after similarity alignment (generalised Procrustes, three
    rounds), placed in the canonical frame: outer eye corners ``eye_distance`` apart, centred
    a little below the middle."""
    ref = _normalised(truths[0])
    for _ in range(3):
        ref = _normalised(np.mean([apply_affine(similarity_to(t, ref), t) for t in truths], 0))
    return ref * config.eye_distance + np.array([config.frame / 2, config.frame / 2 + 4])


def mirror_face(image: np.ndarray, *shapes: np.ndarray) -> tuple[np.ndarray, ...]:
    """The mirror image and each shape mirrored with it (left and right points swapped)."""
    width = image.shape[1]
    out = [np.ascontiguousarray(image[:, ::-1])]
    for s in shapes:
        m = s[list(FLIP_68)].copy()
        m[:, 0] = width - 1 - m[:, 0]
        out.append(m)
    return tuple(out)


def _check(images: Sequence[np.ndarray], truths: np.ndarray, starts: np.ndarray) -> None:
    if len(images) == 0:
        raise ValueError("no training faces")
    if truths.shape != (len(images), N_POINTS, 2) or starts.shape != truths.shape:
        raise ValueError(f"expected {len(images)} x 68 x 2 true and starting shapes, got "
                         f"{truths.shape} and {starts.shape}")
    if not (np.isfinite(truths).all() and np.isfinite(starts).all()):
        raise ValueError("true or starting shapes contain NaN or infinity")


def training_samples(images: Sequence[np.ndarray], truths: np.ndarray, starts: np.ndarray,
                     mean_shape: np.ndarray, config: RefinerConfig,
                     ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Images (with mirrors), and per sample: the image's index, its true shape and its
    start (image pixels)."""
    rng = np.random.default_rng(config.seed)
    # the model's errors, in each face's canonical frame
    errors = np.stack([apply_affine(similarity_to(t, mean_shape), s)
                       - apply_affine(similarity_to(t, mean_shape), t)
                       for t, s in zip(truths, starts, strict=True)])
    all_images: list[np.ndarray] = []
    owner, true_of, start_of = [], [], []
    for img, truth, start in zip(images, truths, starts, strict=True):
        for view in ((img, truth, start), mirror_face(img, truth, start)):
            v_img, v_truth, v_start = view
            all_images.append(v_img)
            idx = len(all_images) - 1
            owner.append(idx)
            true_of.append(v_truth)
            start_of.append(v_start)
            to_frame = similarity_to(v_truth, mean_shape)
            back = invert_affine(to_frame)
            truth_frame = apply_affine(to_frame, v_truth)
            for _ in range(config.perturbations - 1):
                err = errors[rng.integers(len(errors))]
                if rng.random() < 0.5:  # a mirrored error is as likely
                    err = err[list(FLIP_68)] * np.array([-1.0, 1.0])
                p = truth_frame + err * config.error_scale * rng.uniform(0.6, 1.4)
                turn, scale = rng.normal(0, 0.05), 1 + rng.normal(0, 0.03)
                rot = scale * np.array([[np.cos(turn), -np.sin(turn)],
                                        [np.sin(turn), np.cos(turn)]])
                centre = p.mean(0)
                p = (p - centre) @ rot.T + centre + rng.normal(0, 1.5, 2)
                owner.append(idx)
                true_of.append(v_truth)
                start_of.append(apply_affine(back, p))
    return all_images, np.asarray(owner), np.stack(true_of), np.stack(start_of)


def fit_refiner(images: Sequence[np.ndarray], truths: np.ndarray, starts: np.ndarray,
                config: RefinerConfig | None = None,
                progress: Callable[[str], None] | None = None,
                meta: dict | None = None) -> LandmarkRefiner:
    """Fit a refiner on faces (whole photos, grey or RGB), their true 68 points and the
    model's predictions for them (both image pixels)."""
    config = config or RefinerConfig()
    truths, starts = np.asarray(truths, np.float64), np.asarray(starts, np.float64)
    _check(images, truths, starts)
    mean_shape = mean_shape_of(truths, config)
    all_images, owner, true_of, current = training_samples(images, truths, starts, mean_shape,
                                                           config)
    refiner = LandmarkRefiner(mean_shape, [], config, dict(meta or {}))
    for k, cell in enumerate(config.cells):
        x = np.empty((len(owner), config.descriptor_size), np.float32)
        y = np.empty((len(owner), 2 * N_POINTS), np.float32)
        frames = []
        for i, (o, truth, cur) in enumerate(zip(owner, true_of, current, strict=True)):
            desc, to_frame, in_frame = shape_descriptor(all_images[o], cur, mean_shape, cell,
                                                        config)
            x[i] = desc
            y[i] = (apply_affine(to_frame, truth) - in_frame).ravel()
            frames.append((to_frame, in_frame))
        x_mean, y_mean = x.mean(0), y.mean(0)
        xc = x - x_mean
        gram = (xc.T @ xc).astype(np.float64)
        gram[np.diag_indices_from(gram)] += config.ridge * len(x)
        weight = np.linalg.solve(gram, (xc.T @ (y - y_mean)).astype(np.float64))
        stage = RefinerStage(cell, weight.astype(np.float32),
                             (y_mean - x_mean @ weight).astype(np.float32))
        refiner.stages.append(stage)
        moves = x @ stage.weight + stage.bias
        current = np.stack([apply_affine(invert_affine(m), f + mv.reshape(N_POINTS, 2))
                            for (m, f), mv in zip(frames, moves, strict=True)])
        if progress is not None:
            err = np.linalg.norm(current - true_of, axis=2).mean(1) / np.linalg.norm(
                true_of[:, EYE_CORNERS[0]] - true_of[:, EYE_CORNERS[1]], axis=1)
            progress(f"stage {k + 1}/{len(config.cells)} (cell {cell}): training NME "
                     f"{100 * err.mean():.2f} % over {len(owner)} starts")
    return refiner


def stage_errors(refiner: LandmarkRefiner, images: Sequence[np.ndarray], truths: np.ndarray,
                 starts: np.ndarray) -> list[np.ndarray]:
    """Per-face NME (outer-eye-corner normalised) of the starts and after each stage."""
    from facefuse.evaluation.metrics import nme_per_face

    truths, current = np.asarray(truths, np.float64), np.asarray(starts, np.float64).copy()
    _check(images, truths, current)
    out = [nme_per_face(current, truths)]
    for stage in refiner.stages:
        current = np.stack([refiner.step(img, c, stage) if refiner.usable_start(c) else c
                            for img, c in zip(images, current, strict=True)])
        out.append(nme_per_face(current, truths))
    return out
