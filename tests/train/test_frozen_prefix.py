"""dlib's trunk rebuilt from the shipped graph, trained from a start block on a frozen
prefix's maps computed once; the loader serving them and the optimiser's scaled groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facefuse.data.cache import CacheSpec, build_cache
from facefuse.data.loader import CacheLoader
from facefuse.data.readers import read_dataset
from facefuse.models.dlib_resnet import DlibResNet
from facefuse.models.dlib_shipped import SHIPPED_GRAPH, load_shipped_graph
from facefuse.models.trunks import build_trunk
from facefuse.train.frozen_prefix import frozen_key, prefix_inputs, trunk_normalisation
from facefuse.train.loop import OptimConfig, make_optimizer
from tests.fakes import write_300w, write_celeba, write_utkface
from tests.training import write_dmm_config


def test_shipped_graph_loads_into_the_module_with_the_graphs_outputs() -> None:
    ort = pytest.importorskip("onnxruntime")
    model = load_shipped_graph(DlibResNet()).eval()
    x = np.random.default_rng(0).normal(size=(2, 3, 150, 150)).astype(np.float32)
    want = ort.InferenceSession(str(SHIPPED_GRAPH)).run(["features", "block_tail_in"],
                                                        {"images": x})
    with torch.no_grad():
        got, blocks = model.forward_blocks(torch.from_numpy(x))
    assert np.abs(got.numpy() - want[0]).max() < 1e-4
    assert np.abs(blocks["tail_in"].numpy() - want[1]).max() < 1e-3
    # a random network is far from it: the load did something
    with torch.no_grad():
        assert np.abs(DlibResNet().eval()(torch.from_numpy(x)).numpy() - want[0]).max() > 0.01


def test_a_graph_of_another_network_is_refused(tmp_path: Path) -> None:
    sface = SHIPPED_GRAPH.with_name("sface.onnx")
    with pytest.raises(ValueError, match="not the graph of dlib's network"):
        load_shipped_graph(DlibResNet(), sface)
    with pytest.raises(FileNotFoundError, match="no dlib graph"):
        load_shipped_graph(DlibResNet(), tmp_path / "missing.onnx")


def test_start_block_runs_the_tail_on_the_prefix_and_freezes_the_rest() -> None:
    tail = build_trunk("dlib_resnet", weights="shipped", start_block=13).eval()
    whole = build_trunk("dlib_resnet", weights="shipped").eval()
    x = torch.rand(2, 3, 150, 150)
    with torch.no_grad():
        maps = tail.prefix(x)
        assert maps.shape == (2, 256, 4, 4)
        assert torch.allclose(tail.forward_features(maps), whole.forward_features(x))
    trained = {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("blocks") else "")
               for n, p in tail.named_parameters() if p.requires_grad}
    assert trained == {"blocks.13", "fc"}
    assert all(p.requires_grad for p in whole.parameters())
    for bad in (-1, 14):
        with pytest.raises(ValueError, match="start_block must be within"):
            build_trunk("dlib_resnet", start_block=bad)
    with pytest.raises(ValueError, match="weights must be 'shipped'"):
        build_trunk("dlib_resnet", weights="imagenet")
    pool = build_trunk("dlib_resnet", weights="shipped", start_block=13, output="pool").eval()
    with torch.no_grad():
        vector = pool.forward_features(maps)
        assert vector.shape == (2, 256) and pool.feature_dim == 256
        assert torch.allclose(whole.fc(vector), whole.forward_features(x), atol=1e-5)
    assert not pool.fc.weight.requires_grad and pool.blocks[13].conv_a.weight.requires_grad
    assert frozen_key(pool, 150) == frozen_key(tail, 150)  # the same prefix, the same maps
    flat = build_trunk("dlib_resnet", weights="shipped", start_block=13, output="map",
                       standardise=True)
    assert flat.feature_dim == 256 * 2 * 2
    flat.train()
    with torch.no_grad():
        z = flat.forward_features(torch.cat([maps, maps.flip(0) * 0.5]))
    # standardised over the batch: zero mean, unit variance per feature
    assert z.shape == (4, 1024) and z.mean(0).abs().max() < 1e-4
    assert abs(z.std(0, unbiased=False).median().item() - 1) < 1e-2
    with pytest.raises(ValueError, match="output must be 'descriptor', 'pool' or 'map'"):
        build_trunk("dlib_resnet", output="grid")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prefix")
    write_utkface(tmp / "data", n=6)
    table = read_dataset("utkface", tmp / "data").table
    return build_cache(table, tmp / "cache", CacheSpec(size=150, crop="none"), workers=1)


def test_prefix_maps_are_the_trunks_and_computed_once(cache, monkeypatch) -> None:
    trunk = build_trunk("dlib_resnet", start_block=12).eval()
    maps = prefix_inputs(trunk, cache, torch.device("cpu"), batch_size=4)
    assert maps.dtype == np.float16 and maps.shape[0] == len(cache)
    mean, std = trunk_normalisation(trunk)
    images = torch.from_numpy(np.array(cache.images[:3])).permute(0, 3, 1, 2).float() / 255
    images = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        want = trunk.prefix(images).numpy()
    assert np.allclose(maps[:3].astype(np.float32), want, rtol=1e-2, atol=1e-2)

    def fail(*_):
        raise AssertionError("recomputed")

    monkeypatch.setattr(trunk, "prefix", fail)  # the stored maps are read, not recomputed
    assert np.array_equal(prefix_inputs(trunk, cache, torch.device("cpu")), maps)
    assert list(Path(cache.path).glob("*.tmp.npy")) == []


def test_maps_beyond_float16_are_refused_and_nothing_is_left(cache, monkeypatch) -> None:
    trunk = build_trunk("dlib_resnet", start_block=12).eval()
    monkeypatch.setattr(trunk, "prefix", lambda images: torch.full((len(images), 2), 1e6))
    before = set(Path(cache.path).iterdir())
    with pytest.raises(ValueError, match="exceed float16's range"):
        prefix_inputs(trunk, cache, torch.device("cpu"))
    assert set(Path(cache.path).iterdir()) == before


def test_prefix_key_follows_the_frozen_weights_only() -> None:
    trunk = build_trunk("dlib_resnet", start_block=13)
    key = frozen_key(trunk, 150)
    with torch.no_grad():
        trunk.fc.weight.add_(1.0)  # trained part: same maps
    assert frozen_key(trunk, 150) == key
    with torch.no_grad():
        trunk.blocks[0].conv_a.weight.add_(1.0)  # frozen part: other maps
    assert frozen_key(trunk, 150) != key
    assert frozen_key(trunk, 112) != frozen_key(trunk, 150)
    with pytest.raises(ValueError, match="no frozen prefix"):
        prefix_inputs(build_trunk("dlib_resnet"), None, torch.device("cpu"))  # type: ignore[arg-type]


def test_loader_serves_inputs_by_row_and_refuses_bad_ones(cache) -> None:
    inputs = np.arange(len(cache) * 4, dtype=np.float16).reshape(len(cache), 4)
    loader = CacheLoader(cache, cache.rows(), 2, shuffle=True, seed=1, tasks=("age",),
                         inputs=inputs, prefetch=0)
    seen = 0
    for batch in loader:
        assert torch.equal(batch.images, torch.from_numpy(inputs[batch.index]).float())
        assert torch.equal(batch.labels["age"],
                           torch.from_numpy(cache.table.labels["age"][batch.index]))
        seen += len(batch)
    assert seen == len(cache.rows())
    with pytest.raises(ValueError, match="inputs has 2 rows"):
        CacheLoader(cache, cache.rows(), inputs=inputs[:2])
    from facefuse.data.augment import AugmentSpec

    with pytest.raises(ValueError, match="cannot be augmented"):
        CacheLoader(cache, cache.rows(), inputs=inputs, augment=AugmentSpec())


def test_optimizer_groups_scale_the_learning_rate() -> None:
    a, b, frozen = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    frozen.requires_grad_(False)
    cfg = OptimConfig(optimizer="adamw", lr=0.01)
    opt, _ = make_optimizer([a, b, frozen], cfg, lr_scale=lambda p: 0.1 if p is a else 1.0)
    lrs = sorted((g["lr"], len(g["params"])) for g in opt.param_groups)
    assert lrs == [(pytest.approx(0.001), 1), (0.01, 1)]
    opt, _ = make_optimizer([a, b], cfg)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["lr"] == 0.01
    opt, _ = make_optimizer([a], cfg, lr_scale=lambda p: 0.5)  # one group, still scaled
    assert opt.param_groups[0]["lr"] == pytest.approx(0.005)
    # scale 0 keeps a parameter as it was, weight decay included (a frozen trunk)
    cfg = OptimConfig(optimizer="adamw", lr=0.1, weight_decay=0.1)
    a.data.fill_(1.0)
    b.data.fill_(1.0)
    opt, _ = make_optimizer([a, b], cfg, lr_scale=lambda p: 0.0 if p is a else 1.0)
    (a.sum() + b.sum()).backward()
    opt.step()
    assert torch.equal(a.data, torch.ones(2)) and not torch.equal(b.data, torch.ones(2))


def test_dmm_config_checks_the_trunk_options() -> None:
    from facefuse.experiments.dmm_cnn import DMMConfig, DMMModelConfig, DMMTrainConfig

    tail = DMMModelConfig(trunk="dlib_resnet", trunk_options={"start_block": 13})
    with pytest.raises(ValueError, match="set train.augment: false"):
        DMMConfig(model=tail)
    with pytest.raises(ValueError, match=r"trunk_lr_scale must be in \[0, 1\]"):
        DMMConfig(train=DMMTrainConfig(trunk_lr_scale=1.5))
    assert DMMConfig(model=tail, train=DMMTrainConfig(augment=False, trunk_lr_scale=0.0))
    with pytest.raises(ValueError, match=r"only celeba's rows .* got \['300w'\]"):
        DMMConfig(detector_crop=("300w",))


def test_identity_trunk_ablation_stores_an_image_model(tmp_path: Path) -> None:
    """A DMM run on the shipped dlib trunk from block 13: trained on the prefix's maps, its
    checkpoint is a model that takes images and gives what the run's model gave."""
    from facefuse.cli import main
    from facefuse.inference.attributes import AttributeLandmarkModel

    write_celeba(tmp_path / "data", identities=6, per_identity=3)
    write_300w(tmp_path / "data", n=8)
    cfg = write_dmm_config(tmp_path, """seeds: [0]
variants: [full, fixed_threshold]
image_size: 150
model: {trunk: dlib_resnet, trunk_options: {weights: shipped, start_block: 13},
        objective_hidden: [8], subjective_hidden: [8, 8], landmark_hidden: [8]}
train: {optim: {epochs: 2}, batch_size: 8, augment: false, trunk_lr_scale: 0.1}
""")
    assert main(["experiment", str(cfg), "--quiet"]) == 0
    run = tmp_path / "report" / "runs" / "full-seed0"
    model = AttributeLandmarkModel.from_checkpoint(run / "model")
    face = np.random.default_rng(0).integers(0, 256, (150, 150, 3), np.uint8)
    scores = model.predict_attributes([face])[0].scores
    assert len(scores) == 40 and all(0 <= s <= 1 for s in scores.values())
    assert model.predict_attributes([face])[0].landmarks.shape == (68, 2)
    assert len(list((tmp_path / "cache").glob("*/prefix-*.npy"))) == 1
    # the stored model on the test images gives the run's test probabilities (on maps)
    from facefuse.data.cache import TrainingCache
    from facefuse.models.checkpoint import load_checkpoint

    loaded = load_checkpoint(run / "model")
    whole, meta = loaded.model, loaded.meta
    assert whole.trunk.start_block == 0 and meta["normalisation"]["std"][0] > 1
    (folder,) = (tmp_path / "cache").glob("dmm-*")
    cache = TrainingCache.open(folder)
    rows = cache.rows("test")
    rows = rows[cache.table.present("attributes")[rows]]
    loader = CacheLoader(cache, rows, 64, shuffle=False, tasks=("attributes",),
                         mean=meta["normalisation"]["mean"], std=meta["normalisation"]["std"])
    with torch.no_grad():
        got = torch.cat([torch.sigmoid(whole.eval()(b.images)["attributes"]) for b in loader])
    stored = np.load(run / "predictions.npz")["test_probabilities"]
    assert len(rows) > 0 and np.abs(got.numpy() - stored).max() < 0.02  # float16 maps
    # standardised features (a batch norm) with a last training batch of one row: dropped,
    # where batch norm would fail on it
    import json

    train_rows = json.loads((run / "result.json").read_text())["rows"]["train"]
    lone = cfg.read_text().replace("start_block: 13}", "start_block: 13, standardise: true}")
    lone = lone.replace("batch_size: 8", f"batch_size: {train_rows - 1}").replace(
        "epochs: 2", "epochs: 1")
    cfg.write_text(lone)
    assert main(["experiment", str(cfg), "--quiet", "--output", str(tmp_path / "lone")]) == 0
    history = json.loads((tmp_path / "lone" / "runs" / "full-seed0" / "result.json"
                          ).read_text())["history"]
    assert history[0]["loss"]["steps"] == 1
    bad = cfg.read_text().replace("augment: false", "augment: true")
    cfg.write_text(bad)
    assert main(["experiment", str(cfg), "--quiet"]) == 2
