from __future__ import annotations

import numpy as np
import pytest
import torch

from facefuse.features.fusion import FUSIONS, FusionHead
from facefuse.features.probe import ProbeConfig, fit_probe
from facefuse.features.store import FeatureSet
from facefuse.tasks import get_task

DIMS = [200, 50, 50, 50]  # the paper's four sources: 350-d concatenated


def sources(n: int = 8) -> list[torch.Tensor]:
    return [torch.randn(n, d) for d in DIMS]


def test_concat_is_350_d_like_the_paper() -> None:
    head = FusionHead("concat", DIMS, 5)
    assert head.fusion.out_dim == 350
    assert head.head.net[0].in_features == 350


@pytest.mark.parametrize("method", FUSIONS.names())
def test_every_method_shapes_and_gradients(method: str) -> None:
    head = FusionHead(method, DIMS, 3)
    out = head(sources())
    assert out.shape == (8, 3) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="source widths"):
        head([torch.randn(8, 10)])


def test_source_dropout_only_in_training() -> None:
    head = FusionHead("source_dropout", DIMS, 3)
    xs = sources()
    head.eval()
    torch.testing.assert_close(head.fusion(xs), torch.cat(xs, 1))
    head.train()
    dropped = head.fusion(xs)
    zero_blocks = sum(int((dropped[:, a:a + d] == 0).all(1).sum())
                      for a, d in zip(np.cumsum([0] + DIMS[:-1]), DIMS, strict=True))
    assert zero_blocks > 0


def test_gates_and_attention_weights_are_per_sample_distributions() -> None:
    gated = FusionHead("gated", DIMS, 2).fusion
    g = gated.gates(sources())
    assert g.shape == (8, 4) and ((g > 0) & (g < 1)).all()
    att = FusionHead("attention", DIMS, 2).fusion
    w = att.weights(sources())
    torch.testing.assert_close(w.sum(1), torch.ones(8))


def test_probe_uses_the_informative_source() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 600)
    informative = (y[:, None] * 2.0 - 1) + rng.normal(0, 0.5, (600, 4))
    noise = rng.normal(0, 1, (600, 6))
    task = get_task("gender")
    split = [slice(0, 400), slice(400, 500), slice(500, 600)]
    xs = [[informative[s], noise[s]] for s in split]
    r = fit_probe(task, "concat", xs[0], y[split[0]], xs[1], y[split[1]], xs[2], y[split[2]],
                  ProbeConfig(epochs=10), seed=0)
    assert r.test["accuracy"] > 0.9
    r_noise = fit_probe(task, "concat", [noise[split[0]]], y[split[0]], [noise[split[1]]],
                        y[split[1]], [noise[split[2]]], y[split[2]], ProbeConfig(epochs=5))
    assert r_noise.test["accuracy"] < 0.75


def test_feature_store_round_trip(tmp_path) -> None:
    fs = FeatureSet(np.array(["a", "b", "c"], dtype=object),
                    np.arange(6, dtype=np.float32).reshape(3, 2), "gender-seed0")
    fs.save(tmp_path / "f.safetensors")
    back = FeatureSet.load(tmp_path / "f.safetensors")
    np.testing.assert_array_equal(back.rows_for(["c", "a"]), [[4, 5], [0, 1]])
    assert back.source == "gender-seed0" and back.dim == 2
    with pytest.raises(KeyError, match="no gender-seed0 features for sample 'z'"):
        back.rows_for(["z"])


def test_feature_scaler_survives_units_dead_on_train() -> None:
    from facefuse.features.probe import FeatureScaler

    train = np.zeros((50, 3), np.float32)
    train[:, 0] = np.linspace(0, 1, 50)  # a live unit; units 1 and 2 never fire on train
    sc = FeatureScaler.fit(train)
    test = np.array([[0.5, 3.0, 1000.0]], np.float32)
    z = sc.transform(test)
    assert z[0, 0] == pytest.approx(0.0, abs=1e-5)
    assert z[0, 1] == 0.0 and z[0, 2] == 0.0  # dead units ignored, not divided by ~0
    assert np.abs(sc.transform(np.array([[1e6, 0, 0]], np.float32))).max() == 10.0
