"""dlib's ResNet descriptor: the file reader, the torch port, ONNX export, and parity with dlib.

Files are written by ``tests/dlib_writer.py`` in dlib's real serialisation (it reproduces the
real model file byte for byte, checked below when the file is installed).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from facefuse.models.dlib_format import DlibResnetWeights, PoolSpec, read_dlib_resnet
from facefuse.models.dlib_resnet import DlibResNet, dlib_normalisation, zero_fill_add
from facefuse.models.trunks import build_trunk
from tests.dlib_writer import dlib_bytes, pack_int, pack_string, tiny_weights, write_dlib

CHIP = 37  # stem 37 -> 17 -> 8; the first downsampling block adds a 3x3 map into a 4x4 one


@pytest.fixture(scope="module")
def tiny() -> DlibResnetWeights:
    return tiny_weights(seed=1)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory, tiny: DlibResnetWeights) -> Path:
    return write_dlib(tiny, tmp_path_factory.mktemp("dlib") / "tiny.dat")


def _arrays(w: DlibResnetWeights) -> list[np.ndarray | None]:
    out: list[np.ndarray | None] = []
    for c in w.convolutions:
        out += [c.weight, c.bias]
    for a in w.affines:
        out += [a.scale, a.shift]
    return [*out, w.fc, w.fc_bias]


# ---------------------------------------------------------------- (a) reading the format


@pytest.mark.parametrize("options", [{}, {"fc_bias": True, "stem_bias": False}])
def test_round_trip_every_tensor(tmp_path: Path, options: dict) -> None:
    w = tiny_weights(seed=2, **options)
    kinds = {0: "con_5"} if not options.get("stem_bias", True) else {2: "con_5"}
    got = read_dlib_resnet(write_dlib(w, tmp_path / "n.dat", conv_kinds=kinds))
    want_arrays, got_arrays = _arrays(w), _arrays(got)
    assert len(got_arrays) == len(want_arrays)
    for want, have in zip(want_arrays, got_arrays, strict=True):
        if want is None:
            assert have is None
            continue
        assert have.dtype == np.float32 and have.shape == want.shape
        np.testing.assert_array_equal(have, want)
    for want_c, have_c in zip(w.convolutions, got.convolutions, strict=True):
        assert (have_c.stride, have_c.padding) == (want_c.stride, want_c.padding)
    assert [b.shortcut for b in got.blocks] == [b.shortcut for b in w.blocks]
    assert got.stem_pool == w.stem_pool and got.head_pool == PoolSpec("avg", (0, 0), (1, 1),
                                                                      (0, 0))
    assert got.means == tuple(float(np.float32(m)) for m in w.means)
    assert got.chip_size == (CHIP, CHIP)
    assert got.loss.kind == "loss_metric_2"
    assert got.loss.margin == pytest.approx(0.04) and got.loss.distance_threshold == \
        pytest.approx(0.6)
    assert got.fc.shape == (5, 8) and len(got.convolutions) == 9
    assert got.layer_kinds[:5] == ("con_5" if kinds.get(0) else "con_4", "affine_", "relu_",
                                   "max_pool_2", "tag")
    assert got.layer_kinds.count("skip") == 2 and got.layer_kinds.count("add_prev_") == 4


def _real_dat() -> Path:
    """The real model file inside the installed ``face_recognition_models`` package (found
    without importing it: its ``__init__`` needs ``pkg_resources``, gone from setuptools)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("face_recognition_models is not installed")
    folder = Path(next(iter(spec.submodule_search_locations)))
    path = folder / "models" / "dlib_face_recognition_resnet_model_v1.dat"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def test_real_file_layout_and_byte_exact_rewrite() -> None:
    path = _real_dat()
    w = read_dlib_resnet(path)
    assert len(w.convolutions) == 29 and w.num_parameters() == 5_614_592
    assert [b.conv_b.out_channels for b in w.blocks] == [32] * 3 + [64] * 4 + [128] * 3 \
        + [256] * 4
    downsampling = [i for i, b in enumerate(w.blocks) if b.shortcut is not None]
    assert downsampling == [3, 7, 10, 13]
    assert w.fc.shape == (128, 256) and w.fc_bias is None and w.chip_size == (150, 150)
    assert dlib_bytes(w, cached_state=False) == path.read_bytes()


# ------------------------------------------------------------- (b) numpy reference forward


def _np_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: tuple[int, int],
             pad: tuple[int, int]) -> np.ndarray:
    x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    _, _, kh, kw = w.shape
    ho = (x.shape[2] - kh) // stride[0] + 1
    wo = (x.shape[3] - kw) // stride[1] + 1
    out = np.zeros((x.shape[0], w.shape[0], ho, wo))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i:i + stride[0] * (ho - 1) + 1:stride[0],
                      j:j + stride[1] * (wo - 1) + 1:stride[1]]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j].astype(np.float64))
    return out if b is None else out + b.reshape(1, -1, 1, 1)


def _np_pool(x: np.ndarray, spec: PoolSpec) -> np.ndarray:
    (kh, kw), (sh, sw) = spec.kernel, spec.stride
    ho, wo = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
    out = np.empty(x.shape[:2] + (ho, wo))
    for r in range(ho):
        for c in range(wo):
            window = x[:, :, r * sh:r * sh + kh, c * sw:c * sw + kw]
            out[:, :, r, c] = window.max((2, 3)) if spec.kind == "max" else window.mean((2, 3))
    return out


def _np_add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    shape = tuple(max(p, q) for p, q in zip(a.shape, b.shape, strict=True))
    out = np.zeros(shape)
    out[:, :a.shape[1], :a.shape[2], :a.shape[3]] += a
    out[:, :b.shape[1], :b.shape[2], :b.shape[3]] += b
    return out


def _np_forward(w: DlibResnetWeights, x: np.ndarray) -> np.ndarray:
    def affine(x: np.ndarray, a) -> np.ndarray:
        return x * a.scale.reshape(1, -1, 1, 1) + a.shift.reshape(1, -1, 1, 1)

    def conv(x: np.ndarray, c) -> np.ndarray:
        return _np_conv(x, c.weight, c.bias, c.stride, c.padding)

    x = np.maximum(affine(conv(x.astype(np.float64), w.stem_conv), w.stem_affine), 0)
    x = _np_pool(x, w.stem_pool)
    for blk in w.blocks:
        y = np.maximum(affine(conv(x, blk.conv_a), blk.affine_a), 0)
        y = affine(conv(y, blk.conv_b), blk.affine_b)
        short = x if blk.shortcut is None else _np_pool(x, blk.shortcut)
        x = np.maximum(_np_add(short, y), 0)
    pooled = x.mean((2, 3))
    out = pooled @ w.fc.T.astype(np.float64)
    return out if w.fc_bias is None else out + w.fc_bias


def test_torch_matches_numpy_reference(tiny_file: Path) -> None:
    w = read_dlib_resnet(tiny_file)
    model = DlibResNet.from_weights(w).eval()
    assert model.image_size == CHIP and model.feature_dim == 5
    x = torch.randn(3, 3, CHIP, CHIP, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = model(x).numpy()
        maps = model.forward_maps(x)
    want = _np_forward(w, x.numpy())
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # stages: 4 (identity), 6 (down, 3x3 into 4x4), 8 (widened), 8 (down); pooled vector
    assert [tuple(m.shape[1:]) for m in maps] == [(4, 8, 8), (6, 4, 4), (8, 4, 4), (8, 2, 2),
                                                  (8,)]


def test_zero_fill_add_is_top_left() -> None:
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 3, 4, 4), 10.0)
    s = zero_fill_add(a, b)
    assert s.shape == (1, 3, 4, 4)
    assert s[0, :2, :3, :3].eq(11).all() and s[0, 2].eq(10).all() and s[0, :, 3].eq(10).all()


def test_normalisation_reproduces_dlib_input(tiny: DlibResnetWeights) -> None:
    norm = dlib_normalisation(tiny)
    pixels = np.array([0.0, 100.0, 255.0])
    for c in range(3):
        ours = (pixels / 255 - norm["mean"][c]) / norm["std"][c]
        np.testing.assert_allclose(ours, (pixels - tiny.means[c]) / 256, atol=1e-12)


# --------------------------------------------------------------------- (c) malformed input


def _expect_error(tmp_path: Path, data: bytes, match: str) -> None:
    path = tmp_path / "bad.dat"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=match) as info:
        read_dlib_resnet(path)
    assert str(path) in str(info.value)


def test_truncated_everywhere_raises_value_error(tmp_path: Path,
                                                 tiny: DlibResnetWeights) -> None:
    data = dlib_bytes(tiny)
    _expect_error(tmp_path, b"", "truncated")
    _expect_error(tmp_path, data[:-1], "truncated")
    _expect_error(tmp_path, data[:len(data) // 2], "truncated")
    for cut in range(0, len(data), max(1, len(data) // 400)):
        (tmp_path / "cut.dat").write_bytes(data[:cut])
        with pytest.raises(ValueError, match="cut.dat"):
            read_dlib_resnet(tmp_path / "cut.dat")


def test_bad_versions(tmp_path: Path, tiny: DlibResnetWeights) -> None:
    _expect_error(tmp_path, dlib_bytes(tiny, file_version=2), "wrong version 2")
    data = dlib_bytes(tiny)
    tensor_v2 = pack_int(2) + pack_int(tiny.stem_conv.weight.size + 4)
    at = data.index(tensor_v2)
    _expect_error(tmp_path, data[:at] + pack_int(3) + data[at + 2:], "tensor version 3")


def test_unknown_layer_and_loss(tmp_path: Path, tiny: DlibResnetWeights) -> None:
    data = dlib_bytes(tiny)
    _expect_error(tmp_path, data.replace(pack_string("relu_"), pack_string("gelu_"), 1),
                  "unknown layer kind 'gelu_'")
    _expect_error(tmp_path, data.replace(pack_string("loss_metric_2"),
                                         pack_string("loss_mmod_xx_"), 1), "unknown loss")
    _expect_error(tmp_path, data + b"\x00", "unexpected bytes")


def test_tensor_size_mismatch(tmp_path: Path, tiny: DlibResnetWeights) -> None:
    data = dlib_bytes(tiny)
    # the stem conv's filter descriptor (4, 3, 5, 5) claims 2 input channels instead
    alias = pack_int(1) + b"".join(pack_int(d) for d in (4, 3, 5, 5))
    bad = pack_int(1) + b"".join(pack_int(d) for d in (4, 2, 5, 5))
    _expect_error(tmp_path, data.replace(alias, bad, 1), "tensor size mismatch")


def test_random_corruption_only_raises_value_error(tmp_path: Path,
                                                   tiny: DlibResnetWeights) -> None:
    data = bytearray(dlib_bytes(tiny, cached_state=False))
    rng = np.random.default_rng(0)
    for _ in range(150):
        bad = bytearray(data)
        for pos in rng.integers(0, len(data), 3):
            bad[pos] = int(rng.integers(0, 256))
        (tmp_path / "fuzz.dat").write_bytes(bytes(bad))
        try:
            read_dlib_resnet(tmp_path / "fuzz.dat")
        except ValueError as err:
            assert "fuzz.dat" in str(err)


# --------------------------------------------------------------------------- (d) ONNX


def test_onnx_export_matches_torch(tiny_file: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from facefuse.models.onnx_export import features_graph

    model = DlibResNet.from_dat(tiny_file).eval()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(features_graph(model, CHIP), options,
                                   providers=["CPUExecutionProvider"])
    x = torch.randn(4, 3, CHIP, CHIP, generator=torch.Generator().manual_seed(3))
    (got,) = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


# ----------------------------------------------------------------- (e) trunk and training


def test_registered_trunk_contract() -> None:
    trunk = build_trunk("dlib_resnet")
    assert isinstance(trunk, DlibResNet)
    assert trunk.feature_dim == 128 and trunk.image_size == 150
    assert sum(p.numel() for p in trunk.parameters()) == 5_614_592
    trunk.eval()
    with torch.no_grad():
        maps = trunk.forward_maps(torch.randn(1, 3, 150, 150))
    assert [tuple(m.shape[1:]) for m in maps] == [(32, 35, 35), (64, 17, 17), (128, 8, 8),
                                                  (256, 4, 4), (256, 2, 2), (256,)]
    assert trunk.forward_features(torch.randn(2, 3, 150, 150)).shape == (2, 128)
    with pytest.raises(ValueError, match="too small"):
        trunk(torch.zeros(1, 3, 90, 90))  # the last block's stride-2 conv gets 2x2


def test_gradients_reach_every_parameter(tiny: DlibResnetWeights) -> None:
    model = DlibResNet.from_weights(tiny).train()
    params = dict(model.named_parameters())
    assert any(n.endswith("affine_a.scale") for n in params)
    x = torch.randn(2, 3, CHIP, CHIP, generator=torch.Generator().manual_seed(4))
    model(x).pow(2).sum().backward()
    for name, p in params.items():
        assert p.requires_grad and p.grad is not None, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


# ------------------------------------------------------------------ (f) parity with dlib


def test_parity_with_dlib_bin() -> None:
    dlib = pytest.importorskip("dlib")
    path = _real_dat()
    model = DlibResNet.from_dat(path).eval()
    net = dlib.face_recognition_model_v1(str(path))
    rng = np.random.default_rng(5)
    from PIL import Image

    from facefuse.assets import __file__ as assets_init

    face = Image.open(Path(assets_init).parent / "astronaut.jpg").convert("RGB")
    chips = [np.array(face.resize((150, 150))),
             rng.integers(0, 256, (150, 150, 3), dtype=np.uint8)]
    norm = model.normalisation
    for chip in chips:
        want = np.asarray(net.compute_face_descriptor(np.ascontiguousarray(chip)))
        x = torch.from_numpy(chip).permute(2, 0, 1)[None].float() / 255
        x = (x - torch.tensor(norm["mean"]).view(1, 3, 1, 1)) / torch.tensor(
            norm["std"]).view(1, 3, 1, 1)
        with torch.no_grad():
            got = model(x)[0].numpy()
        assert np.abs(got - want).max() < 1e-4
