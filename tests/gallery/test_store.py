"""The persistent face gallery (facefuse.gallery) on random unit vectors: what it answers,
what it refuses, what survives a reopen, a damaged index file, threads and kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

from facefuse.gallery import (  # noqa: E402  (after the skip when faiss is missing)
    EmptyGallery,
    FaceGallery,
    FingerprintMismatch,
    GalleryBusy,
    GalleryError,
    UnknownFace,
    UnknownSubject,
)
from facefuse.gallery.index import index_ids, new_index  # noqa: E402

DIM = 32
FP = "identity:test:0123456789abcdef"


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def people() -> dict[str, np.ndarray]:
    """Five subjects with four faces each, scattered around each subject's own direction."""
    rng = np.random.default_rng(0)
    return {f"person_{i}": unit(rng.normal(size=DIM) + 0.3 * rng.normal(size=(4, DIM)))
            for i in range(5)}


def fill(gallery: FaceGallery, people: dict[str, np.ndarray]) -> dict[int, str]:
    ids = {}
    for name, faces in people.items():
        added = gallery.add_many([name] * len(faces), faces,
                                 [f"{name}/{i}.jpg" for i in range(len(faces))],
                                 [(1, 2, 30, 40)] * len(faces))
        ids.update(dict.fromkeys(added, name))
    return ids


def brute_force(people: dict[str, np.ndarray], query: np.ndarray, k: int
                ) -> list[tuple[str, float]]:
    """Each subject's best cosine to ``query``, the ``k`` best subjects first."""
    best = {n: float(np.max(f @ unit(query))) for n, f in people.items() if len(f)}
    return sorted(best.items(), key=lambda kv: -kv[1])[:k]


def test_search_gives_each_subjects_best_face_and_matches_at_the_threshold(
        tmp_path: Path, people) -> None:
    with FaceGallery.create(tmp_path / "g", DIM, FP, threshold=0.6) as g:
        ids = fill(g, people)
        assert len(ids) == 20 and sorted(ids) == list(range(1, 21))
        rng = np.random.default_rng(1)
        queries = unit(people["person_3"][0] + 0.2 * rng.normal(size=(3, DIM)))
        results = g.search(queries, k=3)
        for query, hits in zip(queries, results, strict=True):
            expected = brute_force(people, query, 3)
            assert [h.subject for h in hits] == [n for n, _ in expected]
            assert [h.score for h in hits] == pytest.approx([s for _, s in expected], abs=1e-5)
            assert [h.match for h in hits] == [s >= 0.6 for _, s in expected]
            assert ids[hits[0].face_id] == hits[0].subject == "person_3"
        assert len(g.search(queries[0], k=50)[0]) == 5  # every subject, no more
        info = g.info()
        assert (info.dim, info.fingerprint, info.threshold, info.subjects, info.faces) == \
            (DIM, FP, 0.6, 5, 20)


def test_a_subject_with_many_close_faces_does_not_hide_the_others(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    query = unit(rng.normal(size=DIM))
    crowd = unit(query + 0.05 * rng.normal(size=(200, DIM)))  # the 200 nearest faces
    others = {f"other_{i}": unit(rng.normal(size=(2, DIM))) for i in range(6)}
    with FaceGallery.create(tmp_path / "g", DIM, FP, 0.5) as g:
        g.add_many(["crowd"] * 200, crowd)
        for name, faces in others.items():
            g.add_many([name] * 2, faces)
        hits = g.search(query, k=4)[0]
    expected = brute_force({"crowd": crowd, **others}, query, 4)
    assert [h.subject for h in hits] == [n for n, _ in expected]
    assert hits[0].subject == "crowd" and len(hits) == 4


def test_everything_persists_across_a_reopen(tmp_path: Path, people) -> None:
    folder = tmp_path / "g"
    with FaceGallery.create(folder, DIM, FP, 0.5) as g:
        ids = fill(g, people)
        g.remove_face(1)
        assert g.remove_subject("person_4") == 4
        before = (g.subjects(), g.faces(), g.search(people["person_2"], k=2))
    with FaceGallery.open(folder, fingerprint=FP) as g:
        assert (g.subjects(), g.faces(), g.search(people["person_2"], k=2)) == before
        face = g.faces("person_1")[0]
        assert (face.subject, face.source, face.box) == ("person_1", "person_1/0.jpg",
                                                         (1.0, 2.0, 30.0, 40.0))
        stored = g.embeddings([face.id, 1])
        assert list(stored) == [face.id]  # face 1 was removed
        np.testing.assert_array_equal(stored[face.id], people["person_1"][0])
        assert 1 not in {f.id for f in g.faces()} and "person_4" not in \
            [s.name for s in g.subjects()]
        new = g.add("person_0", people["person_0"][0])
        assert new == max(ids) + 1  # ids are never reused, even after removals


def test_bad_input_is_refused_with_a_clear_error(tmp_path: Path, people) -> None:
    folder = tmp_path / "g"
    g = FaceGallery.create(folder, DIM, FP, 0.5)
    with pytest.raises(EmptyGallery, match="no face to search"):
        g.search(people["person_0"][0])
    vector = people["person_0"][0]
    bad_vectors = {"must have 32 values": np.ones(DIM + 1), "not finite": np.full(DIM, np.nan),
                   "zero vector": np.zeros(DIM), "must be numbers": "abc"}
    for message, v in bad_vectors.items():
        with pytest.raises(GalleryError, match=message):
            g.add("someone", v)
    for name in ("", "a/b", " padded", "tab\tin", "x" * 129, 7):
        with pytest.raises(GalleryError, match="invalid subject name"):
            g.add(name, vector)
    with pytest.raises(GalleryError, match="four finite numbers"):
        g.add("someone", vector, box=(0, 0, 1))
    with pytest.raises(GalleryError, match="2 subjects for 1 embeddings"):
        g.add_many(["a", "b"], [vector])
    with pytest.raises(GalleryError, match="embedding 1 has a value that is not finite"):
        g.add_many(["a", "b"], [vector, np.full(DIM, np.inf)])
    assert g.info().faces == 0  # nothing of a refused batch was added
    fill(g, people)
    for k in (0, -1, 1.5, True):
        with pytest.raises(GalleryError, match="k must be a whole number"):
            g.search(vector, k=k)
    with pytest.raises(GalleryError, match="each query must have 32 values"):
        g.search(np.ones(DIM - 1))
    with pytest.raises(UnknownFace, match="no face 999"):
        g.remove_face(999)
    with pytest.raises(UnknownSubject, match="no subject 'nobody'"):
        g.remove_subject("nobody")
    with pytest.raises(UnknownSubject):
        g.faces("nobody")
    with pytest.raises(GalleryError, match="already holds a gallery"):
        FaceGallery.create(folder, DIM, FP, 0.5)
    g.close()
    g.close()  # twice is fine
    with pytest.raises(GalleryError, match="is closed"):
        g.search(vector)
    with pytest.raises(GalleryError, match="is closed"):
        g.subjects()
    with pytest.raises(FileNotFoundError, match="no gallery in"):
        FaceGallery.open(tmp_path / "elsewhere")
    for dim, fp, threshold in ((0, FP, 0.5), (DIM, "", 0.5), (DIM, FP, 1.5),
                               (DIM, FP, float("nan"))):
        with pytest.raises(GalleryError):
            FaceGallery.create(tmp_path / "other", dim, fp, threshold)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "gallery.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(GalleryError, match="is not a facefuse gallery"):
        FaceGallery.open(tmp_path / "junk")


def test_a_gallery_made_with_other_weights_is_refused_naming_both(tmp_path: Path) -> None:
    FaceGallery.create(tmp_path / "g", DIM, FP, 0.5).close()
    with pytest.raises(FingerprintMismatch) as refused:
        FaceGallery.open(tmp_path / "g", fingerprint="model:other:fedcba9876543210")
    message = str(refused.value)
    assert FP in message and "model:other:fedcba9876543210" in message
    assert "\n" not in message
    FaceGallery.open(tmp_path / "g", fingerprint=FP).close()  # the refusal left no lock


@pytest.mark.parametrize("damage", ["deleted", "truncated", "garbage", "other_width",
                                    "other_vectors", "half_written_temp"])
def test_a_missing_or_damaged_index_is_rebuilt_from_sqlite(tmp_path: Path, people,
                                                           damage: str) -> None:
    import faiss

    folder = tmp_path / "g"
    with FaceGallery.create(folder, DIM, FP, 0.5) as g:
        ids = fill(g, people)
        expected = g.search(people["person_2"][1], k=3)
    index_file = folder / "index.faiss"
    if damage == "deleted":
        index_file.unlink()
    elif damage == "truncated":
        data = index_file.read_bytes()
        index_file.write_bytes(data[:len(data) // 2])
    elif damage == "garbage":
        index_file.write_bytes(os.urandom(4096))
    elif damage == "other_width":
        faiss.write_index(new_index(DIM * 2), str(index_file))
    elif damage == "other_vectors":  # reads fine, same ids, wrong vectors
        liar = new_index(DIM)
        liar.add_with_ids(unit(np.random.default_rng(9).normal(size=(len(ids), DIM))),
                          np.asarray(sorted(ids), np.int64))
        faiss.write_index(liar, str(index_file))
    else:  # a writer killed mid-write leaves its temporary file, never the index itself
        (folder / "index.faiss.tmp-99999").write_bytes(index_file.read_bytes()[:100])
    with FaceGallery.open(folder, fingerprint=FP) as g:
        assert g.search(people["person_2"][1], k=3) == expected
    assert not list(folder.glob("index.faiss.tmp-*"))
    rebuilt = faiss.read_index(str(index_file))  # and saved whole
    assert sorted(index_ids(rebuilt).tolist()) == sorted(ids)


def test_a_stale_index_file_is_brought_up_to_date(tmp_path: Path, people) -> None:
    folder = tmp_path / "g"
    with FaceGallery.create(folder, DIM, FP, 0.5) as g:
        fill(g, {n: people[n] for n in ("person_0", "person_1")})
        old_index = (folder / "index.faiss").read_bytes()
        fill(g, {n: people[n] for n in ("person_2", "person_3")})
        g.remove_subject("person_0")
        expected = [g.search(people[n][0], k=2) for n in people if n != "person_4"]
        current = sorted(f.id for f in g.faces())
    (folder / "index.faiss").write_bytes(old_index)  # as if the last saves never happened
    with FaceGallery.open(folder, readonly=True) as g:  # caught up in memory only
        assert [g.search(people[n][0], k=2) for n in people if n != "person_4"] == expected
    assert (folder / "index.faiss").read_bytes() == old_index
    with FaceGallery.open(folder) as g:
        assert [g.search(people[n][0], k=2) for n in people if n != "person_4"] == expected
    import faiss

    assert sorted(index_ids(faiss.read_index(str(folder / "index.faiss"))).tolist()) == current


def test_one_writer_at_a_time_and_readers_beside_it(tmp_path: Path, people) -> None:
    folder = tmp_path / "g"
    writer = FaceGallery.create(folder, DIM, FP, 0.5, autosave=False)
    fill(writer, people)
    with pytest.raises(GalleryBusy, match="open for writing elsewhere"):
        FaceGallery.open(folder)
    with FaceGallery.open(folder, readonly=True) as reader:  # sees every committed face
        assert reader.info().faces == 20
        assert reader.search(people["person_1"][2])[0][0].subject == "person_1"
        with pytest.raises(GalleryError, match="read-only"):
            reader.add("x", people["person_1"][0])
    assert not (folder / "index.faiss").exists()  # autosave=False: held back until close
    writer.close()
    assert (folder / "index.faiss").is_file()
    with FaceGallery.open(folder) as again:
        assert again.info().faces == 20


def test_threads_can_share_one_gallery(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    vectors = unit(rng.normal(size=(8, 40, DIM)))
    errors: list[BaseException] = []
    got: dict[int, list[int]] = {}
    with FaceGallery.create(tmp_path / "g", DIM, FP, 0.5) as g:
        g.add("seed", vectors[0, 0])

        def work(t: int) -> None:
            try:
                got[t] = [g.add(f"thread_{t}", v) for v in vectors[t]]
                for v in vectors[t][:5]:
                    assert g.search(v, k=1)[0][0].subject == f"thread_{t}"
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
    all_ids = [i for ids in got.values() for i in ids]
    assert len(set(all_ids)) == 320
    with FaceGallery.open(tmp_path / "g") as g:
        assert g.info().faces == 321
        for t, ids in got.items():
            stored = g.embeddings(ids)
            np.testing.assert_array_equal(np.stack([stored[i] for i in ids]), vectors[t])


KILL_WORKER = textwrap.dedent("""
    import sys
    import numpy as np
    from facefuse.gallery import FaceGallery

    folder, start, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with FaceGallery.open(folder) as g:
        for i in range(start, start + 100000):
            v = np.random.default_rng(i).normal(size=dim)
            face_id = g.add(f"subject_{i % 7}", v, source=f"seed {i}")
            print(i, face_id, flush=True)  # acknowledged
""")


def test_every_acknowledged_face_survives_kill_9(tmp_path: Path) -> None:
    """A process adds faces one by one (each saving the index), printing each id once
    add() returns; it is killed with SIGKILL at a random moment, three times over; every
    acknowledged face is then there, with its embedding, and the index matches SQLite."""
    import faiss

    dim, folder = 64, tmp_path / "g"
    rng = np.random.default_rng(4)
    with FaceGallery.create(folder, dim, FP, 0.5) as g:  # index writes take a while
        g.add_many(["bulk"] * 20000, rng.normal(size=(20000, dim)))
    acknowledged: dict[int, int] = {}
    for round_ in range(3):
        worker = subprocess.Popen([sys.executable, "-c", KILL_WORKER, str(folder),
                                   str(round_ * 100000), str(dim)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        target = int(rng.integers(3, 15))
        while len([k for k in acknowledged if k >= round_ * 100000]) < target:
            line = worker.stdout.readline()
            assert line, worker.stderr.read()
            seed, face_id = map(int, line.split())
            acknowledged[seed] = face_id
        threading.Event().wait(float(rng.uniform(0, 0.05)))  # anywhere in the next add
        worker.send_signal(signal.SIGKILL)
        rest, _ = worker.communicate()
        for line in rest.splitlines():  # acknowledged before the kill landed
            seed, face_id = map(int, line.split())
            acknowledged[seed] = face_id
        assert worker.returncode == -signal.SIGKILL
    with FaceGallery.open(folder) as g:
        stored = g.embeddings(list(acknowledged.values()))
        assert set(stored) == set(acknowledged.values())
        for seed, face_id in acknowledged.items():
            expected = np.random.default_rng(seed).normal(size=dim)
            np.testing.assert_allclose(stored[face_id], unit(expected), atol=1e-6)
            hit = g.search(stored[face_id], k=1)[0][0]
            assert hit.face_id == face_id and hit.score == pytest.approx(1.0, abs=1e-5)
        known = sorted(f.id for f in g.faces())
    assert not list(folder.glob("index.faiss.tmp-*"))
    saved = faiss.read_index(str(folder / "index.faiss"))
    assert sorted(index_ids(saved).tolist()) == known


def test_sqlite_holds_512_d_embeddings_without_wasting_pages(tmp_path: Path) -> None:
    vectors = unit(np.random.default_rng(5).normal(size=(3000, 512)))
    with FaceGallery.create(tmp_path / "g", 512, FP, 0.5) as g:
        g.add_many(["someone"] * len(vectors), vectors)
    size = (tmp_path / "g" / "gallery.sqlite").stat().st_size
    assert size < 1.25 * vectors.nbytes  # 4 KiB pages would hold one 2 KiB row each
