"""``facefuse batch`` with the local engine: inputs and manifests, the Parquet schema, bad
files as rows, reruns that skip what is done, the commit ledger after a killed run, videos
split into frame ranges with track summaries, and the missing-extra line. The Ray engine is
in tests/batch/test_ray_engine.py."""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from facefuse.batch.inputs import WorkUnit, list_units, read_manifest  # noqa: E402
from facefuse.batch.job import run_batch  # noqa: E402
from facefuse.batch.ledger import BatchConflict, OutputFolder  # noqa: E402
from facefuse.batch.work import BatchSettings  # noqa: E402
from facefuse.cli import main  # noqa: E402

FAST = BatchSettings(flip=False)  # the tests compare engines and reruns, not quality


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Six CelebA photos (linked) and two bad files in a folder."""
    from tests.paths import SHARED_DATA

    src = SHARED_DATA / "celeba" / "img_celeba"
    if not src.is_dir():
        pytest.skip(f"real data not found at {src}")
    folder = tmp_path_factory.mktemp("photos")
    for p in sorted(src.glob("*.jpg"))[:6]:
        (folder / p.name).symlink_to(p)
    (folder / "not_an_image.jpg").write_bytes(b"this is no JPEG")
    (folder / "empty.png").write_bytes(b"")
    return folder


def read(out: Path, name: str):
    return pq.read_table(out / name)


def test_list_units_keys_folders_globs_and_manifests(photos: Path, tmp_path: Path) -> None:
    units = list_units([photos])
    assert len(units) == 8 and all(u.kind == "photo" for u in units)
    first = units[0]
    assert first.size == Path(first.path).stat().st_size > 0
    assert first.key() == (first.path, first.size, first.mtime_ns, -1)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "\n".join(
        f"{Path(u.path).name},x" for u in units[:3]) + "\nmissing.jpg,y\n")
    shutil.copy(manifest, photos / "m.csv")  # relative paths: from the manifest's folder
    listed = read_manifest(photos / "m.csv")
    (photos / "m.csv").unlink()
    assert listed[:3] == [u.path for u in units[:3]]
    table = pa.table({"path": [u.path for u in units[:2]] * 2})  # repeats are listed once
    pq.write_table(table, tmp_path / "m.parquet")
    assert [u.path for u in list_units([tmp_path / "m.parquet"])] == \
        [u.path for u in units[:2]]
    missing = list_units([str(photos / "nope.jpg")])[0]  # a unit still, with no size
    assert (missing.size, missing.mtime_ns) == (-1, -1)


def test_bad_manifests_and_inputs_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "m.csv"
    bad.write_text("file\na.jpg\n")
    with pytest.raises(ValueError, match="no 'path' column"):
        list_units([bad])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_units([tmp_path / "absent.parquet"])
    with pytest.raises(FileNotFoundError, match="no file matches"):
        list_units([str(tmp_path / "*.jpg")])
    empty = tmp_path / "e.csv"
    empty.write_text("path\n")
    with pytest.raises(ValueError, match="name no file"):
        list_units([empty])


def test_local_batch_writes_faces_files_and_manifest(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = run_batch([photos], out, FAST, chunk_size=3)
    assert (report.units, report.done, report.skipped) == (8, 8, 0)
    files = read(out, "files").sort_by("path")
    bad = {Path(p).name: e for p, s, e in zip(*(files.column(c).to_pylist() for c in
                                                  ("path", "status", "error")),
                                                strict=True) if s == "error"}
    assert set(bad) == {"not_an_image.jpg", "empty.png"}
    assert "zero-byte" in bad["empty.png"] and "not an image" in bad["not_an_image.jpg"]
    faces = read(out, "faces")
    assert faces.num_rows == sum(files.column("faces").to_pylist()) >= 6
    assert faces.schema.field("embedding").type == pa.list_(pa.float32(), 256)
    assert faces.schema.field("landmarks").type == pa.list_(pa.float32(), 136)
    assert faces.schema.field("attributes_scores").type.list_size == 40
    emb = np.asarray(faces.column("embedding").to_pylist(), np.float32)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3)
    assert set(faces.column("gender").to_pylist()) <= {"male", "female"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"] == {"units": 8, "errors": 2, "faces": faces.num_rows,
                                  "video_units": 0}
    assert manifest["fingerprints"]["embedding"].startswith("identity:")
    assert manifest["runs"][-1]["done"] == 8
    # the same photo through the analyzer directly: the same face, the same predictions
    from facefuse.inference.analyzer import FaceAnalyzer

    path = sorted(p for p in files.column("path").to_pylist() if p.endswith("jpg")
                  and "not_an" not in p)[0]
    direct = FaceAnalyzer(flip=False).analyze(path)
    row = faces.filter(pa.compute.equal(faces.column("source"), path)).to_pylist()[0]
    assert row["age"] == direct.faces[0].predictions["age"]
    assert np.allclose(row["embedding"], direct.faces[0].predictions["embedding"], atol=1e-6)


def test_rerun_skips_done_and_does_changed_files(photos: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    shutil.copytree(photos, folder, symlinks=True)
    out = tmp_path / "out"
    run_batch([folder], out, FAST, chunk_size=4)
    again = run_batch([folder], out, FAST, chunk_size=4)
    assert (again.done, again.skipped) == (0, 8)
    (folder / "empty.png").write_bytes(b"still not an image")  # its size changed: redone
    third = run_batch([folder], out, FAST, chunk_size=4)
    assert (third.done, third.skipped) == (1, 7)
    assert read(out, "files").num_rows == 9  # the old row of the changed file, and its new
    with pytest.raises(BatchConflict, match="embed_only"):
        run_batch([folder], out, BatchSettings(flip=False, embed_only=True))


def test_a_killed_run_leaves_no_half_written_piece(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_batch([photos], out, FAST, chunk_size=4)
    folder = OutputFolder(out)
    files = sorted((out / "files").glob("*.parquet"))
    faces = sorted((out / "faces").glob("*.parquet"))
    # a run killed mid-commit: one piece's files moved back to staging, marker written ...
    committed = folder.new_piece("local")
    shutil.move(str(files[0]), committed / "files" / "part.parquet")
    face_part = next(f for f in faces if f.name.split("-part")[0] ==
                     files[0].name.split("-part")[0])
    shutil.move(str(face_part), committed / "faces" / "part.parquet")
    (committed / "COMMITTED").write_text("")
    # ... and one killed before its marker: its faces must never be seen
    unfinished = folder.new_piece("local")
    shutil.copy(faces[-1], unfinished / "faces" / "part.parquet")
    report = run_batch([photos], out, FAST, chunk_size=4)
    assert report.recovered == (1, 1) and report.done == 0
    assert not any((out / ".staging").iterdir())
    sources = read(out, "faces").column("source").to_pylist()
    per_face = read(out, "faces").select(["source", "face"]).to_pylist()
    assert len(per_face) == len({(r["source"], r["face"]) for r in per_face})
    assert len(set(sources)) == 6


def test_embed_only_and_features(photos: Path, tmp_path: Path) -> None:
    run_batch([photos], tmp_path / "e", BatchSettings(flip=False, embed_only=True,
                                                       features=True))
    faces = read(tmp_path / "e", "faces")
    assert "age" not in faces.column_names and "landmarks" not in faces.column_names
    assert faces.schema.field("embedding").type.list_size == 256
    assert faces.schema.field("features").type.list_size > 0


def test_videos_split_into_frame_ranges_with_track_summaries(photos: Path,
                                                              tmp_path: Path) -> None:
    import cv2

    from facefuse.data.images import load_rgb

    face = load_rgb(sorted(photos.glob("0*.jpg"))[0])
    clip = tmp_path / "clip.mp4"
    h, w = face.shape[:2]
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (2 * w, h))
    for i in range(30):  # the face drifts right across a grey frame
        frame = np.full((h, 2 * w, 3), 90, np.uint8)
        frame[:, i * 2:i * 2 + w] = face
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    units = list_units([clip], frames_per_unit=10)
    assert [(u.frame_start, u.frame_stop) for u in units] == [(0, 10), (10, 20), (20, None)]
    out = tmp_path / "out"
    settings = BatchSettings(flip=False, fps=None, stride=5)
    report = run_batch([clip], out, settings, frames_per_unit=10, chunk_size=1)
    assert report.done == 3
    faces = read(out, "faces").sort_by("frame")
    assert faces.column("frame").to_pylist() == [0, 5, 10, 15, 20, 25]  # every 5th, once
    tracks = pq.read_table(out / "tracks" / "tracks.parquet").to_pylist()
    assert len(tracks) == 1 and tracks[0]["frames"] == 6
    assert (tracks[0]["first_frame"], tracks[0]["last_frame"]) == (0, 25)
    # the same frames, unsplit, find the same faces
    whole = run_batch([clip], tmp_path / "whole", settings, frames_per_unit=1000)
    assert whole.done == 1
    again = read(tmp_path / "whole", "faces").sort_by("frame")
    assert np.allclose(again.column("age").to_numpy(), faces.column("age").to_numpy())


def test_work_unit_for_a_video_that_cannot_be_opened_is_an_error_row(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"no video at all")
    assert list_units([bad]) == [WorkUnit(str(bad), bad.stat().st_size,
                                          bad.stat().st_mtime_ns, "video", 0, None)]
    run_batch([bad], tmp_path / "out", FAST)
    row = read(tmp_path / "out", "files").to_pylist()[0]
    assert row["status"] == "error" and str(bad) in row["error"]


def test_cli_batch_and_its_errors(photos: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "out"
    code = main(["batch", str(photos), "--out", str(out), "--quiet", "--no-flip",
                 "--workers", "2", "--batch-size", "3"])
    assert code == 1  # two bad files: reported in files, the rest done
    assert read(out, "files").num_rows == 8
    assert main(["batch", str(photos), "--out", str(out), "--no-flip"]) == 1
    assert "8 skipped as done before" in capsys.readouterr().err
    assert main(["batch", str(photos), "--out", str(out), "--embed-only"]) == 2
    assert "holds results made with setting" in capsys.readouterr().err
    assert main(["batch", str(tmp_path / "*.nothing"), "--out", str(out)]) == 2
    assert "no file matches" in capsys.readouterr().err
    if importlib.util.find_spec("ray") is not None:  # a closed port: one line, at once
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed = f"127.0.0.1:{probe.getsockname()[1]}"
        assert main(["batch", str(photos), "--out", str(tmp_path / "r"), "--engine", "ray",
                     "--address", closed]) == 2
        assert f"no Ray cluster answers at {closed}" in capsys.readouterr().err
    import facefuse.extras as extras

    real = extras.installed
    monkeypatch.setattr(extras, "installed", lambda m: m not in ("pyarrow", "ray")
                        and real(m))
    assert main(["batch", str(photos), "--out", str(out)]) == 2
    assert "pip install 'facefuse[batch]'" in capsys.readouterr().err
    assert main(["batch", str(photos), "--out", str(out), "--engine", "ray"]) == 2
    assert "pip install 'facefuse[ray]'" in capsys.readouterr().err


def test_gallery_add_from_parquet_enrols_what_from_folder_would(tmp_path: Path,
                                                                 capsys) -> None:
    pytest.importorskip("faiss")
    from tests.paths import SHARED_DATA

    people = tmp_path / "people"
    lfw = SHARED_DATA / "lfw" / "lfw"
    names = sorted(d.name for d in lfw.iterdir() if len(list(d.glob("*.jpg"))) >= 3)[:2]
    if len(names) < 2:
        pytest.skip("LFW not found")
    for name in names:
        (people / name).mkdir(parents=True)
        for p in sorted((lfw / name).glob("*.jpg"))[:2]:
            (people / name / p.name).symlink_to(p)
    out = tmp_path / "emb"
    assert main(["batch", str(people), "--out", str(out), "--embed-only", "--quiet"]) == 0
    bulk, folder = tmp_path / "bulk.gallery", tmp_path / "folder.gallery"
    for g in (bulk, folder):
        assert main(["gallery", "create", str(g)]) == 0
    assert main(["gallery", "add", str(bulk), "--from-parquet", str(out), "--quiet"]) == 0
    added = [json.loads(line) for line in capsys.readouterr().out.splitlines()
             if '"face_id"' in line]
    assert sorted({a["subject"] for a in added}) == names and len(added) == 4
    assert main(["gallery", "add", str(folder), "--from-folder", str(people),
                 "--quiet"]) == 0
    from facefuse.gallery import FaceGallery

    def vectors(path: Path) -> dict[str, np.ndarray]:
        with FaceGallery.open(path, readonly=True) as g:
            faces = g.faces()
            got = g.embeddings([f.id for f in faces])
            return {f.source: got[f.id] for f in faces}

    a, b = vectors(bulk), vectors(folder)
    assert sorted(a) == sorted(b) and len(a) == 4
    for source, vector in a.items():
        assert np.abs(vector - b[source]).max() < 1e-5
    # embeddings of other weights are refused, in one line
    own = tmp_path / "own.gallery"
    assert main(["gallery", "create", str(own), "--identity", "none"]) == 0
    capsys.readouterr()
    assert main(["gallery", "add", str(own), "--from-parquet", str(out)]) == 2
    assert "holds embeddings of model:" in capsys.readouterr().err
    assert main(["gallery", "add", str(own), "--from-parquet", str(tmp_path)]) == 2
    assert "not a `facefuse batch` output folder" in capsys.readouterr().err


def test_manifest_uris_are_read_through_pyarrow_fs(photos: Path, tmp_path: Path) -> None:
    real = sorted(photos.glob("0*.jpg"))[:2]
    manifest = tmp_path / "uris.csv"
    manifest.write_text("path\n" + "".join(f"file://{p.resolve()}\n" for p in real)
                        + f"file://{tmp_path}/absent.jpg\n")
    units = list_units([manifest])
    assert units[0].size == real[0].resolve().stat().st_size and units[2].size == -1
    run_batch([manifest], tmp_path / "out", FAST)
    files = {r["path"]: r for r in read(tmp_path / "out", "files").to_pylist()}
    assert [files[f"file://{p.resolve()}"]["status"] for p in real] == ["ok", "ok"]
    assert files[f"file://{tmp_path}/absent.jpg"]["status"] == "error"
    sources = set(read(tmp_path / "out", "faces").column("source").to_pylist())
    assert sources == {f"file://{p.resolve()}" for p in real}
    # the same photos by path: the same faces
    by_path = run_batch(real, tmp_path / "paths", FAST)
    assert by_path.totals["faces"] == len(read(tmp_path / "out", "faces"))


def test_a_first_run_that_dies_can_be_rerun(photos: Path, tmp_path: Path,
                                             monkeypatch) -> None:
    import facefuse.batch.local as local

    out = tmp_path / "out"
    real_split = local.split_units
    calls = []

    def dies_on_second_chunk(table, layout):
        calls.append(1)
        if len(calls) == 2:
            raise local.WorkerDied("a worker process died (simulated)")
        return real_split(table, layout)

    monkeypatch.setattr(local, "split_units", dies_on_second_chunk)
    with pytest.raises(local.WorkerDied):
        run_batch([photos], out, FAST, chunk_size=3)
    monkeypatch.setattr(local, "split_units", real_split)
    again = run_batch([photos], out, FAST, chunk_size=3)
    assert (again.skipped, again.done) == (3, 5)
    assert read(out, "files").num_rows == 8
