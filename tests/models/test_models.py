from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facefuse.models import TRUNKS
from facefuse.models.checkpoint import load_checkpoint, save_checkpoint
from facefuse.models.multitask import HeadSpec, ModelSpec, build_model
from facefuse.models.paper_cnn import LiZhuCNN
from facefuse.models.trunks import build_trunk
from facefuse.tasks import Task, TaskKind
from facefuse.train.loop import OptimConfig, decode, evaluate
from facefuse.train.supervised import fit

# dlib's network shrinks its input by floor at five unpadded stride-2 layers: it needs more
# than 32 px (its native size is 150)
INPUT_SIZE = {"dlib_resnet": 150}


@pytest.mark.parametrize("name", TRUNKS.names())
def test_every_trunk_meets_the_contract_and_trains(name: str) -> None:
    size = INPUT_SIZE.get(name, 32)
    trunk = build_trunk(name, image_size=size) if name != "lizhu_cnn" else \
        build_trunk(name, image_size=size, channels=(4, 8, 8))
    x = torch.randn(3, 3, size, size)
    f = trunk.forward_features(x)
    assert f.shape == (3, trunk.feature_dim) and torch.isfinite(f).all()
    f.sum().backward()
    assert all(p.grad is not None for p in trunk.parameters())


def test_paper_cnn_layers_and_bad_input() -> None:
    cnn = LiZhuCNN(image_size=48, channels=(8, 16, 32), feature_dim=200)
    convs = [m for m in cnn.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(5, 5), (5, 5), (3, 3)]
    assert cnn.forward_features(torch.zeros(2, 3, 48, 48)).shape == (2, 200)
    with pytest.raises(ValueError, match="built for 48px"):
        cnn.forward_features(torch.zeros(1, 3, 64, 64))
    fixed = LiZhuCNN(image_size=32, init_std=0.01)
    w = fixed.conv[0].weight.detach()
    assert abs(float(w.std()) - 0.01) < 0.003 and abs(float(w.mean())) < 0.003


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    spec = ModelSpec("tiny_cnn", {"image_size": 32}, {"gender": HeadSpec(2),
                                                       "age": HeadSpec(1, (8,))})
    model = build_model(spec).eval()
    save_checkpoint(model, tmp_path / "m", tasks={"gender": ["male", "female"]}, input_size=32)
    assert (tmp_path / "m.safetensors").is_file() and (tmp_path / "m.json").is_file()
    loaded = load_checkpoint(tmp_path / "m.safetensors")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = model(x), loaded.model(x)
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    assert loaded.meta["tasks"]["gender"] == ["male", "female"]
    (tmp_path / "m.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a facefuse checkpoint"):
        load_checkpoint(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing")


def test_decode_per_kind() -> None:
    out = torch.tensor([[0.1, 2.0], [3.0, -1.0]])
    assert decode("gender", out).tolist() == [1, 0]
    assert decode("attributes", out).tolist() == [[1, 1], [1, 0]]
    np.testing.assert_allclose(decode("age", torch.tensor([[0.5]])), [58.0])


def test_fit_learns_a_separable_task() -> None:
    """Bright vs dark images: the loop must get well above chance."""
    from facefuse.data.loader import Batch

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (256,), generator=g)
    x = torch.randn(256, 3, 32, 32, generator=g) * 0.3 + (y.float() * 2 - 1).view(-1, 1, 1, 1)
    task = Task("bright", TaskKind.CLASSIFICATION, ("dark", "bright"), "cross_entropy",
                ("accuracy",))

    def batches():
        for i in range(0, 256, 32):
            yield Batch(x[i:i + 32], {"bright": y[i:i + 32]},
                        {"bright": torch.ones(len(y[i:i + 32]), dtype=torch.bool)},
                        np.arange(i, min(i + 32, 256)))

    class Reiterable:
        def __iter__(self):
            return batches()

    torch.manual_seed(0)
    model = build_model(ModelSpec("tiny_cnn", {"image_size": 32}, {"bright": HeadSpec(2)}))
    result = fit(model, Reiterable(), OptimConfig(lr=0.05, epochs=3), {"bright": 1.0},
                 Reiterable(), {"bright": task})
    assert result.history[-1]["loss"]["bright"] < result.history[0]["loss"]["bright"]
    assert evaluate(model, Reiterable(), {"bright": task})["bright"]["accuracy"] > 0.9
