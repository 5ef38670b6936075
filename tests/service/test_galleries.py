"""The service's galleries shared by several worker processes (``facefuse serve --workers
N``): two :class:`Galleries` on one root stand for two workers (a gallery's lock is an
``flock``, which two objects of one process contend for as two processes do). Writes from
both, in parallel, all land; every read sees every write acknowledged before it; a delete
or a re-creation elsewhere is noticed; a re-embedding elsewhere is refused, not served."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

from facefuse.gallery import FaceGallery, FingerprintMismatch  # noqa: E402
from facefuse.gallery.embedding_space import EmbeddingSpace  # noqa: E402
from facefuse.service.galleries import Galleries, UnknownGallery  # noqa: E402

SPACE = EmbeddingSpace("identity:test:0123456789abcdef", 8, 0.5)


def vector(i: int) -> np.ndarray:
    return np.random.default_rng(i).normal(size=8)


@pytest.fixture
def workers(tmp_path: Path):
    a, b = (Galleries(tmp_path, SPACE, shared=True) for _ in range(2))
    yield a, b
    a.close()
    b.close()


def test_each_worker_sees_what_the_other_wrote(workers, tmp_path: Path) -> None:
    a, b = workers
    a.create("people", keep_images=False)
    assert b.get("people").info().faces == 0
    first = a.get("people").add("Ann", vector(0))
    assert [h.face_id for h in b.get("people").search(vector(0))[0]] == [first]
    second = b.get("people").add("Bob", vector(1))
    assert [s.name for s in a.get("people").subjects()] == ["Ann", "Bob"]
    assert a.get("people").search(vector(1))[0][0].face_id == second
    a.get("people").remove_face(first)
    assert [f.id for f in b.get("people").faces()] == [second]
    assert b.get("people").search(vector(0), k=2)[0][0].subject == "Bob"
    # no worker holds the lock between writes: a command-line writer gets its turn
    with FaceGallery.open(tmp_path / "people") as g:
        g.add("Cid", vector(2))
    assert a.get("people").search(vector(2))[0][0].subject == "Cid"


def test_parallel_writes_from_both_workers_all_land(workers) -> None:
    a, b = workers
    a.create("people")
    added: list[int] = []
    lock = threading.Lock()

    def enrol(galleries: Galleries, start: int) -> None:
        for i in range(start, start + 10):
            face_id = galleries.get("people").add(f"p{i % 5}", vector(i))
            with lock:
                added.append(face_id)

    threads = [threading.Thread(target=enrol, args=(w, k * 10))
               for k, w in enumerate((a, b, a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(added) == list(range(1, 41))
    for w in (a, b):
        assert w.get("people").info().faces == 40
        for i in (0, 17, 39):
            assert w.get("people").search(vector(i))[0][0].subject == f"p{i % 5}"


def test_a_gallery_deleted_or_made_again_elsewhere_is_noticed(workers) -> None:
    a, b = workers
    a.create("people")
    a.get("people").add("Ann", vector(0))
    assert b.get("people").info().faces == 1
    a.delete("people")
    with pytest.raises(UnknownGallery):
        b.get("people")
    with pytest.raises(UnknownGallery):
        b.delete("people")
    a.create("people")
    a.get("people").add("Bob", vector(1))
    assert [s.name for s in b.get("people").subjects()] == ["Bob"]
    assert b.names() == ["people"]


def test_a_gallery_reembedded_elsewhere_is_refused(workers, tmp_path: Path) -> None:
    a, _ = workers
    a.create("people")
    face_id = a.get("people").add("Ann", vector(0))
    with FaceGallery.open(tmp_path / "people") as g:
        g.replace_embeddings([face_id], [np.ones(4)], 4, "identity:other:0000", 0.5)
    for _ in range(2):  # refused until the service is started for the new weights
        with pytest.raises(FingerprintMismatch, match="was re-embedded"):
            a.get("people").search(vector(0))
