import numpy as np
import onnx
import pytest

from sr_deploy.errors import ModelError
from sr_deploy.export.onnx_export import read_descriptor
from sr_deploy.export.pixels import uint8_onnx, wrap_uint8_io
from sr_deploy.media.tiling import quantize
from sr_deploy.runtime.ort_runner import OrtRunner
from sr_deploy.runtime.select import available_backends, make_runner, resolve_model


def _host_reference(onnx_path, px_nhwc):
    """The float graph with the conversions done on the host, as media did before pixels moved into the graph."""
    r = OrtRunner(onnx_path, read_descriptor(onnx_path), pixels=False)
    with r:
        y = r.infer(px_nhwc.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    return quantize(y.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("layout", ["nhwc", "nchw", "nhwc-planar"])
def test_uint8_graph_matches_host_conversion(tiny_onnx, tmp_path, layout):
    import onnxruntime as ort

    out = uint8_onnx(tiny_onnx, layout=layout, out=tmp_path / f"m.{layout}.onnx")
    desc = read_descriptor(out)
    assert desc.io == f"uint8-{layout}" and desc.pixel_io
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = sess.get_inputs(), sess.get_outputs()
    assert inp.type == "tensor(uint8)" and outp.type == "tensor(uint8)"
    px = np.random.default_rng(0).integers(0, 256, (2, 13, 19, 3), dtype=np.uint8)
    feed = px if layout != "nchw" else np.ascontiguousarray(px.transpose(0, 3, 1, 2))
    got = sess.run(None, {inp.name: feed})[0]
    if layout != "nhwc":  # planes out
        got = got.transpose(0, 2, 3, 1)
    ref = _host_reference(tiny_onnx, px)
    assert got.shape == ref.shape == (2, 26, 38, 3)
    # same float math, same round-half-to-even: at most one level where float noise crosses a .5
    diff = np.abs(got.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_uint8_wrap_refuses_wrapped_or_foreign_graphs(tiny_onnx, tmp_path):
    wrapped = wrap_uint8_io(onnx.load(str(tiny_onnx)))
    with pytest.raises(ModelError, match="already has uint8-nhwc"):
        wrap_uint8_io(wrapped)
    bare = onnx.load(str(tiny_onnx))
    del bare.metadata_props[:]
    with pytest.raises(ModelError, match="no srdeploy metadata"):
        wrap_uint8_io(bare)


def test_uint8_wrap_of_precision_variants(tiny_onnx, tmp_path):
    """fp16 (I/O kept fp32) and int8 Q/DQ graphs take the same wrapper."""
    import onnxruntime as ort

    from sr_deploy.precision.fp16 import convert_fp16

    fp16 = tmp_path / "m.fp16.onnx"
    convert_fp16(tiny_onnx, fp16)
    out = uint8_onnx(fp16, out=tmp_path / "m.fp16.u8.onnx")
    assert read_descriptor(out).pixel_io
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    px = np.random.default_rng(1).integers(0, 256, (1, 9, 11, 3), dtype=np.uint8)
    got = sess.run(None, {"pixels": px})[0]
    ref = _host_reference(tiny_onnx, px)
    assert got.dtype == np.uint8 and got.shape == ref.shape
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 2  # fp16 compute


def test_every_runner_moves_bytes_and_agrees(tiny_ckpt, tiny_onnx):
    px = np.random.default_rng(2).integers(0, 256, (2, 15, 21, 3), dtype=np.uint8)
    ref = _host_reference(tiny_onnx, px)
    runners = [make_runner(resolve_model(str(tiny_ckpt)), "torch")[0],
               make_runner(resolve_model(str(tiny_onnx)), "onnxruntime")[0]]
    if "openvino" in available_backends():
        runners.append(make_runner(resolve_model(str(tiny_onnx)), "openvino")[0])
    planar = make_runner(resolve_model(str(tiny_onnx)), "onnxruntime")[0]
    planar.u8_layout = "nhwc-planar"  # the graph returns planes, the runner interleaves them
    runners.append(planar)
    for r in runners:
        with r:
            got = r.infer_u8(px)
            if r.backend == "openvino":  # OpenVINO runs the planar graph: its own transpose was the slow part
                assert read_descriptor(r._graph(True)).io == "uint8-nhwc-planar"
            if r is planar:
                assert read_descriptor(r._u8_graph()).io == "uint8-nhwc-planar"
                assert list(r.stream_u8(iter([px[:1], px[1:]])))[1].shape == (1, 30, 42, 3)
        assert got.dtype == np.uint8 and got.shape == (2, 30, 42, 3), r.backend
        assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1, r.backend
    with pytest.raises(ValueError, match="NHWC uint8"):
        with runners[1] as r:
            r.infer_u8(px.astype(np.float32))


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_interleave_planes_is_the_nchw_to_nhwc_transpose(channels):
    from sr_deploy.runtime.base import interleave_planes

    y = np.random.default_rng(channels).integers(0, 256, (2, channels, 5, 7), dtype=np.uint8)
    got = interleave_planes(y)
    assert got.shape == (2, 5, 7, channels) and np.array_equal(got, y.transpose(0, 2, 3, 1))


def test_onnx_runner_uses_the_uint8_graph(tiny_onnx, monkeypatch):
    """infer_u8 on ONNX Runtime runs the wrapped graph, not the host fallback."""
    from sr_deploy.runtime.base import Runner

    def boom(self, batch):
        raise AssertionError("host fallback used")

    monkeypatch.setattr(Runner, "_infer_u8", boom)
    r = OrtRunner(tiny_onnx, read_descriptor(tiny_onnx))
    with r:
        out = r.infer_u8(np.zeros((1, 8, 8, 3), dtype=np.uint8))
        assert out.shape == (1, 16, 16, 3)
        assert r._session(True).get_inputs()[0].type == "tensor(uint8)"


@pytest.fixture(scope="module")
def tiny_x4_onnx(tmp_path_factory):
    from sr_deploy.export import export_checkpoint
    from sr_deploy.models.checkpoint import save_checkpoint
    from tests.conftest import tiny_model

    d = tmp_path_factory.mktemp("x4")
    save_checkpoint(d / "tiny_x4.pt", tiny_model(4))
    return export_checkpoint(d / "tiny_x4.pt", d / "tiny_x4.onnx").path


def _area(y: np.ndarray, to_scale: int, scale: int = 4) -> np.ndarray:
    """OpenCV's area resize of NCHW float ``y`` from x``scale`` to x``to_scale``: the reference."""
    import cv2

    n, c, h, w = y.shape
    size = (w * to_scale // scale, h * to_scale // scale)
    return np.stack([np.stack([cv2.resize(y[i, j], size, interpolation=cv2.INTER_AREA) for j in range(c)])
                     for i in range(n)])


def test_area_weights_are_opencvs_area_resize():
    """area_weights(q, p) applied per q-block is cv2.INTER_AREA exactly, for every ratio a graph may need
    (x4 → x3, x3 → x2, x4 → x1, x8 → x5), and each output pixel's weights sum to one."""
    import cv2

    from sr_deploy.export.pixels import area_weights

    for q, p in ((4, 3), (3, 2), (4, 1), (8, 5)):
        a = area_weights(q, p)
        assert a.shape == (p, q) and np.allclose(a.sum(axis=1), 1)
        x = np.random.default_rng(q * p).random((q * 6, q * 5)).astype(np.float32)
        blocks = x.reshape(6, q, 5, q)
        y = np.einsum("yi,aibj,xj->aybx", a, blocks, a).reshape(6 * p, 5 * p)
        assert np.allclose(y, cv2.resize(x, (5 * p, 6 * p), interpolation=cv2.INTER_AREA), atol=1e-6), (q, p)


def test_resampled_graph_is_the_area_resize_of_the_clamped_output(tiny_x4_onnx, tmp_path):
    """resample_output: the output is OpenCV's area resize (x3: a conv and depth-to-space; x2, x1: a block
    mean) of the full-scale output clamped to the value range (the tiny random model overshoots it often);
    the descriptor says the graph's scale and keeps the network's; its uint8 form rounds that once."""
    import onnxruntime as ort

    from sr_deploy.export.pixels import resample_output, resampled_onnx

    full = ort.InferenceSession(str(tiny_x4_onnx), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).random((2, 3, 9, 13), dtype=np.float32)
    y = full.run(None, {full.get_inputs()[0].name: x})[0]
    assert y.min() < 0 or y.max() > 1  # the clamp is exercised
    for to in (3, 2, 1):
        path = resampled_onnx(tiny_x4_onnx, to)
        desc = read_descriptor(path)
        assert (desc.scale, desc.model_scale) == (to, 4)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        assert got.shape == (2, 3, 9 * to, 13 * to)
        assert np.allclose(got, _area(np.clip(y, 0, 1), to), atol=1e-6), to
        u8 = uint8_onnx(path, out=tmp_path / f"p{to}.onnx")
        sess = ort.InferenceSession(str(u8), providers=["CPUExecutionProvider"])
        px = np.random.default_rng(2).integers(0, 256, (1, 9, 13, 3), dtype=np.uint8)
        got = sess.run(None, {sess.get_inputs()[0].name: px})[0]
        want = _area(np.clip(full.run(None, {full.get_inputs()[0].name: px.transpose(0, 3, 1, 2).astype(
            np.float32) / 255.0})[0], 0, 1), to)
        diff = np.abs(got.astype(int) - quantize(want.transpose(0, 2, 3, 1)).astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-2
    proto = onnx.load(str(tiny_x4_onnx))
    for bad in (4, 5, 1.5, 0):
        with pytest.raises(ModelError, match="whole factor below the scale"):
            resample_output(proto, bad)
    with pytest.raises(ModelError, match="float-I/O"):
        resample_output(wrap_uint8_io(proto), 2)


def test_every_runner_resizes_in_its_graph_at_a_whole_outscale(tiny_x4_onnx):
    """make_runner(outscale=F) with F a whole number below the scale: every CPU backend runs the resampled
    graph (torch the same weights on the module); the float output is the area resize of the full one,
    the bytes are within a level of the host's area resize; the memory estimate stays the full-scale
    network's. Other factors leave the runner at the model's scale (the host resizes)."""
    import cv2

    from sr_deploy.runtime.select import ModelSource

    ckpt = tiny_x4_onnx.with_suffix(".pt")
    x = np.random.default_rng(3).random((1, 3, 10, 14), dtype=np.float32)
    px = quantize(x.transpose(0, 2, 3, 1))
    for backend in available_backends():
        if backend == "tensorrt":
            continue
        src = ModelSource("checkpoint", ckpt, "tiny_x4") if backend == "torch" else resolve_model(str(tiny_x4_onnx))
        full, _ = make_runner(src, backend)
        for f in (3, 2, 1):
            resized, why = make_runner(src, backend, outscale=f)
            assert resized.scale == f and f"area-resized to x{f} in the graph" in why, (backend, why)
            assert resized.bytes_per_pixel() == full.bytes_per_pixel()
            with full, resized:
                want = _area(np.clip(full.infer(x), 0, 1), f)
                assert np.allclose(resized.infer(x), want, atol=1e-5), (backend, f)
                got, big = resized.infer_u8(px)[0], full.infer_u8(px)[0]
            area = cv2.resize(big, (14 * f, 10 * f), interpolation=cv2.INTER_AREA)
            assert got.shape == area.shape and np.abs(got.astype(int) - area.astype(int)).max() <= 1, backend
        for f in (1.5, 4, 8):
            runner, why = make_runner(src, backend, outscale=f)
            assert runner.scale == 4 and "area-resized" not in why


def test_descriptor_of_an_older_averaging_graph_reads_as_resampled():
    """Graphs and engine sidecars written before the resampling generalised carried ``reduce`` (k): read
    back, their network's scale is the graph's times k."""
    import json

    from sr_deploy.descriptor import ModelDescriptor

    old = {"name": "m", "scale": 2, "reduce": 2, "io": "uint8-nhwc"}
    desc = ModelDescriptor.from_json(json.dumps(old))
    assert (desc.scale, desc.model_scale) == (2, 4)
    assert ModelDescriptor.from_json(json.dumps({"name": "m", "scale": 4})).model_scale == 4


def test_cached_rewrites_are_named_by_their_form(tiny_x4_onnx, monkeypatch):
    """The cache outlives upgrades: a newer wrap or resampling (a bumped form) writes a new file instead of
    reusing the one an older srdeploy made from the same source."""
    from sr_deploy.export import pixels

    u8, resized = uint8_onnx(tiny_x4_onnx), pixels.resampled_onnx(tiny_x4_onnx, 2)
    assert uint8_onnx(tiny_x4_onnx) == u8 and pixels.resampled_onnx(tiny_x4_onnx, 2) == resized  # reused
    monkeypatch.setattr(pixels, "PIXELS_FORM", pixels.PIXELS_FORM + 1)
    monkeypatch.setattr(pixels, "RESAMPLE_FORM", pixels.RESAMPLE_FORM + 1)
    assert uint8_onnx(tiny_x4_onnx) != u8 and pixels.resampled_onnx(tiny_x4_onnx, 2) != resized
