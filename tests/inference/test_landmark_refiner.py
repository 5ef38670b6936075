"""The cascaded landmark refiner: fitting moves points onto what the image shows, files
round-trip, bad input is refused, and the shipped refiner improves the shipped model's
points on real 300-W test faces."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from facefuse.cli import main
from facefuse.evaluation.metrics import nme_per_face
from facefuse.inference.analyzer import FaceAnalyzer
from facefuse.inference.landmark_refiner import LandmarkRefiner, RefinerConfig, similarity_to
from facefuse.train.landmark_refiner import fit_refiner, stage_errors
from facefuse.weights import shipped_refiner_path

SMALL = RefinerConfig(cells=(8, 5), grid=2, perturbations=4, ridge=0.01)


def _template() -> np.ndarray:
    """68 distinct points spread over a face-sized region, eye corners 36/45 apart."""
    rng = np.random.default_rng(7)
    pts = rng.uniform(-40, 40, (68, 2))
    pts[36], pts[45] = (-25, -10), (25, -10)
    return pts


def _blob_faces(n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Images whose 68 points are bright dots, their true points and noisy starts."""
    rng = np.random.default_rng(seed)
    base, images, truths = _template(), [], []
    for _ in range(n):
        a, s = rng.normal(0, 0.1), rng.uniform(0.9, 1.1)
        rot = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        pts = base @ rot.T + 80 + rng.normal(0, 4, 2)
        img = np.full((160, 160), 40, np.uint8)
        for x, y in pts:
            cv2.circle(img, (round(x), round(y)), 2, 230, -1, lineType=cv2.LINE_AA)
        images.append(img)
        truths.append(pts)
    truths = np.stack(truths)
    return images, truths, truths + rng.normal(0, 2.5, truths.shape)


@pytest.fixture(scope="module")
def blob_refiner() -> LandmarkRefiner:
    images, truths, starts = _blob_faces(150, seed=0)
    return fit_refiner(images, truths, starts, SMALL, meta={"trained_on": "dots"})


def test_fitted_stages_move_points_onto_the_dots(blob_refiner: LandmarkRefiner) -> None:
    images, truths, starts = _blob_faces(20, seed=1)  # faces it was not fitted on
    errors = [e.mean() for e in stage_errors(blob_refiner, images, truths, starts)]
    assert len(errors) == 1 + len(SMALL.cells)
    assert errors[-1] < 0.6 * errors[0], errors
    refined = blob_refiner.refine(images[0], starts[0])
    assert nme_per_face(refined[None], truths[:1])[0] == pytest.approx(
        stage_errors(blob_refiner, images[:1], truths[:1], starts[:1])[-1][0])


def test_refiner_files_round_trip(blob_refiner: LandmarkRefiner, tmp_path: Path) -> None:
    images, _, starts = _blob_faces(3, seed=2)
    weights = blob_refiner.save(tmp_path / "r")
    assert weights.name == "r.safetensors" and (tmp_path / "r.json").is_file()
    back = LandmarkRefiner.load(tmp_path / "r.json")
    assert back.config == SMALL and back.meta == {"trained_on": "dots"}
    for img, s in zip(images, starts, strict=True):  # stage weights are stored as float16
        np.testing.assert_allclose(back.refine(img, s), blob_refiner.refine(img, s), atol=0.05)


def test_bad_refiner_files_are_named(blob_refiner: LandmarkRefiner, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LandmarkRefiner.load(tmp_path / "missing")
    blob_refiner.save(tmp_path / "r")
    doc = json.loads((tmp_path / "r.json").read_text())
    (tmp_path / "r.json").write_text(json.dumps({**doc, "format": "other"}))
    with pytest.raises(ValueError, match="not a facefuse landmark refiner"):
        LandmarkRefiner.load(tmp_path / "r")
    (tmp_path / "r.json").write_text(json.dumps({**doc, "config": {**doc["config"],
                                                                   "cells": [8, 5, 3]}}))
    with pytest.raises(ValueError, match="missing tensor"):
        LandmarkRefiner.load(tmp_path / "r")
    (tmp_path / "r.json").write_text(json.dumps({**doc, "config": {**doc["config"], "x": 1}}))
    with pytest.raises(ValueError, match="refiner settings: unknown key.*'x'"):
        LandmarkRefiner.load(tmp_path / "r")
    (tmp_path / "r.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        LandmarkRefiner.load(tmp_path / "r")


@pytest.mark.parametrize("kwargs", [{"cells": ()}, {"cells": (4, 0)}, {"grid": 0},
                                    {"eye_distance": 200}, {"ridge": -1}])
def test_bad_settings_are_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        RefinerConfig(**kwargs)


def test_bad_points_and_faces(blob_refiner: LandmarkRefiner) -> None:
    images, truths, starts = _blob_faces(2, seed=3)
    with pytest.raises(ValueError, match="68 x 2"):
        blob_refiner.refine(images[0], starts[0][:5])
    same = np.full((68, 2), 50.0)  # no usable start: returned as it is
    np.testing.assert_array_equal(blob_refiner.refine(images[0], same), same)
    with pytest.raises(ValueError, match="coincide"):
        similarity_to(same, truths[0])
    with pytest.raises(ValueError, match="NaN"):
        fit_refiner(images, truths, np.full_like(starts, np.nan), SMALL)
    with pytest.raises(ValueError, match="x 68 x 2"):
        fit_refiner(images, truths[:1], starts[:1], SMALL)
    with pytest.raises(ValueError, match="HxW"):
        blob_refiner.refine(np.zeros((4, 4, 2), np.uint8), starts[0])


def test_stage_errors_keep_an_unusable_start_as_refine_does(
        blob_refiner: LandmarkRefiner) -> None:
    images, truths, starts = _blob_faces(2, seed=4)
    assert LandmarkRefiner.usable_start(starts[0])
    assert not LandmarkRefiner.usable_start(np.full((68, 2), 50.0))
    assert not LandmarkRefiner.usable_start(np.where(np.eye(68, 2) > 0, np.nan, starts[0]))
    starts[1] = 50.0  # collapsed: every stage leaves it, so its error never moves
    errors = stage_errors(blob_refiner, images, truths, starts)
    assert len({float(e[1]) for e in errors}) == 1
    assert errors[-1][0] < errors[0][0]  # the usable start is refined
    assert errors[-1][1] == pytest.approx(nme_per_face(
        blob_refiner.refine(images[1], starts[1])[None], truths[1:])[0])


def test_shipped_refiner_improves_the_shipped_models_points(shared_data: Path) -> None:
    from facefuse.data.readers import read_dataset

    table = read_dataset("300w", shared_data).table
    rows = np.flatnonzero(table.split == "test")[:16]
    refined, raw = FaceAnalyzer(device="cpu"), FaceAnalyzer(device="cpu",
                                                          landmark_refiner=None)
    assert refined.refiner is not None and raw.refiner is None
    assert shipped_refiner_path().with_suffix(".safetensors").stat().st_size < 8 * 2**20
    got = {"refined": [], "raw": []}
    for r in rows:
        for name, a in (("refined", refined), ("raw", raw)):
            faces = a.analyze(table.image[r]).faces
            got[name].append(max(faces, key=lambda f: f.score).landmarks)
    truth = table.labels["landmarks"][rows]
    nme = {k: nme_per_face(np.asarray(v), truth).mean() for k, v in got.items()}
    assert nme["refined"] < 0.85 * nme["raw"], nme


def test_analyze_cli_refiner_choice(tmp_path: Path, capsys, blob_refiner) -> None:
    assert main(["analyze", "--quiet", "--landmark-refiner", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    runs = {}
    blob_refiner.save(tmp_path / "dots")
    for choice in ("shipped", "none", str(tmp_path / "dots")):
        assert main(["analyze", "--quiet", "--landmark-refiner", choice]) == 0
        runs[choice] = json.loads(capsys.readouterr().out.strip())["faces"][0]["landmarks"]
    assert runs["shipped"] != runs["none"] != runs[str(tmp_path / "dots")]


def test_fit_landmarks_cli_on_fake_300w(fake_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ref"
    assert main(["fit-landmarks", str(fake_root), "--out", str(out), "--quiet",
                 "--cells", "8", "--grid", "2", "--perturbations", "2"]) == 0
    assert "NME" in capsys.readouterr().out
    back = LandmarkRefiner.load(out)
    assert back.config.cells == (8,) and "nme_by_stage" in back.meta
    assert main(["fit-landmarks", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert main(["fit-landmarks", str(fake_root), "--out", str(out), "--cells", "0"]) == 2


def test_analyzer_refuses_a_refiner_of_the_wrong_kind(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="landmark_refiner"):
        FaceAnalyzer(device="cpu", landmark_refiner=3)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FaceAnalyzer(device="cpu", landmark_refiner=tmp_path / "absent")
