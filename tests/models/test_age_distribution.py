"""The age-distribution head (DLDL-v2): head, loss, config, fine-tuning onto it, inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import facefuse.train.mtl as mtl
from facefuse.config import load_config
from facefuse.inference.face_model import FaceModel
from facefuse.models.checkpoint import load_checkpoint
from facefuse.models.heads import HEADS, DistributionHead
from facefuse.train.losses import LOSSES, distribution_l1, l1
from tests.training import trained_start, write_config


def test_head_outputs_the_expectation_then_the_logits() -> None:
    torch.manual_seed(0)
    head = HEADS.get("distribution")(8, 5)
    assert isinstance(head, DistributionHead)
    out = head(torch.randn(3, 8))
    assert out.shape == (3, 6)
    probs = torch.softmax(out[:, 1:], dim=1)
    torch.testing.assert_close(out[:, 0], probs @ torch.linspace(0, 1, 5))
    # a head sure of the last bin predicts the top of the range
    with torch.no_grad():
        head.net[-1].weight.zero_()
        head.net[-1].bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 50.0]))
    torch.testing.assert_close(head(torch.randn(2, 8))[:, 0], torch.ones(2))
    with pytest.raises(ValueError, match="at least 2 bins"):
        HEADS.get("distribution")(8, 1)
    with pytest.raises(ValueError, match="no options"):
        HEADS.get("distribution")(8, 5, bins=3)


def test_loss_is_lowest_at_the_true_value_and_masks_rows() -> None:
    assert LOSSES.get("distribution_l1") is distribution_l1
    bins = 117
    centres = torch.linspace(0, 1, bins)
    target = torch.tensor([30 / 116, 70 / 116])
    mask = torch.tensor([True, True])

    def peaked(at: torch.Tensor) -> torch.Tensor:  # logits of a narrow bump, and its mean
        logits = -0.5 * ((centres[None] - at[:, None]) / (2 / 116)) ** 2
        return torch.cat([(torch.softmax(logits, 1) @ centres)[:, None], logits], dim=1)

    right = distribution_l1(peaked(target), target, mask)
    wrong = distribution_l1(peaked(target + 10 / 116), target, mask)
    assert right < wrong
    # at the right answer its expectation term is ~0 and the cross-entropy term small: the
    # sum stays on the plain L1 loss's scale (task weights keep their meaning)
    off = peaked(target + 10 / 116)
    assert wrong < 3 * l1(off[:, :1], target, mask) + 0.1
    # a row without a label (NaN target) changes nothing and gets no gradient
    out = off.clone().requires_grad_(True)
    both = distribution_l1(out, torch.tensor([target[0].item(), float("nan")]),
                           torch.tensor([True, False]))
    torch.testing.assert_close(both, distribution_l1(off[:1], target[:1], mask[:1]))
    both.backward()
    assert out.grad[1].abs().sum() == 0 and out.grad[0].abs().sum() > 0
    with pytest.raises(ValueError, match="1 \\+ bins"):
        distribution_l1(torch.zeros(2, 1), target, mask)


def test_config_builds_the_head_and_refuses_unknown_kinds() -> None:
    spec = mtl.model_spec(mtl.MTLConfig(tasks=("age", "gender"), age_head="distribution"), 1)
    assert spec.heads["age"].kind == "distribution" and spec.heads["age"].outputs == 117
    assert mtl.model_spec(mtl.MTLConfig(tasks=("age",)), 1).heads["age"].kind == "mlp"
    with pytest.raises(ValueError, match="age_head must be one of"):
        mtl.MTLConfig(age_head="histogram")


def test_fine_tune_onto_a_distribution_head_keeps_the_rest(fake_root: Path,
                                                           tmp_path: Path) -> None:
    source = trained_start(tmp_path, fake_root, "[age, gender]")
    start = load_checkpoint(source).model.state_dict()
    tuned = write_config(tmp_path, fake_root, f"tasks: [age, gender]\nage_head: distribution\n"
                         f"optim: {{epochs: 1}}\ninit_from: {source}\n")
    trainer = mtl.MTLTrainer(load_config(mtl.MTLConfig, tuned))
    own = trainer.model.state_dict()
    for k, v in own.items():  # every weight from the start but the new age head's
        if not k.startswith("heads.age."):
            torch.testing.assert_close(v, start[k])
    assert own["heads.age.net.0.weight"].shape == (117, start["heads.age.net.0.weight"].shape[1])
    trainer.run()
    # the trained checkpoint loads with its head and predicts ages in years
    model = FaceModel.from_checkpoint(tmp_path / "run" / "final", flip=True)
    assert model.meta["spec"]["heads"]["age"]["kind"] == "distribution"
    faces = [np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8)
             for i in range(3)]
    ages = [p["age"] for p in model.predict(faces)]
    assert all(0 <= a <= 116 for a in ages)
    features, outputs = model.raw(faces)
    assert outputs["age"].shape == (3, 118)
    np.testing.assert_allclose(ages, model.regression_values("age", outputs["age"]), atol=0.01)
    # ONNX: the same (N, 1 + bins) output, to float tolerance
    pytest.importorskip("onnxruntime")
    from facefuse.models.onnx_export import export_onnx, onnx_parity

    export_onnx(tmp_path / "run" / "final", tmp_path / "m.onnx")
    diffs = onnx_parity(tmp_path / "run" / "final", tmp_path / "m.onnx", batch=3)
    assert "age" in diffs and max(diffs.values()) < 1e-4
