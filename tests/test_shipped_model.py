"""The model shipped in the package: it loads, the README's first command works offline, and
its predictions on the embedded photo stay what they were when it was shipped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facefuse.assets import demo_image_path
from facefuse.cli import main
from facefuse.inference.analyzer import FaceAnalyzer
from facefuse.weights import shipped_model_path
from tests.paths import SHIPPED_EXPECTED


def test_shipped_model_is_small_and_explains_itself() -> None:
    base = shipped_model_path()
    size_mb = base.with_suffix(".onnx").stat().st_size / 2**20
    assert size_mb <= 20
    assert not base.with_suffix(".safetensors").exists()  # the core runs the graph alone
    meta = json.loads(base.with_suffix(".json").read_text())
    for key in ("spec", "tasks", "input_size", "normalisation", "training_data",
                "verification_threshold", "licence", "crop_margin", "onnx_outputs"):
        assert key in meta, key
    # written by the ship step, which measured the graph against PyTorch
    assert max(meta["onnx_parity_max_abs"].values()) < 0.02
    assert meta["onnx_outputs"][:2] == ["features", "embedding"]


def test_readme_first_command_analyzes_the_embedded_photo(capsys) -> None:
    assert main(["analyze", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["source"] == str(demo_image_path())
    assert len(result["faces"]) == 1


def test_predictions_on_the_demo_photo_are_stable() -> None:
    face = FaceAnalyzer(device="cpu").analyze(demo_image_path()).faces[0]
    expected = json.loads(SHIPPED_EXPECTED.read_text())
    np.testing.assert_allclose(face.box, expected["box"], atol=1.0)
    p = face.predictions
    assert p["age"] == pytest.approx(expected["age"], abs=0.5)
    for task in ("gender", "race", "emotion"):
        assert p[task]["label"] == expected[task]
    # the embedding of the shipped identity networks, fused (256-d), and the model's own
    assert len(p["embedding"]) == expected["embedding_dim"]
    np.testing.assert_allclose(p["embedding"][:8], expected["embedding_head"], atol=2e-3)
    # the model's own heads and identity embedding, without the identity networks
    own = FaceAnalyzer(device="cpu", identity=None,
                       identity_heads=None).analyze(demo_image_path()).faces[0].predictions
    np.testing.assert_allclose(own["embedding"][:8], expected["model_embedding_head"],
                               atol=2e-3)
    assert own["age"] == pytest.approx(expected["model_heads"]["age"], abs=0.5)
    for task in ("gender", "race", "emotion"):
        assert own[task]["label"] == expected["model_heads"][task]


def test_shipped_identity_networks_are_small_licensed_and_explain_themselves() -> None:
    from facefuse.inference.identity import FusedIdentity
    from facefuse.weights import shipped_identity_path

    fusion = FusedIdentity.read(shipped_identity_path())
    folder = shipped_identity_path().parent
    weights = sum(f.stat().st_size for f in shipped_model_path().parent.rglob("*")
                  if f.suffix in (".safetensors", ".onnx"))
    assert weights <= 40 * 2**20  # every weight file in the package, heads included
    assert (folder / "facefuse-identity-heads.safetensors").is_file()
    assert [p.network for p in fusion.parts] == ["dlib_resnet", "sface"]
    assert 0 < fusion.threshold < 1 and fusion.meta["training_data"]["identities"] > 200
    for net in fusion.networks:
        meta = net.spec.meta
        assert meta["licence"] in ("CC0-1.0", "Apache-2.0") and meta["provenance"]["sha256"]
        assert meta["parity_with_module"]["random"]["min_cosine"] > 0.9999
        for name in meta["licence_files"]:
            assert (folder / name).stat().st_size > 500, name
    assert "Apache License" in (folder / "LICENSE-sface.txt").read_text()
    assert "CC0" in (folder / "LICENSE-dlib_resnet.txt").read_text()


def test_shipped_identity_tells_lfw_people_apart(shared_data: Path) -> None:
    """Two photos each of four LFW people, through the default analyzer: every same-person
    pair above the shipped threshold, every other pair below it."""
    lfw = shared_data / "lfw" / "lfw"
    people = ["Colin_Powell", "Tony_Blair", "Serena_Williams", "Jennifer_Aniston"]
    analyzer = FaceAnalyzer(device="cpu", tasks=["embedding"])
    photos = [lfw / p / f"{p}_{k:04d}.jpg" for p in people for k in (1, 2)]
    emb = np.array([r.largest_face().predictions["embedding"]
                    for r in analyzer.analyze_many(photos)])
    sims = emb @ emb.T
    same = np.equal.outer(np.repeat(np.arange(4), 2), np.repeat(np.arange(4), 2))
    off = ~np.eye(8, dtype=bool)
    t = analyzer.verification_threshold
    assert (sims[same & off] > t).all() and (sims[~same] < t).all(), (t, sims.round(3))


def test_shipped_age_goes_through_its_calibration_map() -> None:
    """The shipped checkpoint carries an age map fitted on validation faces, and the age the
    model decodes (the analyzer's) is the head's raw estimate sent through it."""
    from facefuse.inference.face_model import FaceModel
    from facefuse.runtime.calibration import apply_monotone_map
    from facefuse.tasks import get_task, regression_scale

    model = FaceModel.from_checkpoint(shipped_model_path(), flip=True)
    mapping = model.calibration["age"]
    assert mapping["split"] == "val" and len(mapping["x"]) >= 2
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(3)]
    raw = model.raw(faces)[1]["age"].reshape(-1) * regression_scale(
        get_task("age"))
    got = [p["age"] for p in model.predict(faces)]
    np.testing.assert_allclose(got, apply_monotone_map(raw, mapping), atol=0.01)
    assert np.abs(np.asarray(got) - raw).max() > 0.5  # the map moved them
