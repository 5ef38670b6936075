"""The model lifecycle commands ``facefuse model ship`` and ``facefuse model card``, and the
one atomic writer every checkpoint and metadata file goes through."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from facefuse.cli import main
from facefuse.files import atomic_path, write_json_atomic
from facefuse.lifecycle.card import card_fields, update_card
from facefuse.runtime.model_files import read_model_meta, update_model_meta
from tests.paths import SHIPPED_EXPECTED
from tests.training import tiny_checkpoint


def leftovers(folder: Path) -> list[str]:
    """Temporary files or staging folders a writer left behind."""
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(".")
                  or p.name.endswith(".tmp"))


def test_the_atomic_writer_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    path = write_json_atomic(tmp_path / "new" / "m.json", {"a": 1, "where": tmp_path})
    assert json.loads(path.read_text()) == {"a": 1, "where": str(tmp_path)}
    assert oct(path.stat().st_mode & 0o777) == oct(0o644 & ~_umask())
    os.chmod(path, 0o600)
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half a docu")
        raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text())["a"] == 1 and leftovers(tmp_path) == []
    write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert path.stat().st_mode & 0o777 == 0o600  # the mode of the file it replaced


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_metadata_updates_keep_the_weights_and_remove_none(tmp_path: Path) -> None:
    ckpt = tiny_checkpoint(tmp_path / "m", 0, provenance="old")
    weights = ckpt.with_suffix(".safetensors").read_bytes()
    doc = update_model_meta(ckpt, {"licence": "CC0-1.0", "provenance": None})
    assert read_model_meta(ckpt) == doc and doc["licence"] == "CC0-1.0"
    assert "provenance" not in doc
    assert ckpt.with_suffix(".safetensors").read_bytes() == weights
    (tmp_path / "x.json").write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="not a facefuse checkpoint's metadata"):
        update_model_meta(tmp_path / "x", {"licence": "x"})


def test_card_shows_and_sets_the_fields(tmp_path: Path, capsys) -> None:
    ckpt = tiny_checkpoint(tmp_path / "m", 0,
                           training_data=[{"dataset": "utkface", "images": 1200}],
                           recipe="joint", epochs=3,
                           averaged_from=[{"checkpoint": "a", "weight": 0.5},
                                          {"checkpoint": "b", "weight": 0.5}])
    weights = ckpt.with_suffix(".safetensors").read_bytes()
    assert main(["model", "card", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("**m**") and "- tasks: age (regression); gender (male, female)" in out
    assert "utkface 1,200 images" in out and "joint, epochs 3" in out
    assert "weight mean of a x 0.50, b x 0.50" in out and "- licence: not stated" in out
    assert main(["model", "card", f"{ckpt}.json", "--licence", "CC-BY-NC-4.0", "--doc",
                 "docs/CARD.md", "--provenance", "configs/mtl.yaml --quick", "--json"]) == 0
    fields = json.loads(capsys.readouterr().out)
    assert fields["licence"] == "CC-BY-NC-4.0" and fields["model card"] == "docs/CARD.md"
    assert fields["provenance"].startswith("configs/mtl.yaml --quick; weight mean of a")
    meta = read_model_meta(ckpt)
    assert (meta["licence"], meta["model_card"]) == ("CC-BY-NC-4.0", "docs/CARD.md")
    assert ckpt.with_suffix(".safetensors").read_bytes() == weights
    assert leftovers(tmp_path) == []


def test_card_refuses_what_is_not_a_card(tmp_path: Path, capsys) -> None:
    ckpt = tiny_checkpoint(tmp_path / "m", 0)
    before = ckpt.with_suffix(".json").read_text()
    assert main(["model", "card", str(ckpt), "--licence", "  "]) == 2
    assert "empty card field(s) ['licence']" in capsys.readouterr().err
    assert main(["model", "card", str(tmp_path / "gone")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert ckpt.with_suffix(".json").read_text() == before
    with pytest.raises(ValueError, match="unknown card field"):
        update_card(ckpt, labels="x")


def test_the_shipped_models_card() -> None:
    from facefuse.weights import shipped_model_path

    fields = card_fields(shipped_model_path())
    assert fields["model"] == "facefuse-mtl-small" and "float16" in fields["weights"]
    assert "identity (128-d embedding" in fields["tasks"]
    assert "landmarks (68 points)" in fields["tasks"]
    assert fields["model card"] == "docs/MODEL_CARD.md"
    assert fields["licence"].startswith("Research and non-commercial use only")


def test_ship_writes_the_graph_its_metadata_and_the_kept_checkpoint(tmp_path: Path,
                                                                    capsys) -> None:
    ckpt = tiny_checkpoint(tmp_path / "run" / "final", 0)
    out, kept = tmp_path / "weights", tmp_path / "checkpoints"
    assert main(["model", "ship", str(ckpt), "--out", str(out), "--name", "small",
                 "--threshold", "0.5", "--compression", "none",
                 "--keep-checkpoint", str(kept)]) == 0
    said = capsys.readouterr().out
    assert f"shipped {out / 'small.onnx'}" in said and "max |onnxruntime - torch|" in said
    meta = read_model_meta(out / "small")
    assert meta["verification_threshold"] == 0.5 and meta["crop_margin"] == 0.2
    assert meta["licence"].startswith("Research and non-commercial use only")
    assert meta["model_card"] == "docs/MODEL_CARD.md" and meta["weights_storage"] == "none"
    assert meta["exported_from"] == str(kept / "small.safetensors")
    assert max(meta["onnx_parity_max_abs"].values()) < 0.02
    assert set(meta["onnx_parity_max_abs"]) == {"features", "embedding", "age", "gender"}
    for suffix in (".safetensors", ".json"):
        assert (kept / f"small{suffix}").read_bytes() == ckpt.with_suffix(suffix).read_bytes()
    assert leftovers(tmp_path) == []

    import numpy as np

    from facefuse.runtime.model_graph import ModelGraph

    graph = ModelGraph(out / "small.onnx")  # runs without torch, two heads as trained
    features, outputs, _ = graph(np.zeros((2, 3, 32, 32), np.float32))
    assert sorted(outputs) == ["age", "gender"] and outputs["gender"].shape == (2, 2)


def test_a_refused_ship_leaves_the_shipped_model_as_it_was(tmp_path: Path, capsys) -> None:
    ckpt = tiny_checkpoint(tmp_path / "run" / "final", 0)
    out = tmp_path / "weights"
    assert main(["model", "ship", str(ckpt), "--out", str(out), "--name", "small",
                 "--threshold", "0.5"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = tiny_checkpoint(tmp_path / "run2" / "final", 1)
    assert main(["model", "ship", str(other), "--out", str(out), "--name", "small",
                 "--threshold", "0.5", "--tolerance", "1e-12"]) == 1
    assert "refused: parity" in capsys.readouterr().err
    assert main(["model", "ship", str(other), "--out", str(out), "--name", "small",
                 "--threshold", "0.5", "--max-mb", "0.0001"]) == 1
    assert "refused" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert leftovers(tmp_path) == []


def test_ship_refuses_bad_input_in_one_line(tmp_path: Path, capsys) -> None:
    ckpt = tiny_checkpoint(tmp_path / "run" / "final", 0)
    assert main(["model", "ship", str(ckpt), "--out", str(tmp_path / "w")]) == 2
    assert "has no verification_threshold; pass one (--threshold)" in capsys.readouterr().err
    assert main(["model", "ship", str(tmp_path / "gone"), "--out", str(tmp_path / "w"),
                 "--threshold", "0.5"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "w").exists() or not list((tmp_path / "w").iterdir())


def test_expected_predictions_are_what_the_shipped_model_is_held_to() -> None:
    from facefuse.lifecycle.ship import expected_predictions
    from facefuse.weights import shipped_model_path

    got, want = expected_predictions(shipped_model_path()), json.loads(SHIPPED_EXPECTED.read_text())
    assert got.keys() == want.keys()
    assert [got[t] for t in ("gender", "race", "emotion")] == \
        [want[t] for t in ("gender", "race", "emotion")]
    assert got["age"] == pytest.approx(want["age"], abs=0.05)
    assert got["embedding_head"] == pytest.approx(want["embedding_head"], abs=1e-3)
    assert got["model_embedding_head"] == pytest.approx(want["model_embedding_head"], abs=1e-3)
