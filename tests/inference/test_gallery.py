"""The search gallery as a library object: built from a folder by the analyzer, ranking a
face against it, and saying which photos and people it left out."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from facefuse.inference.analyzer import FaceAnalyzer
from facefuse.inference.gallery import Gallery, Match


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    return FaceAnalyzer(tasks=["embedding"], flip=False, landmark_refiner=None)


def test_gallery_from_a_folder_ranks_each_person_first(shared_data: Path, analyzer,
                                                       tmp_path: Path) -> None:
    lfw = shared_data / "lfw" / "lfw"
    for name in ("George_W_Bush", "Colin_Powell"):
        (tmp_path / name).mkdir()
        for f in sorted((lfw / name).glob("*.jpg"))[1:3]:
            shutil.copy(f, tmp_path / name)
    (tmp_path / "Nobody").mkdir()
    (tmp_path / "Nobody" / "grey.png").write_bytes(b"")  # unreadable
    from PIL import Image

    Image.new("RGB", (400, 300), (128, 128, 128)).save(tmp_path / "Blank.png")  # no face
    gallery = Gallery.from_folder(analyzer, tmp_path, batch_images=2)
    assert gallery.names == ("Colin_Powell", "George_W_Bush")  # Blank and Nobody left out
    assert np.allclose(np.linalg.norm(gallery.matrix, axis=1), 1.0, atol=1e-5)
    assert any("grey.png" in n for n in gallery.notes)
    assert any(n.startswith("no face found in the 1 photo(s) of Blank") for n in gallery.notes)
    assert any("no photo of Nobody could be read" in n for n in gallery.notes)
    for name in ("George_W_Bush", "Colin_Powell"):
        query = analyzer.analyze(sorted((lfw / name).glob("*.jpg"))[0]).largest_face()
        ranked = gallery.rank(query.predictions["embedding"], top=5)
        assert [m.name for m in ranked][0] == name and len(ranked) == 2
        assert ranked[0].similarity > ranked[1].similarity


def test_gallery_refuses_what_is_not_one(analyzer, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        Gallery.from_folder(analyzer, tmp_path / "missing")
    with pytest.raises(ValueError, match="no photos in the gallery"):
        Gallery.from_folder(analyzer, tmp_path)
    gallery = Gallery(("a", "b"), np.eye(2, dtype=np.float32))
    assert gallery.rank(np.array([0.0, 1.0]), top=1) == [Match("b", 1.0)]
    with pytest.raises(ValueError, match="top must be at least 1"):
        gallery.rank(np.array([0.0, 1.0]), top=0)
