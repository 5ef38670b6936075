"""The analyzer and its CLI on images the tests make and on real photos from ../shared."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facefuse.cli import main
from facefuse.data.images import ImageError, load_rgb
from facefuse.inference.alignment import TEMPLATE_112, align_face, similarity_transform
from facefuse.inference.analyzer import FaceAnalyzer, expand_inputs
from facefuse.models.checkpoint import save_checkpoint
from facefuse.models.multitask import HeadSpec, ModelSpec, build_model
from tests.paths import ROOT


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    spec = ModelSpec("tiny_cnn", {"image_size": 32}, {
        "age": HeadSpec(1), "gender": HeadSpec(2), "emotion": HeadSpec(7),
        "attributes": HeadSpec(40), "landmarks": HeadSpec(136),
        "identity": HeadSpec(5, (), 0.0, "cosine", {"embedding": 8})})
    path = tmp_path_factory.mktemp("m") / "tiny"
    save_checkpoint(build_model(spec), path, input_size=32, verification_threshold=0.3)
    return path


@pytest.fixture(scope="module")
def faces(shared_data: Path) -> list[np.ndarray]:
    files = sorted((shared_data / "utkface/UTKFace").iterdir())
    return [load_rgb(files[i]) for i in (300, 200, 400, 500)]


def canvas(faces: list[np.ndarray], size=(260, 460)) -> np.ndarray:
    img = np.full((*size, 3), 80, np.uint8)
    for k, f in enumerate(faces):
        img[30:230, 20 + 220 * k:220 + 220 * k] = f
    return img


@pytest.fixture
def analyzer(model_path: Path) -> FaceAnalyzer:
    return FaceAnalyzer(model=model_path, device="cpu")


def test_real_faces_get_every_prediction(analyzer: FaceAnalyzer, faces) -> None:
    r = analyzer.analyze(canvas(faces[:2]))
    assert len(r.faces) == 2 and r.error is None
    f = r.faces[0]
    assert {"age", "gender", "emotion", "attributes", "embedding"} <= set(f.predictions)
    assert f.predictions["gender"]["label"] in ("male", "female")
    assert len(f.landmarks) == 68 and len(f.predictions["embedding"]) == 8
    assert np.linalg.norm(f.predictions["embedding"]) == pytest.approx(1.0, abs=1e-4)
    d = r.to_dict()
    assert d["faces"][0]["box"] and d["width"] == 460
    rows = r.rows()
    assert rows[0]["gender"] in ("male", "female") and "age" in rows[0]
    pd = pytest.importorskip("pandas")  # in the test extra; for users the dataframe extra
    frame = r.to_dataframe()
    assert len(frame) == 2 and list(frame.columns[:7]) == ["source", "face", "x0", "y0",
                                                            "x1", "y1", "score"]
    assert list(frame["gender"]) == [row["gender"] for row in rows]
    assert frame["age"].dtype.kind == "f" and frame["face"].tolist() == [0, 1]
    empty = analyzer.analyze(np.full((200, 200, 3), 128, np.uint8)).to_dataframe()
    assert empty.empty and list(empty.columns) == list(frame.columns[:7])
    # frames of many images stack into one table
    both = pd.concat([frame, empty], ignore_index=True)
    assert len(both) == 2



def test_to_dataframe_without_pandas_says_how_to_get_it(analyzer, faces, monkeypatch) -> None:
    import sys

    result = analyzer.analyze(canvas(faces[:1]))
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'facefuse\[dataframe\]'"):
        result.to_dataframe()


def test_tasks_filter_and_unknown_task(model_path: Path, faces) -> None:
    only = FaceAnalyzer(tasks=["age"], model=model_path, device="cpu")
    p = only.analyze(canvas(faces[:1])).faces[0].predictions
    assert set(p) == {"age"}
    with pytest.raises(ValueError, match="no \\['race'\\] head"):
        FaceAnalyzer(tasks=["race"], model=model_path, device="cpu")


def test_no_face_many_faces_and_small_faces(analyzer: FaceAnalyzer, faces) -> None:
    assert analyzer.analyze(np.full((200, 200, 3), 120, np.uint8)).faces == ()
    many = analyzer.analyze(canvas(faces, size=(260, 900)))
    assert len(many.faces) >= 3
    small = Image.fromarray(canvas(faces[:1])).resize((46, 26))
    assert analyzer.analyze(np.asarray(small)).faces == ()  # below min_face


def test_image_modes_and_exif(analyzer: FaceAnalyzer, faces, tmp_path: Path) -> None:
    img = canvas(faces[:1])
    gray = tmp_path / "gray.png"
    Image.fromarray(img).convert("L").save(gray)
    rgba = tmp_path / "rgba.png"
    Image.fromarray(img).convert("RGBA").save(rgba)
    deep = tmp_path / "deep.png"
    Image.fromarray(img[..., 0].astype(np.uint16) * 257).save(deep)
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: a viewer turns it 90 degrees clockwise
    Image.fromarray(np.rot90(img, 1).copy()).save(rotated, exif=exif)
    results = analyzer.analyze_many([gray, rgba, deep, rotated, img[..., 0],
                                     (img.astype(np.uint16) * 257), img[..., :1]])
    assert [r.error for r in results] == [None] * 7
    assert all(len(r.faces) == 1 for r in results)
    assert (results[3].width, results[3].height) == (460, 260)  # EXIF applied
    others = []
    for mode, suffix in (("CMYK", "jpg"), ("P", "png"), ("LA", "png")):
        others.append(tmp_path / f"{mode}.{suffix}")
        Image.fromarray(img).convert(mode).save(others[-1])
    assert all(r.error is None and len(r.faces) == 1 for r in analyzer.analyze_many(others))
    with pytest.raises(TypeError, match="expected an image path or an HxWx3 uint8 RGB array"):
        analyzer.analyze(123)
    with pytest.raises(ImageError, match="expected uint8 or uint16 pixels, got float32"):
        analyzer.analyze(img.astype(np.float32))
    with pytest.raises(ImageError, match=r"expected HxW, HxWx1, HxWx3 or HxWx4, got \(4, 4, 2\)"):
        analyzer.analyze(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageError, match=r"empty image \(0x5 pixels\)"):
        analyzer.analyze(np.zeros((5, 0, 3), np.uint8))


def test_bad_files_are_reported_and_the_batch_goes_on(analyzer, faces, tmp_path) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(canvas(faces[:1])).save(good)
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    cut = tmp_path / "cut.jpg"
    Image.fromarray(canvas(faces[:1])).save(cut)
    cut.write_bytes(cut.read_bytes()[:3000])
    results = analyzer.analyze_many([text, good, cut, tmp_path / "missing.jpg"])
    assert [r.error is None for r in results] == [False, True, False, False]
    assert "notes.jpg" in results[0].error and "missing.jpg" in results[3].error
    assert len(results[1].faces) == 1
    with pytest.raises(ImageError, match="notes.jpg"):
        analyzer.analyze(text)


def test_many_images_stream_through_in_batches(analyzer, model_path, faces, tmp_path,
                                                capsys) -> None:
    """iter_analyze holds one batch of images at a time: it has read only the first batch
    when it gives the first result; the results do not depend on the batch size."""
    images = [canvas(faces[k % 4:k % 4 + 1]) for k in range(5)]
    taken = []

    def feed():
        for k, img in enumerate(images):
            taken.append(k)
            yield img

    results = analyzer.iter_analyze(feed(), batch_images=2)
    first = next(results)
    assert taken == [0, 1]  # the rest not read yet
    rest = list(results)
    assert taken == [0, 1, 2, 3, 4] and len(rest) == 4
    alone = [analyzer.analyze(img) for img in images]
    for got, want in zip([first, *rest], alone, strict=True):
        assert [f.box for f in got.faces] == [f.box for f in want.faces]
        np.testing.assert_allclose(got.faces[0].predictions["embedding"],
                                   want.faces[0].predictions["embedding"], atol=1e-5)
    assert [r.faces[0].box for r in analyzer.analyze_many(images, batch_images=3)] \
        == [r.faces[0].box for r in alone]
    with pytest.raises(ValueError, match="batch_images"):
        analyzer.analyze_many(images, batch_images=0)
    # the embed command streams the same way, one line per face, and sums up on stderr
    paths = []
    for k, img in enumerate(images):
        paths.append(tmp_path / f"p{k}.png")
        Image.fromarray(img).save(paths[-1])
    opts = ["--model", str(model_path), "--device", "cpu"]
    assert main(["embed", *map(str, paths), *opts, "--batch-images", "2"]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(x) for x in captured.out.splitlines()]
    assert [x["source"] for x in lines] == [str(p) for p in paths]
    assert "5 image(s), 5 face(s), 0 failed" in captured.err
    assert main(["embed", *map(str, paths), *opts, "--quiet"]) == 0
    again = capsys.readouterr()
    assert again.err == "" and [json.loads(x)["source"] for x in again.out.splitlines()] \
        == [str(p) for p in paths]
    # videos are left out with a word (they are not photos to embed)
    import cv2

    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 64))
    writer.write(np.full((64, 64, 3), 90, np.uint8))
    writer.release()
    assert main(["embed", str(paths[0]), str(clip), *opts, "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "1 video(s) left out" in captured.err and len(captured.out.splitlines()) == 1
    assert main(["embed", str(clip), *opts, "--quiet"]) == 2


def test_onnxruntime_backend_gives_the_torch_backends_results(model_path, faces, capsys,
                                                              monkeypatch, caplog) -> None:
    image = canvas(faces[:2])
    # the model's own points (the refiner's image features jump at pixel edges, so refined
    # points can move by pixels with a 1e-5 change of its start)
    torch_run = FaceAnalyzer(model=model_path, device="cpu", backend="torch",
                             landmark_refiner=None)
    assert torch_run.model.backend == "torch"
    torch_run = torch_run.analyze(image)
    onnx_run = FaceAnalyzer(model=model_path, device="cpu", landmark_refiner=None)
    # auto, the default, runs the model through ONNX Runtime on the CPU
    assert onnx_run.model.backend == "onnxruntime"
    got = onnx_run.analyze(image)
    assert [f.box for f in got.faces] == [f.box for f in torch_run.faces]
    for a, b in zip(got.faces, torch_run.faces, strict=True):
        np.testing.assert_allclose(a.predictions["embedding"], b.predictions["embedding"],
                                   atol=1e-4)
        assert a.predictions["age"] == pytest.approx(b.predictions["age"], abs=0.05)
        assert a.predictions["gender"]["label"] == b.predictions["gender"]["label"]
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.11)  # 0.1 px rounding
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        FaceAnalyzer(model=model_path, device="cpu", backend="tensorrt")
    photo = ROOT / "src/facefuse/assets/astronaut.jpg"
    assert main(["analyze", str(photo), "--model", str(model_path),
                 "--backend", "onnxruntime"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["faces"]
    import builtins

    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    assert main(["analyze", str(photo), "--model", str(model_path),
                 "--backend", "onnxruntime"]) == 2
    assert "needs ONNX Runtime, a dependency of facefuse (No module named 'onnxruntime'): " \
           "pip install onnxruntime" in capsys.readouterr().err
    # auto falls back to PyTorch, saying why, where ONNX Runtime cannot run the model
    with caplog.at_level(logging.WARNING, logger="facefuse.inference.torch_forward"):
        fallback = FaceAnalyzer(model=model_path, device="cpu")
    assert fallback.model.backend == "torch"
    assert "ONNX Runtime cannot run this model (ImportError" in caplog.text
    assert main(["analyze", str(photo), "--model", str(model_path), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["faces"]
    monkeypatch.setattr(builtins, "__import__", real_import)


def test_bad_analyzer_settings_are_refused_up_front(model_path: Path) -> None:
    for kwargs, says in (({"device": "tpu"}, "unknown device 'tpu'; use auto, cpu, cuda"),
                         ({"min_face": -1}, "min_face must be a whole number >= 0, got -1"),
                         ({"batch_size": 0}, "batch_size must be a whole number >= 1, got 0"),
                         ({"max_pixels": 0}, "max_pixels must be a whole number >= 1"),
                         ({"batch_size": 8.0}, "batch_size must be a whole number")):
        with pytest.raises(ValueError, match=says):
            FaceAnalyzer(model=model_path, **kwargs)
    if not torch.cuda.is_available():  # the machines without a GPU (CI's)
        with pytest.raises(ValueError, match="'cuda': CUDA is not available on this machine"):
            FaceAnalyzer(model=model_path, device="cuda")
    else:
        with pytest.raises(ValueError, match="CUDA device"):
            FaceAnalyzer(model=model_path, device=f"cuda:{torch.cuda.device_count()}")


def test_huge_image_limit(model_path: Path, tmp_path: Path) -> None:
    a = FaceAnalyzer(model=model_path, device="cpu", max_pixels=5000)
    with pytest.raises(ImageError, match="too large"):
        a.analyze(np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(ImageError, match="expected uint8"):
        a.analyze(np.zeros((10, 10, 3), np.float32))
    # read_image (what the benchmarks decode with) keeps the analyzer's own limit
    with pytest.raises(ImageError, match="too large.*limit 5000"):
        a.read_image(np.zeros((100, 100, 3), np.uint8))
    grey = a.read_image(np.full((20, 30), 7, np.uint16) * 257)
    assert grey.shape == (20, 30, 3) and grey.dtype == np.uint8 and (grey == 7).all()
    # RGBA arrays: alpha composited on white, as a transparent PNG file is
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[:2, ..., 3], rgba[2:, ..., 3] = 200, 255, 0
    flat = a.read_image(rgba)
    assert flat.dtype == np.uint8 and flat.shape == (4, 4, 3)
    assert (flat[:2] == (200, 0, 0)).all() and (flat[2:] == 255).all()
    png = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(png)
    assert (a.read_image(png) == flat).all()


def test_alignment_maps_points_onto_the_template() -> None:
    rng = np.random.default_rng(0)
    angle, scale, shift = 0.3, 1.7, np.array([40.0, -12.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = (TEMPLATE_112 - shift) @ np.linalg.inv(scale * rot).T
    m = similarity_transform(src, TEMPLATE_112)
    np.testing.assert_allclose(src @ m[:, :2].T + m[:, 2], TEMPLATE_112, atol=1e-6)
    img = rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)
    assert align_face(img, src, 64).shape == (64, 64, 3)
    with pytest.raises(ValueError, match="matching"):
        similarity_transform(np.zeros((5, 2)), np.zeros((4, 2)))


def test_aligned_mode_runs(model_path: Path, faces) -> None:
    a = FaceAnalyzer(model=model_path, device="cpu", align=True)
    r = a.analyze(canvas(faces[:1]))
    assert len(r.faces) == 1 and len(r.faces[0].landmarks) == 68


def test_cli_analyze_folder_csv_annotate_and_glob(model_path, faces, tmp_path, capsys) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(canvas(faces[i:i + 1])).save(folder / f"p{i}.jpg")
    (folder / "broken.jpg").write_text("no")
    out = tmp_path / "r.jsonl"
    code = main(["analyze", str(folder), "--model", str(model_path), "--out", str(out),
                 "--annotate", str(tmp_path / "ann"), "--quiet"])
    assert code == 1  # one bad file: reported, the rest analyzed
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 4 and sum(len(x["faces"]) for x in lines) == 3
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == ["p0.png", "p1.png",
                                                                   "p2.png"]
    csv_out = tmp_path / "r.csv"
    assert main(["analyze", str(folder / "p*.jpg"), "--model", str(model_path), "--format",
                 "csv", "--out", str(csv_out), "--quiet"]) == 0
    rows = csv_out.read_text().splitlines()
    assert rows[0].startswith("source,face,x0") and len(rows) == 4
    assert len(list(expand_inputs([folder]))) == 4
    with pytest.raises(FileNotFoundError, match="no file matches"):
        list(expand_inputs([str(tmp_path / "*.nothing")]))
    assert main(["analyze", str(tmp_path / "*.nothing"), "--model", str(model_path)]) == 2
    quiet = tmp_path / "no_photos"  # a folder with nothing to analyze is said so, not a 0-line run
    quiet.mkdir()
    (quiet / "notes.txt").write_text("not an image name")
    with pytest.raises(FileNotFoundError, match="no_photos: no image or video in this folder"):
        list(expand_inputs([folder, quiet]))
    capsys.readouterr()
    assert main(["analyze", str(quiet), "--model", str(model_path)]) == 2
    assert "no image or video in this folder" in capsys.readouterr().err


def test_verify_and_search_on_lfw(model_path, shared_data: Path, tmp_path, capsys) -> None:
    lfw = shared_data / "lfw" / "lfw"
    people = ["Colin_Powell", "George_W_Bush", "Tony_Blair"]
    a = lfw / people[0] / f"{people[0]}_0001.jpg"
    b = lfw / people[0] / f"{people[0]}_0002.jpg"
    opts = ["--model", str(model_path), "--detector", "full_frame"]
    assert main(["verify", str(a), str(a), *opts]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["similarity"] == pytest.approx(1.0, abs=1e-4) and same["same_person"]
    assert same["threshold"] == 0.3  # from the checkpoint's metadata
    assert main(["verify", str(a), str(b), *opts, "--threshold", "0.99"]) == 0
    other = json.loads(capsys.readouterr().out)
    assert -1 <= other["similarity"] <= 1 and other["threshold"] == 0.99
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    for p in people:
        shutil.copy(lfw / p / f"{p}_0003.jpg", gallery / f"{p}.jpg")
    query = gallery / "Tony_Blair.jpg"
    assert main(["search", str(query), "--gallery", str(gallery), *opts]) == 0
    hit = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert hit["nearest"] == "Tony_Blair" and hit["similarity"] == pytest.approx(1, abs=1e-4)
    assert main(["embed", str(a), *opts]) == 0
    emb = json.loads(capsys.readouterr().out.strip())
    assert len(emb["embedding"]) == 8
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank)  # not a small crop
    capsys.readouterr()
    assert main(["verify", str(blank), str(a), "--model", str(model_path)]) == 2
    assert "blank.png: no face found (for photos that are already face crops, use " \
           "--detector full_frame)" in capsys.readouterr().err
    assert main(["search", str(blank), "--gallery", str(gallery), *opts[:2]]) == 0
    note = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["note"]
    assert note.startswith("no face found (for photos that are already face crops")
    empty = tmp_path / "empty_gallery"
    (empty / "nobody").mkdir(parents=True)
    assert main(["search", str(a), "--gallery", str(empty), *opts]) == 2
    assert "no photos in the gallery" in capsys.readouterr().err
    faceless = tmp_path / "faceless"
    faceless.mkdir()
    shutil.copy(blank, faceless / "someone.png")
    assert main(["search", str(a), "--gallery", str(faceless), *opts[:2]]) == 2
    assert "no face found in the gallery" in capsys.readouterr().err


def test_flip_averaging_is_mirror_consistent(model_path: Path, faces) -> None:
    from facefuse.data.augment import FLIP_68
    from facefuse.inference.face_model import FaceModel

    face = np.asarray(Image.fromarray(faces[0]).resize((32, 32)))  # the model's size
    mirror = np.ascontiguousarray(face[:, ::-1])
    a, b = FaceModel.from_checkpoint(model_path, flip=True).predict([face, mirror])
    # a face and its mirror image get the same predictions ...
    for task in ("gender", "emotion"):
        assert a[task]["probabilities"] == pytest.approx(b[task]["probabilities"], abs=2e-4)
    assert a["age"] == pytest.approx(b["age"], abs=0.011)
    assert a["attributes_scores"] == pytest.approx(b["attributes_scores"], abs=2e-4)
    np.testing.assert_allclose(a["embedding"], b["embedding"], atol=1e-5)
    # ... and mirrored landmarks, left and right points swapped
    la, lb = np.array(a["landmarks"]), np.array(b["landmarks"])
    np.testing.assert_allclose(lb[list(FLIP_68), 0], 32 - la[:, 0], atol=0.02)
    np.testing.assert_allclose(lb[list(FLIP_68), 1], la[:, 1], atol=0.02)
    # without the flip, this random model is not mirror-symmetric: the test can fail
    p, q = FaceModel.from_checkpoint(model_path).predict([face, mirror])
    lp, lq = np.array(p["landmarks"]), np.array(q["landmarks"])
    assert np.abs(lq[list(FLIP_68), 0] - (32 - lp[:, 0])).max() > 0.1


def test_flip_is_the_analyzers_default_and_can_be_turned_off(model_path: Path, faces,
                                                              capsys) -> None:
    assert FaceAnalyzer(model=model_path, device="cpu").model.flip
    assert not FaceAnalyzer(model=model_path, device="cpu", flip=False).model.flip
    path = ROOT / "src/facefuse/assets/astronaut.jpg"
    outputs = []
    for extra in ([], ["--no-flip"]):
        assert main(["analyze", str(path), "--model", str(model_path), *extra]) == 0
        outputs.append(json.loads(capsys.readouterr().out.splitlines()[0]))
    assert outputs[0]["faces"] and outputs[1]["faces"]
    assert outputs[0]["faces"][0]["age"] != outputs[1]["faces"][0]["age"]


def test_views_average_every_output_but_the_landmarks(model_path: Path, faces) -> None:
    from facefuse.inference.face_model import FaceModel

    model = FaceModel.from_checkpoint(model_path, flip=True)
    tight = [np.asarray(Image.fromarray(f).resize((32, 32))) for f in faces[:2]]
    wide = [np.asarray(Image.fromarray(f[20:180, 20:180]).resize((32, 32))) for f in faces[:2]]
    feats, outs = model.raw_views([tight, wide])
    fa, oa = model.raw(tight)
    fb, ob = model.raw(wide)
    np.testing.assert_allclose(feats, (fa + fb) / 2, rtol=1e-4, atol=1e-5)
    for task, out in outs.items():
        want = oa[task] if task == "landmarks" else (oa[task] + ob[task]) / 2
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
    assert not np.allclose(oa["age"], ob["age"])  # the views differ, so the mean is news
    preds = model.predict_views([tight, wide])
    assert preds[0]["landmarks"] == model.predict(tight)[0]["landmarks"]
    assert preds[0]["age"] != model.predict(tight)[0]["age"]
    assert model.predict_views([[], []]) == []
    with pytest.raises(ValueError, match="equally long"):
        model.raw_views([tight, wide[:1]])
    with pytest.raises(ValueError, match="equally long"):
        model.raw_views([])


def test_tta_margins_in_the_analyzer_and_cli(model_path: Path, faces, capsys) -> None:
    image = canvas(faces[:2])
    plain = FaceAnalyzer(model=model_path, device="cpu").analyze(image)
    tta = FaceAnalyzer(model=model_path, device="cpu", tta_margins=(0.15, 0.25)).analyze(image)
    assert len(plain.faces) == len(tta.faces) == 2
    for p, q in zip(plain.faces, tta.faces, strict=True):
        assert p.box == q.box and p.landmarks == q.landmarks  # landmarks: the main crop's
        assert p.predictions["age"] != q.predictions["age"]
    analyzer = FaceAnalyzer(model=model_path, device="cpu", tta_margins=(0.15, 0.25))
    dets = analyzer.detect(image)
    views = analyzer.crop_views(image, dets)
    assert len(views) == 3 and all(len(v) == len(dets) == 2 for v in views)
    np.testing.assert_array_equal(views[0][1], analyzer.crops(image, dets)[1])
    assert not np.array_equal(views[1][1], views[2][1])
    for bad, match in (((-0.1,), "within \\[0, 1\\]"), ((1.5,), "within \\[0, 1\\]"),
                       ((0.2,), "repeat a margin"), ((0.1, 0.1), "repeat a margin")):
        with pytest.raises(ValueError, match=match):
            FaceAnalyzer(model=model_path, device="cpu", tta_margins=bad)
    with pytest.raises(ValueError, match="cannot be combined with align"):
        FaceAnalyzer(model=model_path, device="cpu", tta_margins=(0.1,), align=True)
    path = ROOT / "src/facefuse/assets/astronaut.jpg"
    assert main(["analyze", str(path), "--model", str(model_path),
                 "--tta-margins", "0.15", "0.25"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["faces"]
    assert main(["analyze", str(path), "--model", str(model_path), "--tta-margins", "3"]) == 2
    assert "crop margins must be within [0, 1]" in capsys.readouterr().err


def test_annotations_of_same_named_photos_do_not_overwrite_each_other(model_path, faces,
                                                                      tmp_path) -> None:
    from facefuse.cli.outputs import annotation_names

    root = tmp_path / "photos"
    for sub in ("2019", "2020"):
        (root / sub).mkdir(parents=True)
        Image.fromarray(canvas(faces[:1])).save(root / sub / "IMG_1.jpg")
    Image.fromarray(canvas(faces[1:2])).save(root / "IMG_1.png")  # same stem, other suffix
    Image.fromarray(canvas(faces[2:3])).save(root / "party.gif")  # GIFs are photos too
    paths = list(expand_inputs([root]))
    assert len(paths) == 4
    names = annotation_names(paths + [paths[0]])  # the same input twice: one name
    assert names[paths[0]] == "2019__IMG_1.jpg.png"
    assert sorted(set(names.values())) == ["2019__IMG_1.jpg.png", "2020__IMG_1.jpg.png",
                                           "IMG_1.png.png", "party.png"]
    out = tmp_path / "r.jsonl"
    assert main(["analyze", str(root), "--model", str(model_path), "--out", str(out),
                 "--annotate", str(tmp_path / "ann"), "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == sorted(set(names.values()))
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert all(x["faces"] for x in lines) and len(lines) == 4


def test_cli_output_paths_and_gallery_errors(model_path, tmp_path, capsys) -> None:
    photo = ROOT / "src/facefuse/assets/astronaut.jpg"
    nested = tmp_path / "new" / "folder" / "faces.jsonl"  # its folders are made
    assert main(["analyze", str(photo), "--model", str(model_path), "--out", str(nested),
                 "--quiet"]) == 0
    assert json.loads(nested.read_text().splitlines()[0])["faces"]
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    capsys.readouterr()
    assert main(["analyze", str(photo), "--model", str(model_path), "--out",
                 str(blocker / "faces.jsonl")]) == 2
    assert f"cannot write {blocker / 'faces.jsonl'}" in capsys.readouterr().err
    for gallery in (tmp_path / "no-gallery", blocker):
        assert main(["search", str(photo), "--model", str(model_path),
                     "--gallery", str(gallery)]) == 2
        assert f"gallery {gallery} is not a folder" in capsys.readouterr().err
    # a gallery person whose photos show no face, or a photo that cannot be read, is named
    gallery = tmp_path / "people"
    (gallery / "blank").mkdir(parents=True)
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(gallery / "blank" / "1.png")
    shutil.copy(photo, gallery / "eileen.jpg")
    (gallery / "broken.jpg").write_text("not a photo")
    cut = tmp_path / "cut.jpg"
    cut.write_text("not a photo either")
    assert main(["search", str(photo), str(cut), "--model", str(model_path),
                 "--gallery", str(gallery)]) == 1  # one query could not be read
    captured = capsys.readouterr()
    answers = [json.loads(x) for x in captured.out.splitlines()]
    assert answers[0]["nearest"] == "eileen" and answers[-1]["match"] is None
    assert "gallery: no face found in the 1 photo(s) of blank; blank is left out" in captured.err
    assert "broken.jpg" in captured.err and "cut.jpg" in captured.err
    assert "no photo of broken could be read; broken is left out" in captured.err
    # queries may be folders: their photos are searched, their videos left out, and --top
    # lists the nearest people in order of similarity
    queries = tmp_path / "queries"
    queries.mkdir()
    shutil.copy(photo, queries / "a.jpg")
    shutil.copy(photo, queries / "b.jpg")
    (queries / "clip.mp4").write_bytes(b"not looked at")
    shutil.copy(photo, gallery / "also_eileen.jpg")
    assert main(["search", str(queries), "--model", str(model_path), "--gallery", str(gallery),
                 "--top", "5", "--quiet"]) == 0
    captured = capsys.readouterr()
    answers = [json.loads(x) for x in captured.out.splitlines()]
    assert [Path(a["query"]).name for a in answers] == ["a.jpg", "b.jpg"]
    for answer in answers:
        sims = [t["similarity"] for t in answer["top"]]
        assert [t["name"] for t in answer["top"]] in (["also_eileen", "eileen"],
                                                      ["eileen", "also_eileen"])
        assert sims == sorted(sims, reverse=True) and sims[0] == answer["similarity"]
    assert "search takes photos; 1 video(s) left out" in captured.err
    only_video = tmp_path / "only_video"
    only_video.mkdir()
    (only_video / "clip.mp4").write_bytes(b"x")
    assert main(["search", str(only_video), "--model", str(model_path),
                 "--gallery", str(gallery)]) == 2
    assert main(["search", str(tmp_path / "missing*.jpg"), "--model", str(model_path),
                 "--gallery", str(gallery)]) == 2
    assert "no file matches" in capsys.readouterr().err


def test_each_analyzer_command_reports_setup_mistakes_in_one_line(model_path, tmp_path,
                                                                  capsys) -> None:
    photo = ROOT / "src/facefuse/assets/astronaut.jpg"
    commands = {"analyze": [str(photo)], "embed": [str(photo)],
                "verify": [str(photo), str(photo)],
                "search": [str(photo), "--gallery", str(tmp_path)]}
    mistakes = {("--detector", "yolo"): "unknown face detector 'yolo'",
                ("--device", "tpu"): "unknown device 'tpu'",
                ("--model", str(tmp_path / "nothing")): "nothing"}
    for command, args in commands.items():
        for option, says in mistakes.items():
            capsys.readouterr()
            assert main([command, *args, *option] + ([] if option[0] == "--model" else
                                                     ["--model", str(model_path)])) == 2
            err = capsys.readouterr().err
            assert says in err and "Traceback" not in err, (command, option, err)
    # embed, like analyze: a bad file is reported, the others embedded, the status says so
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    assert main(["embed", str(photo), str(text), "--model", str(model_path)]) == 1
    out = capsys.readouterr()
    assert "notes.jpg" in out.err and '"embedding"' in out.out
    assert main(["embed", str(tmp_path / "*.nothing"), "--model", str(model_path)]) == 2
    assert "no file matches" in capsys.readouterr().err
