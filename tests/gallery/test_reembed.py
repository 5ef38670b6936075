"""A gallery that keeps its faces' photos, and its re-embedding (facefuse.gallery.reembed)
with a small fake analyzer: each photo is two coloured squares side by side, two faces whose
embeddings are their colours, so the face enrolled must be found again by its box."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("faiss")

from facefuse.gallery import FaceGallery, FingerprintMismatch, GalleryError  # noqa: E402
from facefuse.gallery.embedding_space import EmbeddingSpace  # noqa: E402
from facefuse.gallery.reembed import overlap, reembed  # noqa: E402
from facefuse.inference.analyzer import FaceResult, ImageResult  # noqa: E402

OLD = "identity:old:0000000000000000"
NEW = EmbeddingSpace("identity:new:1111111111111111", 4, 0.9)
LEFT, RIGHT = (0.0, 0.0, 20.0, 20.0), (20.0, 0.0, 40.0, 20.0)


def photo(left: tuple[int, int, int], right: tuple[int, int, int]) -> bytes:
    """A 40x20 PNG: two squares of the given colours."""
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :20], rgb[:, 20:] = left, right
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


class TwoSquares:
    """An analyzer that finds the two squares as faces (a blank photo: none); a face's
    embedding is its colour and a constant."""

    max_pixels = 10_000
    calls = 0

    def analyze_many(self, images: list[np.ndarray], batch_images: int = 32
                     ) -> list[ImageResult]:
        TwoSquares.calls += 1
        out = []
        for i, rgb in enumerate(images):
            faces = []
            for index, box in enumerate((LEFT, RIGHT)):
                colour = rgb[5, int(box[0]) + 5].astype(np.float32)
                if colour.any():
                    faces.append(FaceResult(index, box, 0.99,
                                            {"embedding": np.append(colour, 100.0)}))
            out.append(ImageResult(f"image{i}", 40, 20, tuple(faces)))
        return out


def expected(colour: tuple[int, int, int]) -> np.ndarray:
    v = np.append(np.asarray(colour, np.float64), 100.0)
    return (v / np.linalg.norm(v)).astype(np.float32)


RED, BLUE, GREEN = (200, 10, 10), (10, 10, 200), (10, 200, 10)


@pytest.fixture
def kept(tmp_path: Path) -> Path:
    """A gallery of 8-d embeddings (the old weights) keeping its photos: Ann is the left
    square of a red-blue photo, Bob the right square of it, Cid a green face with no box."""
    folder = tmp_path / "kept"
    rng = np.random.default_rng(0)
    with FaceGallery.create(folder, 8, OLD, 0.5, keep_images=True) as g:
        both = photo(RED, BLUE)
        g.add_many(["Ann", "Bob"], rng.normal(size=(2, 8)), ["rb.png", "rb.png"],
                   [LEFT, (21, 1, 39, 19)], [both, both])
        g.add("Cid", rng.normal(size=8), "g.png", None, photo(GREEN, (0, 0, 0)))
    return folder


def test_a_kept_gallery_is_reembedded_whole_with_the_new_fingerprint(kept: Path) -> None:
    with FaceGallery.open(kept) as g:
        assert g.keeps_images and g.info().keeps_images
        seen = []
        done = reembed(g, TwoSquares(), NEW, batch_images=2,
                       progress=lambda n, total: seen.append((n, total)))
        assert seen == [(2, 3), (3, 3)]
        assert done.to_dict() == {"faces": 3, "fingerprint": {"old": OLD, "new": NEW.fingerprint},
                                  "dim": {"old": 8, "new": 4}, "threshold": 0.9}
    with pytest.raises(FingerprintMismatch):
        FaceGallery.open(kept, fingerprint=OLD)
    with FaceGallery.open(kept, fingerprint=NEW.fingerprint, readonly=True) as g:
        info = g.info()
        assert (info.dim, info.fingerprint, info.threshold, info.faces) == (4, NEW.fingerprint,
                                                                           0.9, 3)
        stored = g.embeddings([1, 2, 3])
        for face_id, colour in ((1, RED), (2, BLUE), (3, GREEN)):
            np.testing.assert_allclose(stored[face_id], expected(colour), atol=1e-6)
            assert g.search(expected(colour))[0][0].face_id == face_id
    assert (kept / "index.faiss").is_file()  # rebuilt and saved for the new width


def test_a_gallery_without_photos_is_refused_in_one_line(tmp_path: Path) -> None:
    with FaceGallery.create(tmp_path / "plain", 8, OLD, 0.5) as g:
        assert not g.keeps_images and not g.info().keeps_images
        g.add("Ann", np.ones(8))
        with pytest.raises(GalleryError, match="did not keep its photos") as refused:
            reembed(g, TwoSquares(), NEW)
        assert "\n" not in str(refused.value)
        with pytest.raises(GalleryError, match="does not keep photos"):
            g.add("Ann", np.ones(8), image=photo(RED, BLUE))
        assert g.info().fingerprint == OLD and g.info().faces == 1
    with pytest.raises(FingerprintMismatch) as refused:
        FaceGallery.open(tmp_path / "plain", fingerprint=NEW.fingerprint)
    assert "reembed" not in str(refused.value)  # only a gallery that keeps photos says so


def test_a_face_not_found_again_changes_nothing_and_is_named(kept: Path) -> None:
    with FaceGallery.open(kept) as g:
        g.add("Dee", np.ones(8), "blank.png", (0, 0, 20, 20), photo((0, 0, 0), (0, 0, 0)))
        g.add("Eve", np.ones(8), "moved.png", (0, 0, 5, 5), photo(RED, BLUE))
        before = g.embeddings(g.face_ids())
        with pytest.raises(GalleryError) as refused:
            reembed(g, TwoSquares(), NEW)
        message = str(refused.value)
        assert message.startswith("2 of 5 face(s) could not be re-embedded, nothing changed")
        assert "face 4: no face found" in message and "face 5: no face found where it was " \
            "enrolled (box 0 0 5 5)" in message and "--face ID" in message
        assert "\n" not in message
        after = g.embeddings(g.face_ids())
        assert g.info().fingerprint == OLD and g.info().dim == 8
        assert all(np.array_equal(before[i], after[i]) for i in before)
    # a photo that no longer decodes is named too
    with sqlite3.connect(kept / "gallery.sqlite") as conn:
        conn.execute("UPDATE face_images SET data = ? WHERE face_id = 1", (b"not an image",))
    with FaceGallery.open(kept) as g:
        g.remove_face(4)
        g.remove_face(5)
        with pytest.raises(GalleryError, match="1 of 3 face.*face 1: its photo: "):
            reembed(g, TwoSquares(), NEW)
        assert g.info().fingerprint == OLD


def test_photos_are_required_checked_and_removed_with_their_faces(kept: Path) -> None:
    with FaceGallery.open(kept) as g:
        with pytest.raises(GalleryError, match="keeps each face's photo"):
            g.add("Ann", np.ones(8))
        for bad, message in (([b""], "photo 0 is not the non-empty bytes"),
                             (["rb.png"], "photo 0 is not the non-empty bytes"),
                             ([b"x", b"y"], "2 photos for 1 faces")):
            with pytest.raises(GalleryError, match=message):
                g.add_many(["Ann"], [np.ones(8)], images=bad)
        assert g.info().faces == 3
        rows = g.source_images([3, 2, 99])
        assert [(i, box) for i, box, _ in rows] == [(2, (21.0, 1.0, 39.0, 19.0)), (3, None)]
        assert rows[1][2] == photo(GREEN, (0, 0, 0))
        g.remove_subject("Bob")
    with sqlite3.connect(kept / "gallery.sqlite") as conn:
        assert [r[0] for r in conn.execute("SELECT face_id FROM face_images")] == [1, 3]


def test_replacing_embeddings_is_all_or_nothing(kept: Path, monkeypatch) -> None:
    with FaceGallery.open(kept) as g:
        ids = g.face_ids()
        old = g.embeddings(ids)
        for face_ids, vectors, message in (([1, 2], np.ones((2, 4)), "faces changed"),
                                           ([1, 2, 2], np.ones((3, 4)), "3 distinct|2 distinct"),
                                           (ids, np.ones((3, 5)), "must have 4 values"),
                                           (ids, np.ones((2, 4)), "2 embeddings for 3")):
            with pytest.raises(GalleryError, match=message):
                g.replace_embeddings(face_ids, vectors, 4, NEW.fingerprint, 0.9)
        with pytest.raises(GalleryError, match="threshold"):
            g.replace_embeddings(ids, np.ones((3, 4)), 4, NEW.fingerprint, 2.0)
        assert g.info().fingerprint == OLD
        assert all(np.array_equal(old[i], v) for i, v in g.embeddings(ids).items())
        # the index file goes before SQLite commits: a failure there leaves SQLite as it
        # was, and the index is rebuilt from it
        monkeypatch.setattr("facefuse.gallery.database.GalleryDatabase.replace_embeddings",
                            lambda *a: (_ for _ in ()).throw(OSError("disk full")))
        with pytest.raises(OSError, match="disk full"):
            g.replace_embeddings(ids, np.ones((3, 4)), 4, NEW.fingerprint, 0.9)
    assert not (kept / "index.faiss").exists()
    with FaceGallery.open(kept, fingerprint=OLD, readonly=True) as g:
        assert g.search(old[2])[0][0].face_id == 2


def test_overlap_of_boxes() -> None:
    assert overlap(LEFT, LEFT) == 1.0 and overlap(LEFT, RIGHT) == 0.0
    assert overlap((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert overlap((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
