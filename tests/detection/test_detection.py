"""Face detectors: MTCNN on real faces, box calibration, optional dlib, bad input."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from facefuse.data.images import load_rgb
from facefuse.detection.detectors import (
    DETECTORS,
    Detection,
    build_detector,
    landmark_box,
    square_crop,
)
from facefuse.detection.mtcnn import MTCNN


@pytest.fixture(scope="module")
def mtcnn():
    return build_detector("mtcnn")


def _face_and_points(shared_data: Path, index: int) -> tuple[np.ndarray, np.ndarray]:
    from facefuse.data.readers import read_dataset

    t = read_dataset("300w", shared_data).table
    return load_rgb(t.image[index]), t.labels["landmarks"][index]


@pytest.mark.parametrize("index", [0, 400, 900])
def test_mtcnn_finds_real_300w_faces_with_five_points(mtcnn, shared_data, index) -> None:
    rgb, pts = _face_and_points(shared_data, index)
    found = mtcnn.detect(rgb)
    assert found, "MTCNN found no face in a 300-W photo"
    best = found[0]
    assert 0.9 <= best.score <= 1.0
    cx, cy = pts[:, 0].mean(), pts[:, 1].mean()
    assert best.box[0] < cx < best.box[2] and best.box[1] < cy < best.box[3]
    five = best.landmarks
    assert five.shape == (5, 2)
    left_eye, right_eye = pts[36:42].mean(0), pts[42:48].mean(0)
    iod = np.linalg.norm(pts[36] - pts[45])
    # eyes land on the annotated eyes (within a third of the eye distance), in order
    assert np.linalg.norm(five[0] - left_eye) < iod / 3
    assert np.linalg.norm(five[1] - right_eye) < iod / 3
    assert five[:2, 1].max() < five[3:, 1].min()  # eyes above the mouth corners


def test_mtcnn_finds_nothing_on_flat_or_noise_images(mtcnn) -> None:
    assert mtcnn.detect(np.full((120, 160, 3), 128, np.uint8)) == []
    assert mtcnn.detect(np.zeros((10, 10, 3), np.uint8)) == []  # smaller than a window


def test_mtcnn_finds_several_faces(mtcnn, shared_data) -> None:
    faces = [_face_and_points(shared_data, i)[0] for i in (0, 400)]
    canvas = np.concatenate([f[:192, :192] for f in faces], axis=1)
    found = mtcnn.detect(canvas)
    centres = sorted((d.box[0] + d.box[2]) / 2 for d in found)
    assert len(found) >= 2 and centres[0] < 192 < centres[-1]


def test_detector_bad_input_and_options(tmp_path) -> None:
    det = build_detector("mtcnn")
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        det.detect(np.zeros((50, 50), np.uint8))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        det.detect(np.zeros((50, 50, 3), np.float32))
    with pytest.raises(ValueError, match="at least 12"):
        MTCNN(min_size=8)
    with pytest.raises(ValueError, match="scale_factor"):
        MTCNN(scale_factor=1.2)
    with pytest.raises(FileNotFoundError, match="pnet.onnx"):
        MTCNN(weights=tmp_path)


def test_landmark_box_inverts_the_calibration() -> None:
    face = (100.0, 50.0, 180.0, 150.0)  # the 68-point box
    rw, rh, dx, dy = 0.96, 1.28, -0.02, -0.17
    w, h = (face[2] - face[0]) * rw, (face[3] - face[1]) * rh
    cx = (face[0] + face[2]) / 2 + dx * (face[2] - face[0])
    cy = (face[1] + face[3]) / 2 + dy * (face[3] - face[1])
    detector_box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    assert np.allclose(landmark_box(detector_box, (rw, rh, dx, dy)), face)
    assert landmark_box(face, (1.0, 1.0, 0.0, 0.0)) == face


def test_full_frame_crop_at_the_training_margin_is_the_whole_image() -> None:
    det = build_detector("full_frame")
    rgb = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    d = det.detect(rgb)[0]
    crop = square_crop(rgb, det.face_box(d), 0.2, 40)
    assert np.array_equal(crop, rgb)


def test_every_registered_detector_has_a_sane_calibration() -> None:
    for name in DETECTORS.names():
        rw, rh, dx, dy = DETECTORS.get(name).box_calibration
        assert 0.5 < rw < 2 and 0.5 < rh < 2 and abs(dx) < 0.5 and abs(dy) < 0.5, name


@pytest.mark.skipif(importlib.util.find_spec("dlib") is not None, reason="dlib installed")
def test_dlib_hog_without_dlib_says_how_to_install() -> None:
    with pytest.raises(ImportError, match="pip install dlib-bin"):
        build_detector("dlib_hog")


@pytest.mark.skipif(importlib.util.find_spec("dlib") is None, reason="dlib not installed")
def test_dlib_hog_finds_a_real_face(shared_data) -> None:
    rgb, pts = _face_and_points(shared_data, 0)
    found = build_detector("dlib_hog").detect(rgb)
    assert found and isinstance(found[0], Detection)
    assert found[0].box[0] < pts[:, 0].mean() < found[0].box[2]
