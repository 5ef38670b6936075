from __future__ import annotations

import json
from pathlib import Path

import pytest

from facefuse.cli import main
from tests.fakes import write_image


def test_summary_text_lists_datasets_and_skipped(fake_root: Path, capsys) -> None:
    write_image(fake_root / "utkface" / "UTKFace" / "12_0_20170101.jpg.chip.jpg")
    assert main(["data", "summary", str(fake_root)]) == 0
    out = capsys.readouterr().out
    for name in ("utkface", "fer2013", "lfw", "celeba", "300w"):
        assert name in out
    assert "12_0_20170101.jpg.chip.jpg: malformed UTKFace name" in out


def test_summary_json_counts(fake_root: Path, capsys) -> None:
    assert main(["data", "summary", str(fake_root), "--json"]) == 0
    data = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert data["utkface"]["samples"] == 40
    assert sum(data["fer2013"]["per_split"].values()) == data["fer2013"]["samples"] == 7 * 12
    assert data["fer2013"]["per_split"]["test"] == 28
    assert data["celeba"]["labels"]["identity"]["identities"] == 10
    assert data["utkface"]["labels"]["gender"]["counts"] == {"male": 20, "female": 20}


def test_summary_reports_unreadable_dataset_and_continues(fake_root: Path, capsys) -> None:
    for f in (fake_root / "celeba").glob("*.txt"):
        f.unlink()
    assert main(["data", "summary", str(fake_root)]) == 1
    out = capsys.readouterr().out
    assert "celeba     ERROR: celeba: neither" in out and "utkface" in out


def test_summary_bad_roots(tmp_path: Path, capsys) -> None:
    assert main(["data", "summary", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["data", "summary", str(tmp_path / "empty")]) == 1
    assert "no known dataset layout" in capsys.readouterr().err


def test_cache_command(fake_root: Path, tmp_path: Path, capsys) -> None:
    argv = ["data", "cache", str(fake_root), "--dataset", "utkface", "--dataset", "300w",
            "--size", "24", "--out", str(tmp_path / "cache"), "--workers", "1", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "50 of 50 images at 24px" in out
    built = [p for p in (tmp_path / "cache").iterdir() if (p / "meta.json").exists()]
    assert len(built) == 1
    assert main(argv) == 0  # second run reuses it
    assert [p for p in (tmp_path / "cache").iterdir() if (p / "meta.json").exists()] == built
    assert main(["data", "cache", str(fake_root), "--dataset", "imagenet", "--quiet"]) == 2
    assert "valid names" in capsys.readouterr().err
    assert main(["data", "cache", str(fake_root), "--dataset", "utkface", "--size", "2",
                 "--quiet", "--out", str(tmp_path / "c2")]) == 2
    capsys.readouterr()
    # detector crops: a new cache (other key) whose fake, face-free images fall back whole
    assert main([*argv, "--detector-crop", "utkface"]) == 0
    assert len([p for p in (tmp_path / "cache").iterdir() if (p / "meta.json").exists()]) == 2
    assert "50 of 50 images" in capsys.readouterr().out
    assert main([*argv, "--detector-crop", "celeba"]) == 2
    assert "--detector-crop names datasets not cached: ['celeba']" in capsys.readouterr().err


def test_caches_command_lists_and_removes_only_what_it_is_told(fake_root: Path,
                                                              tmp_path: Path, capsys) -> None:
    from facefuse.data.file_lock import exclusive_lock

    root = tmp_path / "cache"
    for size in ("16", "24"):
        assert main(["data", "cache", str(fake_root), "--dataset", "utkface", "--size", size,
                     "--out", str(root), "--workers", "1", "--quiet"]) == 0
    capsys.readouterr()
    small, large = sorted((p for p in root.iterdir() if (p / "meta.json").exists()),
                          key=lambda p: json.loads((p / "meta.json").read_text())["spec"]["size"])
    interrupted = root / ".utkface-00000000deadbeef.building-999999"
    interrupted.mkdir()
    (interrupted / "images.u8").write_bytes(b"x" * 1000)
    running = root / ".utkface-11111111deadbeef.building-1"
    running.mkdir()
    foreign = root / "notes"  # not a cache: never listed, never removed
    foreign.mkdir()
    (foreign / "meta.json").write_text("{}")
    with exclusive_lock(root / ".utkface-11111111deadbeef.lock"):  # its builder is running
        assert main(["data", "caches", str(root)]) == 0
        out = capsys.readouterr().out
        assert f"{small.name}" in out and "at 16 px; utkface; built" in out
        assert "at 24 px" in out and "notes" not in out
        assert "interrupted build" in out and "a build in progress" in out
        assert "4 folder(s)" in out
        assert main(["data", "caches", str(root), "--json"]) == 0
        listed = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
        assert listed[large.name]["image_size"] == 24 and listed[large.name]["images"] == 40
        assert listed[interrupted.name]["state"] == "interrupted"
        assert listed[running.name]["state"] == "building"
        assert listed[small.name]["size_bytes"] > 40 * 16 * 16 * 3

        assert main(["data", "caches", str(root), "--remove", "nonsense"]) == 2
        assert "not a cache under" in capsys.readouterr().err
        assert main(["data", "caches", str(root), "--remove", "notes"]) == 2
        assert foreign.exists()
        assert main(["data", "caches", str(root), "--remove", running.name]) == 1
        assert "being built by a running process" in capsys.readouterr().err
        assert running.exists()
        assert main(["data", "caches", str(root), "--remove-unfinished"]) == 0
        assert "removed" in capsys.readouterr().out
        assert not interrupted.exists() and running.exists() and small.exists()
    assert (root / f".{small.name}.lock").is_file()
    assert main(["data", "caches", str(root), "--remove", small.name]) == 0
    assert not small.exists() and large.exists() and foreign.exists()
    assert not (root / f".{small.name}.lock").exists() and (root / f".{large.name}.lock").exists()
    assert main(["data", "caches", str(tmp_path / "absent")]) == 2
    assert "no cache folder at" in capsys.readouterr().err


def test_version_and_help(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "facefuse" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([])


def test_a_reader_closing_the_pipe_stops_the_command_quietly(tmp_path: Path) -> None:
    """`facefuse analyze ... | head -1`: when the reader goes, the command ends with the
    shell's SIGPIPE status and no traceback or 'Exception ignored' noise."""
    import os
    import subprocess
    import sys

    from facefuse.models.checkpoint import save_checkpoint
    from facefuse.models.multitask import HeadSpec, ModelSpec, build_model

    model = build_model(ModelSpec("tiny_cnn", {"image_size": 32}, {"emotion": HeadSpec(7)}))
    save_checkpoint(model, tmp_path / "tiny", input_size=32)
    photo = write_image(tmp_path / "face.jpg")
    command = [sys.executable, "-m", "facefuse.cli", "analyze", str(photo), "--model",
               str(tmp_path / "tiny"), "--detector", "full_frame", "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and '"emotion"' in done.stdout  # the command itself works
    reader, writer = os.pipe()
    os.close(reader)  # the reader has gone before the first line is written
    try:
        done = subprocess.run(command, stdout=writer, stderr=subprocess.PIPE, text=True,
                              timeout=120)
    finally:
        os.close(writer)
    assert done.returncode == 141
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


def test_the_analyzer_is_importable_from_the_package_top_without_loading_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, facefuse; assert 'torch' not in sys.modules; "
            "from facefuse import FaceAnalyzer, FaceResult, ImageResult; "
            "assert FaceAnalyzer.__module__ == 'facefuse.inference.analyzer'; "
            "import facefuse as f; f.nothing")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert "module 'facefuse' has no attribute 'nothing'" in done.stderr
    assert "AssertionError" not in done.stderr and done.returncode == 1
