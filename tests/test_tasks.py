from __future__ import annotations

import numpy as np
import pytest
import torch

from facefuse.evaluation.metrics import (
    METRICS,
    balanced_accuracy,
    failure_rate,
    mean_balanced_accuracy,
    nme_inter_ocular,
    per_attribute_balanced_accuracy,
)
from facefuse.registry import Registry
from facefuse.tasks import (
    CELEBA_ATTRIBUTES,
    TASK_ORDER,
    TASKS,
    TaskKind,
    age_group,
    five_points_from_68,
    get_task,
)
from facefuse.train.losses import LOSSES


def test_every_task_names_a_real_loss_and_metrics() -> None:
    assert set(TASKS.names()) == set(TASK_ORDER)
    for name in TASKS:
        task = get_task(name)
        assert task.loss in LOSSES
        assert task.metrics and all(m in METRICS for m in task.metrics)


def test_task_shapes() -> None:
    assert get_task("attributes").num_outputs == 40 == len(CELEBA_ATTRIBUTES)
    assert get_task("landmarks").num_outputs == 136
    assert get_task("landmarks").label_shape == (68, 2)
    assert get_task("age").kind is TaskKind.REGRESSION and get_task("age").num_outputs == 1
    assert get_task("emotion").num_outputs == 7 and get_task("race").num_outputs == 5


def test_registry_refuses_duplicates_and_lists_names() -> None:
    reg: Registry[int] = Registry("widget")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("a", 2)
    with pytest.raises(KeyError, match="unknown widget 'b'; valid names: a"):
        reg.get("b")
    with pytest.raises(KeyError, match="valid names: age, attributes"):
        get_task("agee")


def test_is_present_per_kind() -> None:
    att = np.full((3, 40), -1, np.int8)
    att[1, 5] = 0
    assert list(get_task("attributes").is_present(att)) == [False, True, False]
    pts = np.full((2, 68, 2), np.nan, np.float32)
    pts[0] = 1
    assert list(get_task("landmarks").is_present(pts)) == [True, False]
    assert list(get_task("identity").is_present(np.array(["x", ""], object))) == [True, False]


def test_five_points_and_age_groups() -> None:
    pts = np.zeros((68, 2), np.float32)
    pts[36:42] = (10, 20)
    pts[42:48] = (30, 20)
    pts[30] = (20, 30)
    pts[48], pts[54] = (12, 40), (28, 40)
    five = five_points_from_68(pts)
    np.testing.assert_allclose(five, [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])
    with pytest.raises(ValueError, match="68, 2"):
        five_points_from_68(np.zeros((5, 2)))
    assert list(age_group(np.array([3, 18, 59, 60, np.nan]))) == [0, 1, 1, 2, -1]


def test_losses_mask_missing_labels() -> None:
    logits = torch.randn(4, 7, requires_grad=True)
    target = torch.tensor([1, -1, 3, -1])
    mask = target >= 0
    loss = LOSSES.get("cross_entropy")(logits, target, mask)
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], target[[0, 2]])
    assert torch.allclose(loss, expected)
    none = LOSSES.get("cross_entropy")(logits, target, torch.zeros(4, dtype=torch.bool))
    assert none.item() == 0.0 and none.requires_grad
    att = torch.tensor([[1, -1], [0, 1]])
    out = torch.zeros(2, 2, requires_grad=True)
    bce = LOSSES.get("binary_cross_entropy")(out, att, torch.tensor([True, True]))
    assert torch.isclose(bce, torch.tensor(np.log(2.0), dtype=torch.float32))
    pts = torch.tensor([[[0.5, np.nan]], [[1.0, 1.0]]])
    lm = LOSSES.get("landmark_l1")(torch.zeros(2, 2), pts, torch.tensor([True, False]))
    assert torch.isclose(lm, torch.tensor(0.5))


def test_metrics_on_known_values() -> None:
    assert balanced_accuracy(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 1])) == 1.0
    assert balanced_accuracy(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 1])) == 0.5
    pred = np.array([[1, 0], [1, 1]])
    tgt = np.array([[1, -1], [0, 1]])
    # attribute 0: TPR 1, TNR 0 -> 0.5; attribute 1 has no negatives -> undefined, left out
    assert np.isnan(per_attribute_balanced_accuracy(pred, tgt)[1])
    assert mean_balanced_accuracy(pred, tgt) == pytest.approx(0.5)
    target = np.zeros((2, 68, 2))
    target[:, 36] = (0, 0)
    target[:, 45] = (10, 0)
    prediction = target + np.array([0.5, 0.0])  # every point off by 0.5 = 0.05 IOD
    assert nme_inter_ocular(prediction, target) == pytest.approx(0.05)
    prediction[1] += 1.0
    assert failure_rate(prediction, target) == 0.5
    with pytest.raises(ValueError, match="no labelled samples"):
        METRICS.get("accuracy")(np.array([]), np.array([]))


def test_masked_losses_equal_the_labelled_rows_alone_and_ignore_the_rest() -> None:
    """Losses weight unlabelled rows by 0 instead of dropping them (no host sync): the value
    must be the labelled rows' own loss, and garbage in unlabelled rows (NaN, -1) must not
    reach the value or the gradients."""
    import torch.nn.functional as F

    from facefuse.models.margin import margin_loss

    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([True, False, True, True, False])
    logits = torch.randn(5, 4, generator=g, requires_grad=True)
    classes = torch.tensor([1, -1, 3, 0, -1])
    ce = LOSSES.get("cross_entropy")(logits, classes, mask)
    assert ce.item() == pytest.approx(F.cross_entropy(logits[mask], classes[mask]).item())
    ce.backward()
    assert (logits.grad[~mask] == 0).all() and (logits.grad[mask] != 0).any()
    age = torch.randn(5, 1, generator=g, requires_grad=True)
    target = torch.tensor([0.2, float("nan"), 0.5, 0.1, float("nan")])
    l1 = LOSSES.get("l1")(age, target, mask)
    assert torch.isfinite(l1) and l1.item() == pytest.approx(
        (age[mask, 0] - target[mask]).abs().mean().item())
    l1.backward()
    assert torch.isfinite(age.grad).all() and (age.grad[~mask] == 0).all()
    pts = torch.rand(5, 68, 2, generator=g)
    pts[0, :10] = float("nan")  # a face with some points missing
    out = torch.rand(5, 136, generator=g, requires_grad=True)
    lm = LOSSES.get("landmark_l1")(out, pts, mask)
    keep = ~torch.isnan(pts.reshape(5, -1)) & mask[:, None]
    assert lm.item() == pytest.approx((out[keep] - pts.reshape(5, -1)[keep]).abs().mean().item())
    lm.backward()
    assert torch.isfinite(out.grad).all() and (out.grad[~keep] == 0).all()
    for kind in ("arcface", "cosface"):
        cos_logits = (torch.rand(5, 6, generator=g) * 2 - 1) * 30
        cos_logits.requires_grad_(True)
        ids = torch.tensor([2, -1, 5, 0, -1])
        full = margin_loss(kind)(cos_logits, ids, mask)
        alone = margin_loss(kind)(cos_logits[mask], ids[mask], torch.ones(3, dtype=torch.bool))
        assert full.item() == pytest.approx(alone.item(), rel=1e-5)
        full.backward()
        assert (cos_logits.grad[~mask] == 0).all()
        none = margin_loss(kind)(cos_logits, ids, torch.zeros(5, dtype=torch.bool))
        assert none.item() == 0.0 and none.requires_grad
