"""The Li and Zhu protocol end to end on tiny fake data (the paper's setting: one manifest
with identity, age, gender and race on the same images)."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest

import facefuse.experiments.li_zhu as li_zhu
from facefuse.cli import main
from facefuse.config import load_config
from facefuse.data.cache import TrainingCache
from facefuse.features.store import FeatureSet, extract_features
from facefuse.models.checkpoint import load_checkpoint
from tests.training import PEOPLE, tiny_config


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("lizhu")
    cfg = tiny_config(tmp)
    assert main(["experiment", str(cfg), "--quiet"]) == 0
    return cfg, tmp / "report"


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_report_files_and_columns(finished) -> None:
    _, out = finished
    for name in ("report.md", "cross_task.csv", "cross_task.md", "cross_task.png", "fusion.csv",
                 "fusion.md", "fusion.png", "summary.json", "config.yaml"):
        assert (out / name).is_file(), name
    cross = read_csv(out / "cross_task.csv")
    assert list(cross[0]) == ["source", "target", "metric", "mean", "std", "seeds", "per_seed",
                              "chance"]
    assert len(cross) == 4 * 5  # sources x targets
    assert {r["seeds"] for r in cross} == {"3"}
    fusion = read_csv(out / "fusion.csv")
    assert list(fusion[0]) == ["row", "target", "metric", "mean", "std", "gain_mean",
                               "gain_std", "seeds", "per_seed"]
    rows = {r["row"] for r in fusion}
    assert rows == {"own", "other", "all", "all:normalized_concat", "all:gated",
                    "all:attention", "all:bilinear", "all:source_dropout"}
    own = [r for r in fusion if r["row"] == "own"]
    assert all(float(r["gain_mean"]) == 0.0 for r in own)
    ages = [r for r in cross if r["target"] == "age"]
    assert {r["metric"] for r in ages} == {"mae"}
    md = (out / "fusion.md").read_text()
    assert "All (concat, paper)" in md and "chance" in md
    assert "Cross-task features" in (out / "report.md").read_text()


def test_resumed_experiment_redoes_no_cell(finished, monkeypatch) -> None:
    cfg, out = finished
    before = (out / "cross_task.csv").read_text()

    def forbidden(*a, **k):
        raise AssertionError("a finished cell or model was computed again")

    monkeypatch.setattr(li_zhu, "fit_probe", forbidden)
    monkeypatch.setattr(li_zhu, "fit", forbidden)
    assert main(["experiment", str(cfg), "--quiet"]) == 0
    assert (out / "cross_task.csv").read_text() == before


def test_frozen_extractor_is_unchanged_by_cross_task_training(finished) -> None:
    cfg, out = finished
    weights = out / "models" / "gender-seed0.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    for cell in (out / "cells").rglob("*gender*seed0.json"):
        cell.unlink()
    assert main(["experiment", str(cfg), "--quiet"]) == 0  # heads trained again
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == digest
    config = load_config(li_zhu.LiZhuConfig, cfg)
    cache_dir = next(p for p in Path(config.cache_dir).iterdir() if (p / "meta.json").exists())
    cache = TrainingCache.open(cache_dir)
    model = load_checkpoint(weights).model
    fresh = extract_features(model, cache, cache.rows(), "gender")
    stored = FeatureSet.load(out / "features" / "gender-seed0.safetensors")
    np.testing.assert_allclose(stored.rows_for(fresh.sample_ids), fresh.features, atol=1e-5)


def test_identity_is_closed_set_every_person_in_every_split(finished) -> None:
    import json

    _, out = finished
    data = json.loads((out / "summary.json").read_text())["data"]
    assert data["identity_classes"] == PEOPLE
    assert all(v > 0 for v in data["targets"]["identity"].values())


def test_bad_experiment_configs(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kind: li_zhu\nsources: [identity, height]\n")
    assert main(["experiment", str(cfg)]) == 2
    assert "unknown target 'height'" in capsys.readouterr().err
    cfg.write_text("kind: nonsense\n")
    assert main(["experiment", str(cfg)]) == 2
    assert "unknown experiment 'nonsense'" in capsys.readouterr().err
    cfg.write_text("seeds: [0]\n")
    assert main(["experiment", str(cfg)]) == 2
    assert "needs a 'kind' field" in capsys.readouterr().err
    assert main(["experiment", str(tmp_path / "missing.yaml")]) == 2
    cfg.write_text("kind: li_zhu\nfusion_methods: [gated]\n")
    assert main(["experiment", str(cfg)]) == 2
    assert "must include 'concat'" in capsys.readouterr().err
