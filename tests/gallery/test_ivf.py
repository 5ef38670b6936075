"""The gallery's switch from the exact index to IVF at a size (a tiny ``ivf_above`` here):
the write that reaches it rebuilds the index as IVF, which is saved, reloaded, caught up
and searched like the exact one; an exact gallery opened past the size becomes IVF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

from facefuse.gallery import FaceGallery, GalleryError  # noqa: E402
from facefuse.gallery.index import (  # noqa: E402
    index_ids,
    ivf_lists,
    ivf_nprobe,
    read_index,
)

DIM, FP, ABOVE = 16, "identity:test:0123456789abcdef", 300


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def faces() -> np.ndarray:
    """400 faces of 100 subjects (4 each, around each subject's direction)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(100, 1, DIM))
    return unit((centres + 0.2 * rng.normal(size=(100, 4, DIM))).reshape(-1, DIM))


def names(n: int, start: int = 0) -> list[str]:
    return [f"s{i // 4}" for i in range(start, start + n)]


def file_kind(folder: Path) -> str:
    index, problem = read_index(folder / "index.faiss", DIM)
    assert index is not None, problem
    return type(index).__name__


def best_face(faces: np.ndarray, ids: list[int], query: np.ndarray) -> int:
    return ids[int(np.argmax(faces @ query))]


def test_the_write_that_reaches_the_size_makes_the_index_ivf(tmp_path: Path, faces) -> None:
    folder = tmp_path / "g"
    with FaceGallery.create(folder, DIM, FP, 0.5, ivf_above=ABOVE) as g:
        ids = g.add_many(names(ABOVE - 1), faces[:ABOVE - 1])
        assert g.index_kind == "exact" and file_kind(folder) == "IndexIDMap2"
        ids += g.add_many(names(1, ABOVE - 1), faces[ABOVE - 1:ABOVE])
        assert g.index_kind == "ivf" and file_kind(folder) == "IndexIVFFlat"
        ids += g.add_many(names(100, ABOVE), faces[ABOVE:])  # added to the trained lists
        assert file_kind(folder) == "IndexIVFFlat"
        # 400 faces: 4 lists (64 training vectors each), all probed, so as exact
        assert ivf_lists(400) == 4 and g._index.ready().nprobe == 4
        rng = np.random.default_rng(1)
        for i in rng.choice(len(faces), 40, replace=False):
            query = unit(faces[i] + 0.01 * rng.normal(size=DIM))
            hit = g.search(query, k=3)[0]
            assert hit[0].face_id == best_face(faces, ids, query) == ids[i]
            assert len(hit) == 3 and hit[0].score >= hit[1].score >= hit[2].score
        g.remove_subject("s0")
        g.remove_face(ids[10])
    with FaceGallery.open(folder, ivf_above=ABOVE, readonly=True) as g:
        assert g.index_kind == "ivf"
        held = set(index_ids(read_index(folder / "index.faiss", DIM)[0]).tolist())
        assert held == set(ids) - set(ids[:4]) - {ids[10]}
        assert g.search(faces[20])[0][0].face_id == ids[20]


def test_an_ivf_index_behind_sqlite_is_caught_up(tmp_path: Path, faces) -> None:
    folder = tmp_path / "g"
    with FaceGallery.create(folder, DIM, FP, 0.5, ivf_above=ABOVE) as g:
        ids = g.add_many(names(ABOVE), faces[:ABOVE])
    with FaceGallery.open(folder, ivf_above=ABOVE, autosave=False) as g:
        ids += g.add_many(names(100, ABOVE), faces[ABOVE:])
        g.remove_face(ids[0])
        g._index.dirty = False  # as if killed before the index was saved
    index, _ = read_index(folder / "index.faiss", DIM)
    assert index.ntotal == ABOVE  # the file is behind SQLite
    with FaceGallery.open(folder, ivf_above=ABOVE) as g:
        assert g.search(faces[399])[0][0].face_id == ids[399]
        assert g.search(faces[0])[0][0].face_id != ids[0]
        assert g.index_kind == "ivf"
    held = index_ids(read_index(folder / "index.faiss", DIM)[0])
    assert sorted(held.tolist()) == ids[1:]


def test_an_exact_gallery_past_the_size_becomes_ivf_and_rebuild_chooses_again(
        tmp_path: Path, faces) -> None:
    folder = tmp_path / "g"
    with FaceGallery.create(folder, DIM, FP, 0.5, ivf_above=None) as g:
        ids = g.add_many(names(400), faces)
        assert g.index_kind == "exact"
    with FaceGallery.open(folder, ivf_above=ABOVE, readonly=True) as g:
        assert g.index_kind == "exact"  # a reader does not train what it cannot save
    with FaceGallery.open(folder, ivf_above=ABOVE) as g:
        assert g.index_kind == "ivf" and file_kind(folder) == "IndexIVFFlat"
        for face_id in ids[:150]:
            g.remove_face(face_id)
        assert g.index_kind == "ivf"  # it stays IVF below the size ...
        g.rebuild_index()
        assert g.index_kind == "exact"  # ... until rebuilt, by size again
        assert g.search(faces[200])[0][0].face_id == ids[200]
    assert file_kind(folder) == "IndexIDMap2"


def test_an_ivf_file_without_its_id_table_is_rebuilt(tmp_path: Path, faces) -> None:
    import faiss

    folder = tmp_path / "g"
    with FaceGallery.create(folder, DIM, FP, 0.5, ivf_above=ABOVE) as g:
        ids = g.add_many(names(400), faces)
    bare = faiss.index_factory(DIM, "IVF4,Flat", faiss.METRIC_INNER_PRODUCT)
    bare.train(faces)
    bare.add_with_ids(faces, np.asarray(ids, np.int64))
    faiss.write_index(bare, str(folder / "index.faiss"))
    assert read_index(folder / "index.faiss", DIM)[0] is None
    with FaceGallery.open(folder, ivf_above=ABOVE) as g:
        assert g.search(faces[5])[0][0].face_id == ids[5]
    assert file_kind(folder) == "IndexIVFFlat"


@pytest.mark.parametrize("bad", [0, -5, 2.5, "300"])
def test_a_bad_size_is_refused(tmp_path: Path, bad) -> None:
    with pytest.raises(GalleryError, match="ivf_above is a whole number"):
        FaceGallery.create(tmp_path / "g", DIM, FP, 0.5, ivf_above=bad)
    assert not (tmp_path / "g" / "gallery.sqlite").exists()


def test_the_number_of_lists_grows_with_the_root_of_the_size() -> None:
    assert [ivf_lists(n) for n in (1, 100, 400, 10**5, 10**6)] == [1, 1, 4, 256, 1024]
    # an eighth of them probed, all of a small index, 16 at least
    assert [ivf_nprobe(k) for k in (1, 4, 16, 64, 256, 1024)] == [1, 4, 16, 16, 32, 128]
