"""Age calibration: the monotone map, its checks, ``facefuse model calibrate`` (and the
library behind it) that fits it into a checkpoint, and the decoding that applies it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import facefuse.lifecycle.calibrate as calibration
import facefuse.train.mtl as mtl
from facefuse.cli import main
from facefuse.config import load_config
from facefuse.inference.face_model import FaceModel
from facefuse.runtime.calibration import apply_monotone_map
from facefuse.train.calibration import fit_monotone_map
from tests.fakes import write_utkface
from tests.training import age_only_run, write_config


def test_map_undoes_a_shrinking_regressor() -> None:
    rng = np.random.default_rng(0)
    true = rng.uniform(1, 100, 3000)
    predicted = 0.7 * true + 10 + rng.normal(0, 1.0, true.shape)  # pulled towards the middle
    m = fit_monotone_map(predicted, true, knots=24)
    before = np.abs(predicted - true).mean()
    after = np.abs(apply_monotone_map(predicted, m) - true).mean()
    assert before > 8 and after < 2.5
    assert np.all(np.diff(m["x"]) > 0) and np.all(np.diff(m["y"]) >= 0)
    assert m["kind"] == "monotone" and m["rows"] == 3000
    # beyond the end knots the map keeps slope 1: shifted by that knot's offset, not clipped
    lo, hi = m["x"][0] - 5, m["x"][-1] + 7
    out = apply_monotone_map(np.array([lo, hi]), m)
    assert out[0] == pytest.approx(lo + m["y"][0] - m["x"][0])
    assert out[1] == pytest.approx(hi + m["y"][-1] - m["x"][-1])
    # order is kept: a larger prediction never maps to a smaller value
    grid = np.linspace(-20, 150, 500)
    assert np.all(np.diff(apply_monotone_map(grid, m)) >= -1e-9)


def test_map_of_an_unbiased_regressor_stays_near_identity() -> None:
    rng = np.random.default_rng(1)
    true = rng.uniform(0, 80, 2000)
    m = fit_monotone_map(true + rng.normal(0, 0.5, true.shape), true, knots=8)
    np.testing.assert_allclose(m["y"], m["x"], atol=1.0)


def test_pooling_makes_knots_non_decreasing_at_least_squared_error() -> None:
    from facefuse.train.calibration import pool_adjacent_violators

    np.testing.assert_allclose(pool_adjacent_violators([1, 3, 2, 4, 0, 5]),
                               [1, 2.25, 2.25, 2.25, 2.25, 5])
    np.testing.assert_allclose(pool_adjacent_violators([0, 1, 2]), [0, 1, 2])
    np.testing.assert_allclose(pool_adjacent_violators([3, 2, 1]), [2, 2, 2])


def test_bad_fits_and_maps_are_clear_errors() -> None:
    x = np.linspace(0, 50, 400)
    with pytest.raises(ValueError, match="one value per row"):
        fit_monotone_map(x, x[:-1])
    with pytest.raises(ValueError, match="finite"):
        fit_monotone_map(np.r_[x[:-1], np.nan], x)
    with pytest.raises(ValueError, match="too few"):
        fit_monotone_map(x[:100], x[:100], knots=24)
    with pytest.raises(ValueError, match="at least 2"):
        fit_monotone_map(x, x, knots=1)
    with pytest.raises(ValueError, match="unknown calibration kind"):
        apply_monotone_map(x, {"kind": "spline", "x": [0, 1], "y": [0, 1]})
    with pytest.raises(ValueError, match="increasing x"):
        apply_monotone_map(x, {"kind": "monotone", "x": [0, 1, 2], "y": [0, 2, 1]})
    with pytest.raises(ValueError, match="increasing x"):
        apply_monotone_map(x, {"kind": "monotone", "x": [0, 0, 2], "y": [0, 1, 2]})
    with pytest.raises(ValueError, match="needs its knots"):
        apply_monotone_map(x, {"kind": "monotone", "x": [0, 1]})


def test_calibrate_fits_the_checkpoint_and_the_model_decodes_through_it(tmp_path: Path) -> None:
    cfg = age_only_run(tmp_path, 500)
    cache, _ = mtl.training_cache(load_config(mtl.MTLConfig, cfg))
    ckpt = tmp_path / "run" / "final"
    plain = FaceModel.from_checkpoint(ckpt, flip=True)
    faces = [np.asarray(cache.images[i]) for i in cache.rows("test")[:5]]
    raw_age = [p["age"] for p in plain.predict(faces)]

    report = calibration.calibrate(ckpt, cache.path, knots=4, force=True)
    assert report["rows"] == int(cache.table.present("age")[cache.rows("val")].sum()) >= 40
    assert report["written"]
    stored = json.loads(ckpt.with_suffix(".json").read_text())["calibration"]["age"]
    assert stored["split"] == "val" and stored["flip"] is True and len(stored["x"]) >= 2

    calibrated = [p["age"] for p in FaceModel.from_checkpoint(ckpt, flip=True).predict(faces)]
    want = apply_monotone_map(np.array(raw_age), stored)
    np.testing.assert_allclose(calibrated, want, atol=0.02)
    assert not np.allclose(calibrated, raw_age, atol=0.5)

    # refitting ignores the stored map (raw head outputs), so it gives the same map again
    again = calibration.calibrate(ckpt, cache.path, knots=4, force=True)
    assert again["map"]["x"] == stored["x"] and again["map"]["y"] == stored["y"]

    # the measured before/after on the fitting split are the fit's own figures
    val, test = calibration.calibration_effect(ckpt, cache.path)
    assert (val["split"], test["split"]) == ("val", "test") and val["rows"] == report["rows"]
    assert val["all"] == pytest.approx((report["mae_before"], report["mae_after"]), abs=1e-6)
    true = cache.table.labels["age"][cache.rows("test")]
    true = true[cache.table.present("age")[cache.rows("test")]]
    assert test["rows"] == len(true)
    assert ("60 and over" in test) == bool((true >= 60).any())


def test_calibrate_keeps_a_map_that_does_not_help_out_of_the_checkpoint(tmp_path: Path,
                                                                   monkeypatch) -> None:
    cfg = age_only_run(tmp_path, 500)
    cache, _ = mtl.training_cache(load_config(mtl.MTLConfig, cfg))
    ckpt = tmp_path / "run" / "final"
    before = ckpt.with_suffix(".json").read_text()
    # a "fit" that maps every prediction 30 years too high can only raise the MAE
    def worse(p: np.ndarray, t: np.ndarray, k: int) -> dict:
        return {"kind": "monotone", "x": [0.0, 1.0], "y": [30.0, 31.0], "rows": len(p)}

    monkeypatch.setattr(calibration, "fit_monotone_map", worse)
    report = calibration.calibrate(ckpt, cache.path, knots=4)
    assert report["mae_after"] > report["mae_before"] and not report["written"]
    assert ckpt.with_suffix(".json").read_text() == before
    with pytest.raises(ValueError, match="carries no 'age' calibration"):
        calibration.calibration_effect(ckpt, cache.path)


def test_checkpoint_with_a_broken_calibration_fails_at_load(tmp_path: Path) -> None:
    age_only_run(tmp_path, 40)
    ckpt = tmp_path / "run" / "final"
    info = ckpt.with_suffix(".json")
    meta = json.loads(info.read_text())
    info.write_text(json.dumps({**meta, "calibration": {"age": {"kind": "monotone",
                                                                "x": [1, 0], "y": [0, 1]}}}))
    with pytest.raises(ValueError, match="increasing x"):
        FaceModel.from_checkpoint(ckpt)
    info.write_text(json.dumps({**meta, "calibration": {"gender": {"kind": "monotone",
                                                                   "x": [0, 1], "y": [0, 1]}}}))
    with pytest.raises(ValueError, match="no head for"):
        FaceModel.from_checkpoint(ckpt)


def test_command_writes_the_map_and_says_where(tmp_path: Path, capsys) -> None:
    cfg = age_only_run(tmp_path, 500)
    cache, _ = mtl.training_cache(load_config(mtl.MTLConfig, cfg))
    ckpt = tmp_path / "run" / "final"
    code = main(["model", "calibrate", str(ckpt), "--cache", str(cache.path), "--knots", "4",
                 "--force"])
    out = capsys.readouterr().out
    assert code == 0 and f"written to {ckpt.with_suffix('.json')}" in out
    stored = json.loads(ckpt.with_suffix(".json").read_text())["calibration"]["age"]
    assert stored["cache"] == cache.path.name and len(stored["x"]) >= 2
    assert not [f for f in ckpt.parent.iterdir() if f.name.endswith(".tmp")]


def test_command_reports_a_missing_checkpoint_or_cache_in_one_line(tmp_path: Path,
                                                                   capsys) -> None:
    age_only_run(tmp_path, 40)
    cache = next((tmp_path / "cache").iterdir())
    ckpt = tmp_path / "run" / "final"
    for argv, error in (([str(tmp_path / "nope"), "--cache", str(cache)], "no model at"),
                        ([str(ckpt), "--cache", str(tmp_path)], "not a complete")):
        assert main(["model", "calibrate", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("facefuse: ") and error in err and len(err.splitlines()) == 1


def test_cache_predictions_are_the_models_own_on_the_labelled_rows(tmp_path: Path) -> None:
    from facefuse.evaluation.cache_predictions import (
        cache_predictions,
        labelled_rows,
        raw_predictions,
    )

    write_utkface(tmp_path / "data", n=60)
    cfg = write_config(tmp_path, tmp_path / "data", "datasets: [utkface]\n"
                       "tasks: [age, gender]\nsampling: {utkface: 1.0}\noptim: {epochs: 1}\n")
    mtl.train_mtl(load_config(mtl.MTLConfig, cfg))
    cache, _ = mtl.training_cache(load_config(mtl.MTLConfig, cfg))
    model = FaceModel.from_checkpoint(tmp_path / "run" / "final", flip=True)
    rows = labelled_rows(cache, "val", ["age", "gender"])
    assert len(rows) and set(rows) <= set(cache.rows("val"))
    features, predicted = cache_predictions(model, cache, rows, ["age", "gender"], batch=7)
    faces = [np.asarray(cache.images[i]) for i in rows]
    own = model.predict(faces)
    assert features.shape == (len(rows), model.feature_dim)
    assert predicted["gender"].tolist() == [
        model.decoder.label_names["gender"].index(p["gender"]["label"]) for p in own]
    np.testing.assert_allclose(predicted["age"], [p["age"] for p in own], atol=0.02)
    age, true = raw_predictions(model, cache, "age", "val")
    np.testing.assert_allclose(age, predicted["age"][cache.table.present("age")[rows]])
    assert len(true) == len(age)
    with pytest.raises(ValueError, match="no test rows labelled with 'emotion'"):
        raw_predictions(model, cache, "emotion", "test")
