"""The video pipeline on short .mp4 files the tests write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facefuse.cli import main
from facefuse.data.images import load_rgb
from facefuse.detection.detectors import HaarDetector, build_detector, iou, square_crop
from facefuse.inference.analyzer import FaceAnalyzer
from facefuse.inference.clips import ClipClassifier, read_clip_manifest
from facefuse.inference.video import RunningStats, VideoError, analyze_video, iter_frames
from facefuse.models.checkpoint import save_checkpoint
from facefuse.models.multitask import HeadSpec, ModelSpec, build_model
from tests.paths import ROOT


def analyzer(model: Path, detector: str = "haar") -> FaceAnalyzer:
    """The analyzer as the video commands build it, on a test model, without the shipped
    identity networks and landmark refiner."""
    return FaceAnalyzer(model=model, detector=detector, identity=None, landmark_refiner=None,
                        flip=False)


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    model = build_model(ModelSpec("tiny_cnn", {"image_size": 32},
                                  {"emotion": HeadSpec(7), "age": HeadSpec(1)}))
    path = tmp_path_factory.mktemp("model") / "tiny"
    save_checkpoint(model, path, input_size=32)
    return path


@pytest.fixture(scope="module")
def real_face(shared_data: Path) -> np.ndarray:
    # a face that the Haar baseline finds cleanly (its misses are a detector-comparison
    # matter, not a pipeline one)
    return load_rgb(sorted((shared_data / "utkface/UTKFace").iterdir())[300])


def moving_face_frames(face: np.ndarray, n: int = 12) -> list[np.ndarray]:
    frames = []
    for k in range(n):
        frame = np.full((260, 360, 3), 90, np.uint8)
        x = 20 + 6 * k
        frame[30:230, x:x + 200] = face
        frames.append(frame)
    return frames


def test_haar_finds_a_real_face_and_crops_are_square(real_face: np.ndarray) -> None:
    frame = moving_face_frames(real_face, 1)[0]
    found = HaarDetector().detect(frame)
    assert found, "no face found in a real UTKFace image"
    box = found[0].box
    assert iou(box, (20, 30, 220, 230)) > 0.2
    crop = square_crop(frame, box, 0.25, 48)
    assert crop.shape == (48, 48, 3)
    edge = square_crop(frame, (-50, -50, 30, 30), 0.5, 16)  # outside: border repeated
    assert edge.shape == (16, 16, 3)
    with pytest.raises(KeyError, match="valid names: dlib_hog, full_frame, haar, mtcnn"):
        build_detector("yolo")


def test_video_pipeline_tracks_one_face(real_face, tiny_model, tmp_path: Path) -> None:
    video = write_video(tmp_path / "walk.mp4", moving_face_frames(real_face))
    records = tmp_path / "frames.jsonl"
    with records.open("w") as f:
        result = analyze_video(video, analyzer(tiny_model), fps=None, records=f)
    assert result.frames_sampled == 12 and result.faces >= 10
    main_track = max(result.tracks, key=lambda t: t["frames"])
    assert main_track["frames"] >= 10 and "emotion" in main_track["labels"]
    assert result.clip_feature.shape == (4 * 16,)
    lines = [json.loads(x) for x in records.read_text().splitlines()]
    assert len(lines) == result.faces
    assert {"frame", "time_s", "track", "box", "score", "emotion", "age"} <= set(lines[0])


def test_frame_sampling_by_fps_and_stride(tmp_path: Path) -> None:
    frames = [np.full((32, 32, 3), 10 * i, np.uint8) for i in range(20)]
    video = write_video(tmp_path / "v.mp4", frames, fps=10.0)
    assert [f.index for f in iter_frames(video, fps=2.0)] == [0, 5, 10, 15]
    assert [f.index for f in iter_frames(video, stride=7)] == [0, 7, 14]
    assert len(list(iter_frames(video))) == 20


def test_no_face_and_unreadable_videos(tiny_model, tmp_path: Path) -> None:
    blank = write_video(tmp_path / "blank.mp4", [np.full((120, 160, 3), 128, np.uint8)] * 5)
    r = analyze_video(blank, analyzer(tiny_model), fps=None)
    assert r.faces == 0 and r.clip_feature is None and "no face" in r.note
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    with pytest.raises(VideoError, match="bad.mp4"):
        list(iter_frames(bad))
    with pytest.raises(VideoError, match="does not exist"):
        list(iter_frames(tmp_path / "nothing.mp4"))
    out = tmp_path / "out"
    code = main(["video", "analyze", str(bad), str(blank), "--model", str(tiny_model),
                 "--out", str(out), "--quiet", "--fps", "5"])
    assert code == 1  # the bad file is reported, the good one still analyzed
    assert (out / "blank.tracks.json").is_file()
    assert sorted(p.name for p in out.iterdir()) == [  # and the bad one leaves no file
        "blank.frames.jsonl", "blank.tracks.csv", "blank.tracks.json"]


def test_memory_does_not_grow_with_the_videos_length(tiny_model, tmp_path: Path) -> None:
    """Frames stream through: ten times the frames (each with a face on it) take no more
    Python memory at the peak, and the records go to the file as they are made."""
    import tracemalloc

    model = analyzer(tiny_model, "full_frame")
    rng = np.random.default_rng(0)

    def peak_bytes(n_frames: int) -> tuple[int, int]:
        frames = [rng.integers(0, 255, (96, 96, 3), dtype=np.uint8) for _ in range(4)]
        video = write_video(tmp_path / f"v{n_frames}.mp4",
                            [frames[i % 4] for i in range(n_frames)])
        del frames
        with (tmp_path / f"v{n_frames}.jsonl").open("w") as records:
            analyze_video(video, model, fps=None, records=records)  # warm-up
            tracemalloc.start()
            try:
                result = analyze_video(video, model, fps=None, records=records)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        assert result.frames_sampled == n_frames and result.faces == n_frames
        return peak, result.faces

    short, _ = peak_bytes(30)
    long, faces = peak_bytes(300)
    assert long < 1.5 * short + 200_000, (short, long)  # a frame is 27,648 bytes
    assert len((tmp_path / "v300.jsonl").read_text().splitlines()) == 2 * faces


def test_analyze_writes_photos_and_videos_in_one_table(real_face, tiny_model, tmp_path: Path,
                                                       capsys) -> None:
    """CSV: one header for photo faces and video frame faces (frame, time and track after
    the source), whatever comes first; JSON lines: each video face names its video."""
    import csv

    from PIL import Image

    video = write_video(tmp_path / "walk.mp4", moving_face_frames(real_face))
    photo = tmp_path / "face.png"
    Image.fromarray(moving_face_frames(real_face, 1)[0]).save(photo)
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((120, 200, 3), 128, np.uint8)).save(blank)  # not a small crop
    opts = ["--model", str(tiny_model), "--detector", "haar", "--quiet", "--stride", "3"]
    table = tmp_path / "faces.csv"
    assert main(["analyze", str(bad), str(blank), str(photo), str(video), *opts,
                 "--format", "csv", "--out", str(table)]) == 1  # the bad file fails
    with table.open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames[:5] == ["source", "frame", "time_s", "track", "face"]
    assert {"age", "emotion", "emotion_confidence"} <= set(reader.fieldnames)
    assert reader.fieldnames[-1] == "error"
    assert rows[0]["source"] == str(bad) and "bad.jpg" in rows[0]["error"]
    assert rows[1]["source"] == str(blank) and rows[1]["face"] == "" and rows[1]["error"] == ""
    assert rows[2]["source"] == str(photo) and rows[2]["face"] == "0" and rows[2]["frame"] == ""
    assert float(rows[2]["age"]) == float(rows[2]["age"])  # a number
    frames = [r for r in rows if r["source"] == str(video)]
    assert [int(r["frame"]) for r in frames] == [0, 3, 6, 9]
    assert all(r["track"] != "" and r["emotion"] for r in frames)
    capsys.readouterr()
    lines = tmp_path / "faces.jsonl"
    assert main(["analyze", str(photo), str(video), *opts, "--out", str(lines)]) == 0
    records = [json.loads(x) for x in lines.read_text().splitlines()]
    assert records[0]["source"] == str(photo)
    assert [(r["source"], r["frame"], r["face"]) for r in records[1:]] == [
        (str(video), k, 0) for k in (0, 3, 6, 9)]
    # a folder whose photos have no face at all still gets a header
    assert main(["analyze", str(blank), *opts, "--format", "csv", "--out", str(table)]) == 0
    assert table.read_text().splitlines()[0].startswith("source,face,")


def test_outputs_that_cannot_be_written_are_refused_before_any_work(tiny_model, tmp_path: Path,
                                                                      capsys, monkeypatch) -> None:
    blocker = tmp_path / "a-file"  # a file where a folder is needed
    blocker.write_text("x")
    photo = ROOT / "src/facefuse/assets/astronaut.jpg"
    configs = ROOT / "configs"
    video = write_video(tmp_path / "v.mp4", [np.full((32, 32, 3), 90, np.uint8)] * 3)
    (tmp_path / "clips.csv").write_text("video,label\nv.mp4,a\nv.mp4,b\n")
    model = ["--model", str(tiny_model)]
    import facefuse.cli.video as cli_video

    analyzed = []
    real = cli_video._clip_features
    monkeypatch.setattr(cli_video, "_clip_features", lambda *a: analyzed.append(a) or real(*a))
    for argv, says in (
            (["analyze", str(photo), *model, "--annotate", str(blocker)],
             f"cannot write annotations to {blocker}"),
            (["video", "analyze", str(video), *model, "--out", str(blocker)],
             f"cannot write results to {blocker}"),
            (["video", "fit", str(tmp_path / "clips.csv"), *model, "--detector", "full_frame",
              "--out", str(blocker / "clf.json")], f"cannot write {blocker / 'clf.json'}"),
            (["fit-landmarks", str(tmp_path), *model, "--out", str(blocker / "ref")],
             f"cannot write {blocker / 'ref'}"),
            (["export-onnx", str(tiny_model), str(blocker / "m.onnx")],
             f"cannot write {blocker / 'm.onnx'}"),
            (["train", str(configs / "mtl.yaml"), "--quick",
              "--output", str(blocker / "r")],
             f"cannot write the run to {blocker / 'r'}"),
            (["experiment", str(configs / "li_zhu.yaml"), "--quick",
              "--output", str(blocker / "r")],
             f"cannot write the report to {blocker / 'r'}")):
        quiet = ["--quiet"] if argv[0] in ("analyze", "video", "train", "experiment") else []
        assert main([*argv, *quiet]) == 2, argv
        captured = capsys.readouterr()
        assert says in captured.err and "Traceback" not in captured.err, argv
        assert captured.out == "", argv  # nothing analyzed first
    assert analyzed == [] and blocker.read_text() == "x"  # no clip analyzed, then lost


def test_running_stats_match_numpy() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4))
    s = RunningStats(4)
    for v in x:
        s.add(v)
    np.testing.assert_allclose(s.vector(), np.concatenate([x.mean(0), x.std(0), x.min(0),
                                                           x.max(0)]), atol=1e-6)
    with pytest.raises(ValueError, match="no frames"):
        RunningStats(2).vector()


def test_clip_classifier_fit_predict_and_json(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 1, (20, 6)), rng.normal(3, 1, (20, 6))])
    y = ["calm"] * 20 + ["happy"] * 20
    clf = ClipClassifier.fit(x, y)
    assert np.mean(np.array(clf.predict(x)) == np.array(y)) > 0.95
    clf.save(tmp_path / "c.json")
    back = ClipClassifier.load(tmp_path / "c.json")
    np.testing.assert_allclose(back.predict_proba(x), clf.predict_proba(x))
    with pytest.raises(ValueError, match="two labels"):
        ClipClassifier.fit(x[:3], ["a"] * 3)
    # two classes: the probabilities are the logistic regression's own
    from sklearn.linear_model import LogisticRegression

    z = (x - x.mean(0)) / (x.std(0) + 1e-6)
    sk = LogisticRegression(C=1.0, max_iter=2000, random_state=0).fit(z, y)
    np.testing.assert_allclose(clf.predict_proba(x), sk.predict_proba(z), atol=1e-6)
    with pytest.raises(ValueError, match="takes 6 features a clip"):
        clf.predict_proba(np.zeros((1, 5)))


def test_clip_classifier_files_that_are_not_one(tmp_path: Path, capsys) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ClipClassifier.load(tmp_path / "none.json")
    good = ClipClassifier(["a", "b"], np.zeros(3), np.ones(3), np.zeros((2, 3)), np.zeros(2))
    good.save(tmp_path / "deep" / "ok.json")  # folders are made
    assert ClipClassifier.load(tmp_path / "deep" / "ok.json").classes == ["a", "b"]
    bad = {"garbage.json": "{not json", "keys.json": json.dumps({"classes": ["a"]}),
           "shapes.json": json.dumps({"classes": ["a", "b"], "mean": [0, 0, 0],
                                      "scale": [1, 1, 1], "coef": [[0, 0], [0, 0]],
                                      "intercept": [0, 0]})}
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match="is not a clip classifier"):
            ClipClassifier.load(tmp_path / name)
    assert main(["video", "predict", str(tmp_path / "x.mp4"), "--classifier",
                 str(tmp_path / "garbage.json")]) == 2
    assert "is not a clip classifier" in capsys.readouterr().err


def test_clip_manifest_cli_fit_and_predict(tiny_model, tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(1)
    lines = ["video,label,split"]
    for i in range(8):
        label = "dark" if i % 2 else "bright"
        base = 40 if label == "dark" else 210
        frames = [np.clip(rng.normal(base, 10, (32, 32, 3)), 0, 255).astype(np.uint8)
                  for _ in range(4)]
        write_video(tmp_path / f"c{i}.mp4", frames)
        lines.append(f"c{i}.mp4,{label},{'test' if i >= 6 else 'train'}")
    (tmp_path / "clips.csv").write_text("\n".join(lines) + "\n")
    assert len(read_clip_manifest(tmp_path / "clips.csv")) == 8
    clf = tmp_path / "clf.json"
    assert main(["video", "fit", str(tmp_path / "clips.csv"), "--model", str(tiny_model),
                 "--detector", "full_frame", "--fps", "20", "--out", str(clf), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "test clips: 2" in out and clf.is_file()
    fitted = json.loads(clf.read_text())["features"]  # how its features were made
    assert fitted["model"] == "tiny" and len(fitted["weights"]) == 16
    assert (fitted["flip"], fitted["fps"], fitted["margin"], fitted["detector"]) \
        == (True, 20.0, 0.2, "full_frame")
    assert main(["video", "predict", str(tmp_path / "c0.mp4"), "--model", str(tiny_model),
                 "--detector", "full_frame", "--fps", "20", "--classifier", str(clf),
                 "--quiet"]) == 0
    captured = capsys.readouterr()
    pred = json.loads(captured.out.strip().splitlines()[-1])
    assert pred["label"] in ("dark", "bright") and captured.err == ""
    # other sampling: predicted, with a warning naming the difference
    assert main(["video", "predict", str(tmp_path / "c0.mp4"), "--model", str(tiny_model),
                 "--detector", "full_frame", "--classifier", str(clf), "--quiet"]) == 0
    assert "fps: fitted with 20.0, now 5.0" in capsys.readouterr().err
    assert main(["video", "predict", str(tmp_path / "c0.mp4"), "--model", str(tiny_model),
                 "--detector", "full_frame", "--classifier", str(clf), "--stride", "2",
                 "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "fps: fitted with 20.0, now None" in err and "stride: fitted with None, now 2" in err
    # other weights: refused, since the features mean something else
    retrained = build_model(ModelSpec("tiny_cnn", {"image_size": 32},
                                      {"emotion": HeadSpec(7), "age": HeadSpec(1)}))
    save_checkpoint(retrained, tmp_path / "retrained", input_size=32)
    assert main(["video", "predict", str(tmp_path / "c0.mp4"), "--model",
                 str(tmp_path / "retrained"), "--detector", "full_frame", "--fps", "20",
                 "--classifier", str(clf), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "clip features made with other weights" in err and "fitted on tiny's features" in err
    (tmp_path / "fake.mp4").write_text("not a video")  # a line for it, saying why
    assert main(["video", "predict", str(tmp_path / "fake.mp4"), "--model", str(tiny_model),
                 "--detector", "full_frame", "--classifier", str(clf), "--quiet"]) == 0
    pred = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert pred["label"] is None and "not a video OpenCV can open" in pred["note"]
    other = tmp_path / "other.json"  # fitted on 3-number clip features: not this model's
    ClipClassifier(["a", "b"], np.zeros(3), np.ones(3), np.zeros((2, 3)), np.zeros(2)).save(other)
    assert main(["video", "predict", str(tmp_path / "c0.mp4"), "--model", str(tiny_model),
                 "--detector", "full_frame", "--classifier", str(other), "--quiet"]) == 2
    assert "takes 3 features a clip" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("path,label\nx.mp4,a\n")
    assert main(["video", "fit", str(tmp_path / "bad.csv"), "--model", str(tiny_model),
                 "--quiet"]) == 2


def test_cli_samples_by_stride_and_refuses_bad_sampling_values(tiny_model, tmp_path: Path,
                                                               capsys) -> None:
    frames = [np.full((32, 32, 3), 10 * i, np.uint8) for i in range(20)]
    video = write_video(tmp_path / "v.mp4", frames, fps=10.0)
    out = tmp_path / "out"
    common = ["--model", str(tiny_model), "--detector", "full_frame", "--quiet"]
    assert main(["video", "analyze", str(video), "--stride", "7", "--out", str(out),
                 *common]) == 0
    records = [json.loads(x) for x in (out / "v.frames.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 7, 14]  # one full-frame face per frame
    assert main(["analyze", str(video), "--stride", "10", "--landmark-refiner", "none",
                 *common]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [r["frame"] for r in lines] == [0, 10]
    for bad, says in ((["--fps", "0"], "--fps: must be above 0"),
                      (["--fps", "nan"], "--fps: expected a finite number"),
                      (["--stride", "0"], "--stride: must be at least 1"),
                      (["--stride", "2.5"], "--stride: expected a whole number"),
                      (["--fps", "2", "--stride", "3"], "not allowed with argument"),
                      (["--margin", "-0.1"], "--margin: must be within [0, 1]")):
        with pytest.raises(SystemExit) as stop:
            main(["video", "analyze", str(video), "--out", str(out), *common, *bad])
        assert stop.value.code == 2
        assert says in capsys.readouterr().err


def test_analyze_video_refuses_bad_sampling_before_opening(tiny_model, tmp_path: Path) -> None:
    model = analyzer(tiny_model, "full_frame")
    missing = tmp_path / "nothing.mp4"  # the value is refused before the file is looked at
    with pytest.raises(ValueError, match="fps must be positive, got 0"):
        analyze_video(missing, model, fps=0)
    with pytest.raises(ValueError, match="fps must be positive, got nan"):
        analyze_video(missing, model, fps=float("nan"))
    with pytest.raises(ValueError, match="stride must be at least 1, got 0"):
        analyze_video(missing, model, fps=None, stride=0)
    with pytest.raises(ValueError, match="max_faces must be at least 1, got 0"):
        analyze_video(missing, model, max_faces=0)
    with pytest.raises(ValueError, match="stride must be at least 1"):
        list(iter_frames(missing, stride=-1))


def test_video_commands_report_a_bad_model_or_detector_in_one_line(tiny_model, tmp_path: Path,
                                                                   capsys) -> None:
    video = write_video(tmp_path / "v.mp4", [np.full((32, 32, 3), 50, np.uint8)] * 3)
    (tmp_path / "clips.csv").write_text(f"video,label\n{video},a\n")
    clf = tmp_path / "clf.json"
    ClipClassifier(["a", "b"], np.zeros(3), np.ones(3), np.zeros((2, 3)), np.zeros(2)).save(clf)
    commands = (["analyze", str(video), "--out", str(tmp_path / "out")],
                ["fit", str(tmp_path / "clips.csv"), "--out", str(tmp_path / "c.json")],
                ["predict", str(video), "--classifier", str(clf)])
    for command in commands:
        for option, says in ((["--detector", "yolo", "--model", str(tiny_model)],
                              "unknown face detector 'yolo'"),
                             (["--model", str(tmp_path / "nothing")],
                              "no model at")):
            capsys.readouterr()
            assert main(["video", *command, *option, "--quiet"]) == 2
            err = capsys.readouterr().err
            assert says in err and "Traceback" not in err, (command, option, err)


def test_same_named_videos_do_not_overwrite_each_others_results(tiny_model, tmp_path: Path,
                                                               capsys) -> None:
    for day, n in (("mon", 2), ("tue", 3)):
        (tmp_path / day).mkdir()
        write_video(tmp_path / day / "clip.mp4", [np.full((32, 32, 3), 90, np.uint8)] * n)
    out = tmp_path / "out"
    videos = [str(tmp_path / "mon" / "clip.mp4"), str(tmp_path / "tue" / "clip.mp4")]
    assert main(["video", "analyze", *videos, "--out", str(out), "--model", str(tiny_model),
                 "--detector", "full_frame", "--stride", "1", "--quiet"]) == 0
    for day, n in (("mon", 2), ("tue", 3)):
        records = (out / f"{day}__clip.mp4.frames.jsonl").read_text().splitlines()
        assert len(records) == n  # each video's own frames
        assert json.loads((out / f"{day}__clip.mp4.tracks.json").read_text())["video"] \
            == str(tmp_path / day / "clip.mp4")
