"""``facefuse batch --engine ray`` on a local Ray instance (2 CPUs) over 200 real photos from
../shared/data, a video split into three frame ranges, and bad files: the same Parquet rows
as the local engine (predictions within 1e-5) and the same track summary, every bad file
named in ``files``, a rerun that does no work, and an actor killed mid-job whose work Ray
redoes, each unit written exactly once."""

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
FRAMES_PER_UNIT = 10  # the 30-frame video: three units
UNITS = 200 + len(BAD) + 3


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """A CSV manifest of 200 real photos (CelebA, UTKFace, LFW), a 30-frame video of a face
    and five bad files (one of them missing)."""
    from tests.paths import SHARED_DATA

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
    write_clip(bad / "clip.mp4", paths[0])
    manifest = bad / "manifest.csv"
    manifest.write_text("path\n" + "\n".join(map(str, paths)) + "\n"
                        + "\n".join(BAD) + "\nclip.mp4\n")
    return manifest


def write_clip(path: Path, photo: Path) -> None:
    """30 frames at 10 a second of ``photo`` drifting right across a grey frame."""
    import cv2

    face = cv2.imread(str(photo))
    h, w = face.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (2 * w, h))
    for i in range(30):
        frame = np.full((h, 2 * w, 3), 90, np.uint8)
        frame[:, 2 * i:2 * i + w] = face
        writer.write(frame)
    writer.release()


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_out(manifest: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    report = run_batch([manifest], out, FAST, "local", workers=2, chunk_size=16,
                       frames_per_unit=FRAMES_PER_UNIT)
    assert report.done == UNITS
    return out


@pytest.fixture(scope="module")
def ray_out(manifest: Path, ray_instance, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ray") / "out"
    report = run_batch([manifest], out, FAST, "ray", frames_per_unit=FRAMES_PER_UNIT,
                       ray_options=RayOptions(workers=2, batch_size=8))
    assert report.done == UNITS
    return out


def faces_of(out: Path):
    return pq.read_table(out / "faces").sort_by([("source", "ascending"),
                                                  ("frame", "ascending"),
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
            assert x == y, name
            continue
        diff = np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))
        assert diff.max() <= 1e-5, (name, diff.max())
    assert len(set(a.column("frame").drop_null().to_pylist())) == 15  # every 2nd frame
    order = [("path", "ascending"), ("frame_start", "ascending")]
    fa = pq.read_table(local_out / "files").sort_by(order)
    fb = pq.read_table(ray_out / "files").sort_by(order)
    for name in ("path", "size", "mtime_ns", "frame_start", "frame_stop", "status", "faces",
                 "error"):
        assert fa.column(name).to_pylist() == fb.column(name).to_pylist(), name
    assert fb.schema.equals(fa.schema)
    ta = pq.read_table(local_out / "tracks" / "tracks.parquet").to_pylist()
    tb = pq.read_table(ray_out / "tracks" / "tracks.parquet").to_pylist()
    assert len(ta) == len(tb) == 1 and ta[0]["frames"] == tb[0]["frames"] == 15
    assert (tb[0]["first_frame"], tb[0]["last_frame"]) == (0, 28)
    assert abs(ta[0]["age"] - tb[0]["age"]) < 1e-5


def test_files_table_names_every_bad_file(ray_out: Path) -> None:
    files = pq.read_table(ray_out / "files").to_pylist()
    assert len(files) == UNITS
    assert len({(r["path"], r["frame_start"]) for r in files}) == UNITS
    errors = {Path(r["path"]).name: r["error"] for r in files if r["status"] == "error"}
    assert set(errors) == set(BAD)
    assert "does not exist" in errors["missing.jpg"]
    assert "zero-byte" in errors["empty.jpg"]
    assert all(r["error"] is None and r["seconds"] >= 0 for r in files
               if r["status"] == "ok")
    assert len({r["worker"] for r in files}) == 2  # both actors worked


def test_rerun_does_no_work(manifest: Path, ray_out: Path, ray_instance) -> None:
    before = sorted(p.name for p in (ray_out / "faces").iterdir())
    report = run_batch([manifest], ray_out, FAST, "ray", frames_per_unit=FRAMES_PER_UNIT,
                       ray_options=RayOptions(workers=2, batch_size=8))
    assert (report.done, report.skipped) == (0, UNITS)
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
                                     frames_per_unit=FRAMES_PER_UNIT,
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
    assert not thread.is_alive() and result["report"].done == UNITS
    files = pq.read_table(out / "files").to_pylist()
    assert len({(r["path"], r["frame_start"]) for r in files}) == len(files) == UNITS
    faces = pq.read_table(out / "faces").select(["source", "frame", "face"]).to_pylist()
    assert len(faces) == len({(r["source"], r["frame"], r["face"]) for r in faces})
    assert len(faces) == sum(r["faces"] for r in files)
