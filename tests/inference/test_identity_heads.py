"""Heads on the identity networks' features: fitted (scikit-learn), written and read back
(numpy), fused with a model's own outputs, and plugged into the analyzer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facefuse.inference.identity_heads import IdentityHeads
from facefuse.runtime.decoding import OutputDecoder
from facefuse.runtime.linear_heads import LinearHead, fuse_scores
from facefuse.train.identity_heads import (
    choose_fusion_weight,
    fit_linear_head,
    score,
    write_heads,
)


def blobs(n: int = 300, dim: int = 6, classes: int = 3, seed: int = 0):
    """Features of two named blocks whose first columns tell the classes apart."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(n, dim))
    x[:, 0] += 4 * y
    x[:, 1] -= 3 * (y == 1)
    return {"net:features": x[:, :4], "net:m": x[:, 4:]}, y


def heads_file(tmp_path: Path) -> Path:
    feats, y = blobs()
    x = np.hstack([feats["net:features"], feats["net:m"]])
    names = ("net:features", "net:m")
    race = fit_linear_head("race", x, y, "softmax", 1.0, names,
                           ("white", "black", "asian", "indian", "others"))
    gender = fit_linear_head("gender", x, (y == 1).astype(int), "softmax", 1.0, names,
                             ("male", "female"))
    attrs = fit_linear_head("attributes", feats["net:features"], np.stack([y == 0, y == 2], 1),
                            "sigmoid", 1.0, ("net:features",), ("Smiling", "Young"))
    age = fit_linear_head("age", x, 10.0 * y + 20, "linear", 1.0, names, (), (0.0, 116.0))
    age = LinearHead(**{**age.__dict__, "fusion_weight": 0.75})
    write_heads(tmp_path / "heads", {"race": race, "gender": gender, "attributes": attrs,
                                     "age": age}, note="test")
    return tmp_path / "heads.json"


def test_fitted_heads_round_trip_and_predict(tmp_path: Path) -> None:
    heads = IdentityHeads.read(heads_file(tmp_path))
    assert heads.tasks == ["race", "gender", "attributes", "age"] and heads.meta["note"] == "test"
    feats, y = blobs(seed=1)  # new faces of the same kind
    race = heads.heads["race"].scores(feats)
    assert race.shape == (300, 5) and np.allclose(race.sum(1), 1)
    assert score("softmax", race, y) > 90
    assert race[:, 3:].max() < 1e-6  # classes never seen in training never win
    attrs = heads.heads["attributes"].scores(feats)
    assert score("sigmoid", attrs, np.stack([y == 0, y == 2], 1)) > 85
    age = heads.heads["age"].scores(feats)
    assert np.abs(age - (10.0 * y + 20)).mean() < 3 and age.min() >= 0


def test_refitting_heads_keeps_the_listed_tails(tmp_path: Path) -> None:
    import json

    import pytest

    path = heads_file(tmp_path)
    heads = IdentityHeads.read(path).heads
    doc = json.loads(path.read_text())
    tail = {"task": "age", "graph": "facefuse-age-tail.onnx", "fusion_weight": 0.3}
    path.write_text(json.dumps({**doc, "tails": [tail]}))
    with pytest.warns(UserWarning, match=r"1 fine-tuned tail\(s\) \(age\): kept"):
        write_heads(tmp_path / "heads", heads, note="refit")
    again = json.loads(path.read_text())
    assert again["tails"] == [tail] and again["note"] == "refit"
    write_heads(tmp_path / "heads", heads, tails=[])  # said explicitly: none
    assert json.loads(path.read_text())["tails"] == []


def test_apply_fuses_with_the_models_outputs_and_decodes_as_the_model(tmp_path: Path) -> None:
    heads = IdentityHeads.read(heads_file(tmp_path))
    feats, y = blobs(n=4, seed=2)
    meta = {"tasks": {"age": [], "race": ["white", "black", "asian", "indian", "others"],
                      "gender": ["male", "female"], "attributes": ["Smiling", "Young"]}}
    decoder = OutputDecoder(meta, ["age", "race", "gender", "attributes"])
    outputs = {"age": np.full((4, 1), 50 / 116), "race": np.zeros((4, 5)),
               "gender": np.zeros((4, 2)), "attributes": np.zeros((4, 2))}
    preds = [{"age": 50.0, "emotion": {"label": "sad"}} for _ in range(4)]
    heads.apply(preds, feats, outputs, decoder, ["age", "race", "attributes"])
    ident_age = heads.heads["age"].scores(feats)
    for p, a, label in zip(preds, ident_age, y, strict=True):
        assert p["age"] == pytest.approx(0.75 * a + 0.25 * 50.0, abs=0.01)
        assert p["race"]["label"] == ["white", "black", "asian"][label]
        assert set(p["attributes"]) == {"Smiling", "Young"}
        assert set(p["attributes_scores"]) == {"Smiling", "Young"}
        assert "gender" not in p  # not among the analyzer's tasks: left alone
        assert p["emotion"] == {"label": "sad"}  # no head for it: the model's stays


def test_fusion_weight_is_chosen_on_the_rows_given() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    right = np.eye(3)[y] * 0.9 + 0.1 / 3
    noise = rng.dirichlet(np.ones(3), 200)
    w, best = choose_fusion_weight("softmax", right, noise, y)
    assert best == 100.0 and w >= 0.5  # the smallest share that gets every row right
    assert score("softmax", fuse_scores("softmax", right, noise, w - 0.05), y) < 100.0
    w, best = choose_fusion_weight("softmax", noise, right, y)
    assert best == 100.0 and w == 0.0
    ages = rng.uniform(0, 80, 200)
    w, mae = choose_fusion_weight("linear", ages + 4, ages - 4, ages)
    assert w == 0.5 and mae == pytest.approx(0.0, abs=1e-9)
    fused = fuse_scores("softmax", right, noise, 0.5)
    assert np.allclose(fused.sum(1), 1)


def test_bad_heads_files_are_refused_with_their_name(tmp_path: Path) -> None:
    path = heads_file(tmp_path)
    doc = json.loads(path.read_text())
    doc["tasks"]["race"]["labels"] = ["white", "black"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="heads.json: race: 5 outputs for 2 labels"):
        IdentityHeads.read(path)
    del doc["tasks"]["race"]["output"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="a field or tensor is missing"):
        IdentityHeads.read(path)
    path.with_suffix(".safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="its weights .* are missing"):
        IdentityHeads.read(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        IdentityHeads.read(tmp_path / "nope.json")
    heads = IdentityHeads.read(heads_file(tmp_path / "again"))
    with pytest.raises(KeyError, match=r"reads \['net:features'\]"):
        heads.heads["attributes"].scores({"net:m": np.zeros((1, 2))})


def test_the_analyzer_fuses_the_shipped_heads_with_the_shipped_model() -> None:
    from facefuse.assets import demo_image_path
    from facefuse.inference.analyzer import FaceAnalyzer

    with_heads = FaceAnalyzer(landmark_refiner=None)
    assert with_heads.identity_heads is not None
    assert set(with_heads.identity_heads.tasks) == {"age", "gender", "race", "emotion",
                                                    "attributes"}
    alone = FaceAnalyzer(landmark_refiner=None, identity_heads=None)
    a = with_heads.analyze(demo_image_path()).faces[0].predictions
    b = alone.analyze(demo_image_path()).faces[0].predictions
    assert a["age"] != b["age"] and a["race"] != b["race"]  # the fused predictions
    assert a["embedding"] == b["embedding"] and a["landmarks" if "landmarks" in a else
                                                  "age"] is not None
    # without any identity task asked for, the networks still run for the heads
    only_age = FaceAnalyzer(tasks=["age"], landmark_refiner=None)
    assert only_age.identity is None and only_age.describer is not None
    assert only_age.analyze(demo_image_path()).faces[0].predictions["age"] == a["age"]
    # a model of one's own: its heads alone by default
    assert FaceAnalyzer(model=with_heads.model, landmark_refiner=None).identity_heads is None
    # the shipped age tail (dlib's last block, fine-tuned) is fused after the linear head
    tails = with_heads.identity_heads.tails
    assert [(t.task, t.feature) for t in tails] == [("age", "dlib_resnet:tail_in")]
    with_heads.identity_heads.tails = []
    without_tail = with_heads.analyze(demo_image_path()).faces[0].predictions
    w = tails[0].fusion_weight
    assert 0 < w < 1 and without_tail["age"] != a["age"]
    assert abs(a["age"] - without_tail["age"]) <= w * 100  # a weighted mean of the two


def test_the_packages_weights_stay_within_40_mb() -> None:
    from facefuse.weights import __file__ as weights_init

    folder = Path(weights_init).parent
    files = [f for f in folder.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
    assert any(f.name == "facefuse-age-tail.onnx" for f in files)
    assert sum(f.stat().st_size for f in files) <= 40_000_000


# -- tails: a fine-tuned copy of a network's last block, as an ONNX graph ----------------------
def tail_setup(tmp_path: Path):
    """A tiny dlib-style network, a tail on its last block written as a graph (output 1:
    35 + 15 * the head's), and the heads file of :func:`heads_file` with that tail added."""
    import torch

    from facefuse.models.dlib_resnet import DlibResNet
    from facefuse.train.identity_tail import IdentityTail, write_value_graph
    from tests.dlib_writer import tiny_weights

    torch.manual_seed(0)
    net = DlibResNet.from_weights(tiny_weights(seed=3)).eval()
    images = torch.randn(5, 3, 37, 37)
    last = len(net.blocks) - 1
    with torch.no_grad():
        maps = net.map_before(images, last)
    tail = IdentityTail(net, last, tuple(maps.shape[2:]), np.zeros(8), np.ones(8), 3, True)
    with torch.no_grad():
        for p in tail.parameters():
            p.add_(0.1 * torch.randn_like(p))  # fine-tuned: no longer dlib's
    tail.eval()
    path = heads_file(tmp_path)
    report = write_value_graph(tail, 1, 35.0, 15.0, tuple(maps.shape[1:]),
                               tmp_path / "age-tail.onnx", "int8-block")
    doc = json.loads(path.read_text())
    doc["tails"] = [{"task": "age", "graph": "age-tail.onnx", "feature": "net:tail_in",
                     "output": "linear", "range": [0, 116], "fusion_weight": 0.3}]
    path.write_text(json.dumps(doc))
    return path, net, tail, images, report


def test_dlib_gives_the_map_entering_its_last_block() -> None:
    import torch

    from facefuse.models.dlib_resnet import DlibResNet
    from tests.dlib_writer import tiny_weights

    net = DlibResNet.from_weights(tiny_weights(seed=3)).eval()
    x = torch.randn(3, 3, 37, 37)
    with torch.no_grad():
        features, blocks = net.forward_blocks(x)
        assert torch.allclose(features, net.forward_features(x), atol=1e-6)
        last = net.map_before(x, len(net.blocks) - 1)
        assert torch.equal(blocks["tail_in"], last.flatten(1))
        assert torch.allclose(net.blocks[-1](last, tuple(last.shape[2:])).mean(dim=(2, 3)),
                              blocks["pool"], atol=1e-6)
    with pytest.raises(ValueError, match="block must be within"):
        net.map_before(x, len(net.blocks) + 1)


def test_a_tail_graph_gives_the_tails_value_and_is_fused_after_the_heads(
        tmp_path: Path) -> None:
    import torch

    path, net, tail, images, report = tail_setup(tmp_path)
    assert report["parity_max_abs"] < 1e-3 and report["graph_bytes"] > 0
    heads = IdentityHeads.read(path)
    assert heads.tasks == ["race", "gender", "attributes", "age"]
    assert heads.features == {"net:features", "net:m", "net:tail_in"}
    with torch.no_grad():
        maps = net.map_before(images, len(net.blocks) - 1)
        want = 35.0 + 15.0 * tail(maps)[:, 1].numpy()
    feats, _ = blobs(n=5, seed=4)
    feats["net:tail_in"] = maps.flatten(1).numpy()
    got = heads.tails[0].values(feats)
    np.testing.assert_allclose(got, np.clip(want, 0, 116), atol=1e-3)
    meta = {"tasks": {"age": [], "race": ["white", "black", "asian", "indian", "others"]}}
    decoder = OutputDecoder(meta, ["age", "race"])
    outputs = {"age": np.full((5, 1), 50 / 116), "race": np.zeros((5, 5))}
    preds = [{"age": 50.0} for _ in range(5)]
    heads.apply(preds, feats, outputs, decoder, ["age", "race"])
    before = 0.75 * heads.heads["age"].scores(feats) + 0.25 * 50.0  # the linear head's
    for p, b, t in zip(preds, before, got, strict=True):
        assert p["age"] == pytest.approx(0.3 * t + 0.7 * b, abs=0.02)
    untouched = [{"age": 50.0} for _ in range(5)]
    heads.apply(untouched, feats, outputs, decoder, ["race"])  # age not asked for
    assert all(p["age"] == 50.0 for p in untouched)


def test_bad_tails_are_refused(tmp_path: Path) -> None:
    path, *_ = tail_setup(tmp_path)
    good = json.loads(path.read_text())

    def refused(change: dict, error: type[Exception], match: str) -> None:
        doc = json.loads(json.dumps(good))
        doc["tails"][0].update(change)
        path.write_text(json.dumps(doc))
        with pytest.raises(error, match=match):
            IdentityHeads.read(path)

    refused({"graph": "missing.onnx"}, FileNotFoundError, "tail's graph .*missing.onnx")
    refused({"graph": "../age-tail.onnx"}, ValueError, "not a plain file name")
    refused({"fusion_weight": 1.5}, ValueError, "fusion_weight must be within")
    refused({"output": "softmax"}, ValueError, "only linear outputs")
    doc = json.loads(json.dumps(good))
    del doc["tails"][0]["feature"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="a field or tensor is missing"):
        IdentityHeads.read(path)
    path.write_text(json.dumps(good))
    tail = IdentityHeads.read(path).tails[0]
    with pytest.raises(KeyError, match="reads 'net:tail_in'"):
        tail.values({"net:features": np.zeros((2, 4))})
    with pytest.raises(ValueError, match="takes .* features"):
        tail.values({"net:tail_in": np.zeros((2, 7), np.float32)})
    assert tail.values({"net:tail_in": np.zeros((0, 7), np.float32)}).shape == (0,)
