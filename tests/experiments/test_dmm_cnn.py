"""DMM-CNN parts on known values, and the ablation end to end on tiny fake data."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from facefuse.cli import main
from facefuse.experiments.dmm_cnn import DMMConfig, attribute_loss, model_spec
from facefuse.inference.attributes import AttributeLandmarkModel
from facefuse.models.heads import BranchedHead
from facefuse.tasks import CELEBA_ATTRIBUTES
from facefuse.train.losses import landmark_l1
from facefuse.train.thresholds import apply_thresholds, select_thresholds
from facefuse.train.weighting import DynamicWeightAverage, dwa_weights
from tests.fakes import write_300w, write_celeba
from tests.training import write_dmm_config


def test_branch_routing_by_group() -> None:
    groups = {"objective": [0, 3], "subjective": [1, 2, 4]}
    head = BranchedHead(8, 5, groups, {"subjective": [6, 6]})
    assert len(head.branches["subjective"]) == 5  # two hidden layers + output
    last = head.branches["objective"][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([7.0, -7.0]))
    out = head(torch.randn(4, 8))
    assert (out[:, 0] == 7.0).all() and (out[:, 3] == -7.0).all()
    assert not (out[:, [1, 2, 4]].abs() == 7.0).any()
    with pytest.raises(ValueError, match="cover outputs"):
        BranchedHead(8, 5, {"a": [0, 1]}, {})


def test_default_grouping_covers_all_40_and_spec_routes_them() -> None:
    cfg = DMMConfig()
    spec = model_spec(cfg, two_branches=True, landmarks=True)
    groups = spec.heads["attributes"].options["groups"]
    assert sorted(groups["objective"] + groups["subjective"]) == list(range(40))
    assert CELEBA_ATTRIBUTES.index("Eyeglasses") in groups["objective"]
    assert CELEBA_ATTRIBUTES.index("Attractive") in groups["subjective"]
    with pytest.raises(ValueError, match="each of the 40 attributes once"):
        DMMConfig(model=type(cfg.model)(objective=("Bald",), subjective=("Young",)))


def test_masked_losses_with_missing_labels() -> None:
    logits = torch.zeros(3, 40, requires_grad=True)
    target = torch.full((3, 40), -1)
    target[0, 5] = 1
    target[2, 7] = 0
    w = torch.ones(40)
    loss = attribute_loss(logits, target, w)
    assert loss.item() == pytest.approx(np.log(2.0), rel=1e-5)
    w2 = w.clone()
    w2[5] = 3.0
    assert attribute_loss(logits, target, w2).item() == pytest.approx(2 * np.log(2.0), rel=1e-5)
    assert attribute_loss(logits, torch.full((3, 40), -1), w).item() == 0.0
    pts = torch.full((2, 68, 2), float("nan"))
    pts[1] = 0.5
    out = torch.zeros(2, 136)
    assert landmark_l1(out, pts, torch.tensor([False, True])).item() == pytest.approx(0.5)


def test_weighting_update_on_a_known_history() -> None:
    names = ["a", "b", "c"]
    dyn = DynamicWeightAverage(names, temperature=1.0)
    dyn.end_epoch(dict(zip(names, [1.0, 1.0, 1.0], strict=True)))
    assert list(dyn.current().values()) == [1.0, 1.0, 1.0]
    dyn.end_epoch(dict(zip(names, [0.5, 1.0, 2.0], strict=True)))  # ratios 0.5, 1, 2
    w = np.array(list(dyn.current().values()))
    e = np.exp([0.5, 1.0, 2.0])
    np.testing.assert_allclose(w, 3 * e / e.sum())
    assert w.sum() == pytest.approx(3.0) and w[2] > w[1] > w[0]
    np.testing.assert_allclose(dwa_weights(np.ones(3), np.ones(3) * 2, 2.0), 1.0)
    # a ratio that cannot be formed (a loss missing or 0 before) counts 1
    np.testing.assert_allclose(dwa_weights(np.array([0.0, 1.0]), np.array([1.0, 1.0]), 1.0), 1.0)
    with pytest.raises(ValueError, match="not weighted"):
        dyn.end_epoch({"d": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        dyn.end_epoch({"a": -1.0})
    # the history travels in the state (a resumed run weighs as the uninterrupted one)
    back = DynamicWeightAverage(names, temperature=1.0)
    back.load_state_dict(dyn.state_dict())
    assert back.current() == dyn.current() and back.history == dyn.history


def test_threshold_selection_on_a_known_score_distribution() -> None:
    probs = np.array([[0.30, 0.9], [0.35, 0.8], [0.10, 0.7], [0.20, 0.1]])
    target = np.array([[1, 1], [1, 1], [0, 1], [0, 1]])
    thr = select_thresholds(probs, target)
    # attribute 0: any threshold in (0.20, 0.30] is perfect; the nearest to 0.5 is 0.30
    assert thr[0] == pytest.approx(0.30)
    assert thr[1] == 0.5  # one class only: left at 0.5
    assert apply_thresholds(probs, thr)[:, 0].tolist() == [1, 1, 0, 0]
    rare = np.array([[0.3], [0.1], [0.1], [0.1], [0.1], [0.12]])
    rare_t = np.array([[1], [0], [0], [0], [0], [0]])
    assert select_thresholds(rare, rare_t, "balanced_accuracy")[0] < 0.5
    with pytest.raises(ValueError, match="objective"):
        select_thresholds(probs, target, "f1")


@pytest.fixture(scope="module")
def ablation(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("dmm")
    write_celeba(tmp / "data", identities=12, per_identity=4)
    write_300w(tmp / "data", n=16)
    cfg = write_dmm_config(tmp, """seeds: [0, 1, 2]
image_size: 16
model: {trunk_options: {widths: [4, 8], feature_dim: 16}, objective_hidden: [8],
        subjective_hidden: [8, 8], landmark_hidden: [8]}
train: {optim: {epochs: 3}, batch_size: 16}
""")
    assert main(["experiment", str(cfg), "--quiet"]) == 0
    return tmp / "report"


def test_ablation_table_has_every_variant_and_seed(ablation: Path) -> None:
    for name in ("report.md", "ablation.csv", "ablation.md", "attributes.csv",
                 "attributes.png", "ced.png", "weights.png", "summary.json", "config.yaml"):
        assert (ablation / name).is_file(), name
    with (ablation / "ablation.csv").open() as f:
        rows = list(csv.DictReader(f))
    variants = {r["variant"] for r in rows}
    assert variants == {"full", "no_landmarks", "static_weights", "fixed_threshold",
                        "one_branch"}
    assert {r["seeds"] for r in rows if r["metric"] == "mean_accuracy"} == {"3"}
    nme = {r["variant"]: r for r in rows if r["metric"] == "nme"}
    assert "no_landmarks" not in nme and "full" in nme
    # the 0.5 variant reuses the full model's run: same landmarks, other thresholds
    assert nme["fixed_threshold"]["mean"] == nme["full"]["mean"]


def test_dynamic_weights_move_and_static_stay(ablation: Path) -> None:
    import json

    full = json.loads((ablation / "runs" / "full-seed0" / "result.json").read_text())
    static = json.loads((ablation / "runs" / "static_weights-seed0" / "result.json").read_text())
    assert full["history"][0]["weights"] == [1.0] * 40
    assert full["history"][2]["weights"] != [1.0] * 40
    assert all(h["weights"] == [1.0] * 40 for h in static["history"])


def test_checkpoint_loads_as_attribute_and_landmark_model(ablation: Path) -> None:
    model = AttributeLandmarkModel.from_checkpoint(ablation / "runs" / "full-seed0" / "model")
    faces = [np.full((40, 30, 3), 128, np.uint8), np.zeros((20, 20, 3), np.uint8)]
    preds = model.predict_attributes(faces)
    assert len(preds) == 2 and set(preds[0].attributes) == set(CELEBA_ATTRIBUTES)
    assert preds[0].landmarks.shape == (68, 2)
    assert all(0 <= s <= 1 for s in preds[0].scores.values())
    assert preds[0].to_dict()["landmarks"] is not None
    no_lm = AttributeLandmarkModel.from_checkpoint(
        ablation / "runs" / "no_landmarks-seed0" / "model")
    assert no_lm.predict_attributes(faces[:1])[0].landmarks is None
    assert model.predict_attributes([]) == []
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        model.predict_attributes([np.zeros((10, 10), np.uint8)])
