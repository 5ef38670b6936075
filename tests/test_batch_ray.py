"""``facefuse batch --engine ray`` on a local Ray instance (2 CPUs) over 200 real photos from
../shared/data plus bad files: the same Parquet rows as the local engine (predictions
within 1e-5), every bad file named in ``files``, a rerun that does no work, and an actor
killed mid-job whose work Ray redoes, each input written exactly once."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from facefuse.batch.job import run_batch  # noqa: E402
from facefuse.batch.ray_engine import RayOptions  # noqa: E402
from facefuse.batch.work import BatchSettings  # noqa: E402

FAST = BatchSettings(flip=False)
BAD = ("garbage.jpg", "empty.jpg", "truncated.jpg", "notes.txt", "missing.jpg")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """A CSV manifest of 200 real photos (CelebA, UTKFace, LFW) and five bad files (one of
    them missing)."""
    from conftest import SHARED_DATA

    picks = [("celeba/img_celeba", "*.jpg", 80), ("utkface/UTKFace", "*.jpg", 60),
             ("lfw/lfw", "*/*.jpg", 60)]
    paths = []
    for folder, pattern, n in picks:
        found = sorted((SHARED_DATA / folder).glob(pattern))[:n]
        if len(found) < n:
            pytest.skip(f"real data not found under {SHARED_DATA / folder}")
        paths += found
    bad = tmp_path_factory.mktemp("bad")
    (bad / "garbage.jpg").write_bytes(b"\x00garbage" * 40)
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "truncated.jpg").write_bytes(paths[0].read_bytes()[:300])
    (bad / "notes.txt").write_text("not a photo\n")
    manifest = bad / "manifest.csv"
    manifest.write_text("path\n" + "\n".join(map(str, paths)) + "\n"
                        + "\n".join(BAD) + "\n")
    return manifest


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_out(manifest: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    report = run_batch([manifest], out, FAST, "local", workers=2, chunk_size=16)
    assert report.done == 205
    return out


@pytest.fixture(scope="module")
def ray_out(manifest: Path, ray_instance, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ray") / "out"
    report = run_batch([manifest], out, FAST, "ray",
                       ray_options=RayOptions(workers=2, batch_size=8))
    assert report.done == 205
    return out


def faces_of(out: Path):
    return pq.read_table(out / "faces").sort_by([("source", "ascending"),
                                                  ("face", "ascending")])


def test_ray_writes_the_local_engines_rows(local_out: Path, ray_out: Path) -> None:
    a, b = faces_of(local_out), faces_of(ray_out)
    assert a.schema.equals(b.schema)
    assert a.num_rows == b.num_rows >= 190
    for name in a.column_names:
        x, y = a.column(name).to_pylist(), b.column(name).to_pylist()
        kind = a.schema.field(name).type
        if pa.types.is_string(kind) or name == "attributes":
            assert x == y, name
            continue
        if name in ("frame", "time_s"):
            assert x == y == [None] * len(x)
            continue
        diff = np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))
        assert diff.max() <= 1e-5, (name, diff.max())
    fa = pq.read_table(local_out / "files").sort_by("path")
    fb = pq.read_table(ray_out / "files").sort_by("path")
    for name in ("path", "size", "mtime_ns", "status", "faces", "error"):
        assert fa.column(name).to_pylist() == fb.column(name).to_pylist(), name
    assert fb.schema.equals(fa.schema)


def test_files_table_names_every_bad_file(ray_out: Path) -> None:
    files = pq.read_table(ray_out / "files").to_pylist()
    assert len(files) == 205 and len({r["path"] for r in files}) == 205
    errors = {Path(r["path"]).name: r["error"] for r in files if r["status"] == "error"}
    assert set(errors) == set(BAD)
    assert "does not exist" in errors["missing.jpg"]
    assert "zero-byte" in errors["empty.jpg"]
    assert all(r["error"] is None and r["seconds"] >= 0 for r in files
               if r["status"] == "ok")
    assert len({r["worker"] for r in files}) == 2  # both actors worked


def test_rerun_does_no_work(manifest: Path, ray_out: Path, ray_instance) -> None:
    before = sorted(p.name for p in (ray_out / "faces").iterdir())
    report = run_batch([manifest], ray_out, FAST, "ray",
                       ray_options=RayOptions(workers=2, batch_size=8))
    assert (report.done, report.skipped) == (0, 205)
    assert sorted(p.name for p in (ray_out / "faces").iterdir()) == before


def _busy_actor() -> int | None:
    """The pid of a batch actor running a batch now (its process title says so)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "RayUnitWorker" in title and ".submit" in title:
            return int(pid)
    return None


def test_a_killed_actor_is_redone_and_each_input_written_once(manifest: Path, ray_instance,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = {}

    def job() -> None:
        result["report"] = run_batch([manifest], out, FAST, "ray",
                                     ray_options=RayOptions(workers=2, batch_size=4))

    thread = threading.Thread(target=job)
    thread.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        killed = _busy_actor()
        if killed is None:
            time.sleep(0.05)
    assert killed is not None, "no actor was seen at work"
    os.kill(killed, signal.SIGKILL)
    thread.join(240)
    assert not thread.is_alive() and result["report"].done == 205
    files = pq.read_table(out / "files").to_pylist()
    assert sorted(r["path"] for r in files) == sorted({r["path"] for r in files})
    assert len(files) == 205
    faces = pq.read_table(out / "faces").select(["source", "face"]).to_pylist()
    assert len(faces) == len({(r["source"], r["face"]) for r in faces})
    assert len(faces) == sum(r["faces"] for r in files)
