"""The torch-free model runtime: devices and providers, graphs that are not models, model
metadata, and decoding by the model's own label names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facefuse.runtime.decoding import OutputDecoder, unflip_output
from facefuse.runtime.graph import OnnxGraph, check_device_name, providers_for
from facefuse.runtime.model_files import graph_path, model_base, read_model_meta
from facefuse.runtime.model_graph import ModelGraph
from facefuse.tasks import FLIP_68
from facefuse.weights import shipped_model_path


def test_device_names_and_providers() -> None:
    for good in ("auto", "cpu", "cuda", "cuda:1"):
        assert check_device_name(good) == good
    for bad in ("gpu", "cuda:x", "", "CPU"):
        with pytest.raises(ValueError, match="unknown device"):
            check_device_name(bad)
    assert providers_for("cpu") == ["CPUExecutionProvider"]
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert providers_for("auto") == ["CPUExecutionProvider"]
        with pytest.raises(ValueError, match="no CUDA provider .*onnxruntime-gpu"):
            providers_for("cuda")


def test_graphs_that_are_not_models_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.onnx does not exist"):
        OnnxGraph(tmp_path / "nothing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a graph")
    with pytest.raises(ValueError, match="junk.onnx: ONNX Runtime cannot load it"):
        OnnxGraph(junk)
    pnet = shipped_model_path().parent / "mtcnn" / "pnet.onnx"
    with pytest.raises(ValueError, match="not a facefuse model graph"):
        ModelGraph(pnet)  # a graph, but a detector's: no features output


def test_the_shipped_graph_runs_and_names_its_outputs() -> None:
    graph = ModelGraph(graph_path(shipped_model_path()))
    assert graph.head_names == ["identity", "age", "gender", "race", "emotion", "attributes",
                                "landmarks"]
    features, heads, embedding = graph(np.zeros((2, 3, 96, 96), np.float32))
    assert features.shape == (2, graph.feature_dim) and embedding.shape == (2, 128)
    assert heads["landmarks"].shape == (2, 136)


def test_model_metadata_is_checked(tmp_path: Path) -> None:
    assert model_base(tmp_path / "m.onnx") == tmp_path / "m"
    with pytest.raises(FileNotFoundError):
        read_model_meta(tmp_path / "m")
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ValueError, match="m.json: not JSON"):
        read_model_meta(tmp_path / "m")
    (tmp_path / "m.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a facefuse checkpoint"):
        read_model_meta(tmp_path / "m.onnx")


def test_decoding_uses_the_models_label_names() -> None:
    meta = {"tasks": {"gender": ["man", "woman"], "emotion": []}}
    decoder = OutputDecoder(meta, ["gender", "emotion"])
    out = decoder.decode([(10, 10)], {"gender": np.array([[0.0, 2.0]]),
                                      "emotion": np.eye(7)[[3]] * 5}, None)[0]
    assert out["gender"]["label"] == "woman"  # the model's names, not the registry's
    assert out["emotion"]["label"] == "happy"  # none stored: the task registry's
    with pytest.raises(ValueError, match="gives 3 outputs; the model's metadata names 2"):
        decoder.decode([(10, 10)], {"gender": np.zeros((1, 3)),
                                    "emotion": np.zeros((1, 7))}, None)
    with pytest.raises(ValueError, match="calibrates 'age', which it has no head for"):
        OutputDecoder({"calibration": {"age": {"kind": "monotone", "x": [0], "y": [0]}}},
                      ["gender"])


def test_unflip_mirrors_landmarks_and_keeps_the_rest() -> None:
    pts = np.random.default_rng(0).uniform(size=(2, 68, 2))
    back = unflip_output("landmarks", pts.reshape(2, -1)).reshape(2, 68, 2)
    np.testing.assert_allclose(back[:, 0], np.stack([1 - pts[:, FLIP_68[0], 0],
                                                     pts[:, FLIP_68[0], 1]], -1))
    twice = unflip_output("landmarks", back.reshape(2, -1)).reshape(2, 68, 2)
    np.testing.assert_allclose(twice, pts)
    other = np.ones((2, 5))
    assert unflip_output("race", other) is other


def test_blas_threads_are_limited_and_bad_values_refused() -> None:
    from threadpoolctl import threadpool_info

    from facefuse.runtime.threads import limit_blas_threads

    limit_blas_threads(1)
    blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
    assert blas and all(p["num_threads"] == 1 for p in blas)
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(ValueError, match="blas_threads"):
            limit_blas_threads(bad)
    limit_blas_threads(None)  # leaves them as they are
    assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")


def test_sessions_keep_the_cpu_arena_unless_told_not_to() -> None:
    from facefuse.runtime.graph import session_options, use_cpu_arena

    assert session_options().enable_cpu_mem_arena
    use_cpu_arena(False)
    try:
        options = session_options(2)
        assert not options.enable_cpu_mem_arena and options.intra_op_num_threads == 2
    finally:
        use_cpu_arena(True)
    assert session_options().enable_cpu_mem_arena
