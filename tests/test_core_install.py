"""Every inference command on real photos and a real video, as the core install runs them
(``.ci/run`` runs this file in a venv without torch; ``tests/test_layers.py`` checks the
same path with the training extra made unimportable)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from facefuse.cli import main

PEOPLE = ("George_W_Bush", "Colin_Powell")


@pytest.fixture(scope="module")
def photos(shared_data: Path, tmp_path_factory) -> dict[str, list[Path]]:
    """Three LFW photos of each of two people, copied out of the shared data."""
    out = tmp_path_factory.mktemp("photos")
    found = {}
    for name in PEOPLE:
        files = sorted((shared_data / "lfw" / "lfw" / name).glob("*.jpg"))[:3]
        assert len(files) == 3, name
        found[name] = [Path(shutil.copy(f, out / f.name)) for f in files]
    return found


@pytest.fixture(scope="module")
def video(photos: dict[str, list[Path]], tmp_path_factory) -> Path:
    """A 4-second clip: one person's photos, each held for 10 frames at 10 fps."""
    import cv2

    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (180, 180))
    for f in photos["George_W_Bush"] + photos["Colin_Powell"][:1]:
        frame = cv2.resize(cv2.imread(str(f)), (180, 180))
        for _ in range(10):
            writer.write(frame)
    writer.release()
    return path


def test_analyze_writes_every_task_for_real_photos(photos, tmp_path: Path) -> None:
    out = tmp_path / "faces.jsonl"
    files = [str(p) for p in photos["George_W_Bush"]]
    assert main(["analyze", "--quiet", "--out", str(out), *files]) == 0
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["source"] for r in results] == files
    for r in results:
        face = r["faces"][0]
        assert 0 < face["age"] < 100 and face["gender"]["label"] in ("male", "female")
        assert len(face["landmarks"]) == 68 and len(face["embedding"]) == 256


def test_verify_tells_the_same_person_from_another(photos, capsys) -> None:
    bush, powell = photos["George_W_Bush"], photos["Colin_Powell"]
    assert main(["verify", str(bush[0]), str(bush[1])]) == 0
    same = json.loads(capsys.readouterr().out)
    assert main(["verify", str(bush[0]), str(powell[0])]) == 0
    other = json.loads(capsys.readouterr().out)
    assert same["similarity"] > other["similarity"]
    assert same["same_person"] and not other["same_person"]


def test_embed_and_search_find_each_person_in_a_gallery(photos, tmp_path: Path,
                                                        capsys) -> None:
    gallery = tmp_path / "gallery"
    for name, files in photos.items():
        (gallery / name).mkdir(parents=True)
        for f in files[1:]:
            shutil.copy(f, gallery / name / f.name)
    queries = [str(files[0]) for files in photos.values()]
    assert main(["embed", "--quiet", *queries]) == 0
    embedded = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(embedded) == 2
    assert np.linalg.norm(embedded[0]["embedding"]) == pytest.approx(1.0, abs=1e-3)
    assert main(["search", "--quiet", *queries, "--gallery", str(gallery)]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [a["match"] for a in answers] == list(PEOPLE)


def test_video_analyze_and_predict(video: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "video"
    assert main(["video", "analyze", "--quiet", str(video), "--out", str(out)]) == 0
    lines = [json.loads(x) for x in (out / "clip.frames.jsonl").read_text().splitlines()]
    assert len(lines) == 20  # 40 frames at 5 fps of sampling: 20 sampled, one face each
    assert {len(x["landmarks"]) for x in lines} == {68}  # as in a photo's result
    tracks = json.loads((out / "clip.tracks.json").read_text())
    assert tracks["faces"] == 20 and tracks["clip_feature_dim"] > 0
    # a clip classifier as `video fit` writes it (fitting needs the training extra)
    from facefuse.inference.clips import ClipClassifier

    dim = tracks["clip_feature_dim"]
    rng = np.random.default_rng(0)
    ClipClassifier(["calm", "lively"], np.zeros(dim), np.ones(dim),
                   rng.normal(size=(2, dim)), np.zeros(2)).save(tmp_path / "clf.json")
    assert main(["video", "predict", "--quiet", str(video), "--classifier",
                 str(tmp_path / "clf.json")]) == 0
    answer = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert answer["label"] in ("calm", "lively")
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
