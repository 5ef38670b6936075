"""benchmarks/tta_scan.py: its main view is the analyzer's own crop, its scores are the
analyzer's on the same photos, and its other views move the crop as named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facefuse.detection.detectors import square_around, square_crop
from tests.scripts import load_script


def _scan():
    return load_script("benchmarks/tta_scan.py")


def test_views_are_the_analyzers_crop_moved() -> None:
    scan = _scan()
    rgb = np.random.default_rng(0).integers(0, 255, (120, 100, 3), dtype=np.uint8)
    box = (20.0, 30.0, 70.0, 90.0)
    np.testing.assert_array_equal(scan.view_crop(rgb, box, 0.2, 0, 0, 0, 48),
                                  square_crop(rgb, box, 0.2, 48))
    side = square_around(box, 0.2)[2]
    moved = tuple(v + 0.04 * side * (k % 2 == 0) for k, v in enumerate(box))
    np.testing.assert_array_equal(scan.view_crop(rgb, box, 0.2, 0.04, 0, 0, 48),
                                  square_crop(rgb, moved, 0.2, 48))
    assert not np.array_equal(scan.view_crop(rgb, box, 0.2, 0, 0, 6, 48),
                              square_crop(rgb, box, 0.2, 48))
    names = [v[0] for v in scan.VIEWS]
    assert names[0] == "m0.20" and all(set(c) <= set(names) for c in scan.COMBOS)


def test_scan_scores_match_the_analyzer(shared_data: Path, tmp_path: Path) -> None:
    scan = _scan()
    assert scan.main(["--split", "val", "--limit", "6", "--data", str(shared_data),
                      "--out", str(tmp_path)]) == 0
    views = dict(np.load(tmp_path / "views-val.npz"))
    assert views["age"].shape == (6, 1, len(scan.VIEWS))
    assert views["gender"].shape == (6, 1, len(scan.VIEWS), 2)
    from facefuse.data.readers import read_dataset
    from facefuse.inference.analyzer import FaceAnalyzer
    from facefuse.runtime.model_files import read_model_meta
    from facefuse.weights import shipped_model_path

    table = read_dataset("utkface", str(shared_data)).table
    analyzer = FaceAnalyzer(device="cpu", identity_heads=None)  # the scan scores the model
    ages = []
    for i in views["rows"]:
        faces = analyzer.analyze(str(table.image[i])).faces
        assert faces  # these photos hold a face; the scan's fallback is not exercised here
        ages.append(max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
                    .predictions["age"])
    calibration = read_model_meta(shipped_model_path())["calibration"]["age"]
    own = scan.score(views, ["m0.20"], 0, calibration)
    assert own["age_mae_calibrated"] == pytest.approx(
        np.abs(np.asarray(ages) - views["age_true"]).mean(), abs=0.01)
    report = (tmp_path / "scan-val.md").read_text()
    assert report.count("\n| 96 |") == len(scan.COMBOS)
    wider = scan.score(views, ["m0.20", "m0.15", "m0.25"], 0, calibration)
    assert wider["age_mae"] != own["age_mae"]


def test_a_rotated_view_repeats_the_border_instead_of_black_corners() -> None:
    scan = _scan()
    rgb = np.full((60, 60, 3), 200, np.uint8)  # the face fills the image, as UTKFace's do
    view = scan.view_crop(rgb, (5.0, 5.0, 55.0, 55.0), 0.2, 0, 0, 6, 48)
    assert view.min() == 200  # a black corner would be 0
