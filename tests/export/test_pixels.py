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


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_uint8_graph_matches_host_conversion(tiny_onnx, tmp_path, layout):
    import onnxruntime as ort

    out = uint8_onnx(tiny_onnx, layout=layout, out=tmp_path / f"m.{layout}.onnx")
    desc = read_descriptor(out)
    assert desc.io == f"uint8-{layout}" and desc.pixel_io
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = sess.get_inputs(), sess.get_outputs()
    assert inp.type == "tensor(uint8)" and outp.type == "tensor(uint8)"
    px = np.random.default_rng(0).integers(0, 256, (2, 13, 19, 3), dtype=np.uint8)
    feed = px if layout == "nhwc" else np.ascontiguousarray(px.transpose(0, 3, 1, 2))
    got = sess.run(None, {inp.name: feed})[0]
    if layout == "nchw":
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
    for r in runners:
        with r:
            got = r.infer_u8(px)
        assert got.dtype == np.uint8 and got.shape == (2, 30, 42, 3), r.backend
        assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1, r.backend
    with pytest.raises(ValueError, match="NHWC uint8"):
        with runners[1] as r:
            r.infer_u8(px.astype(np.float32))


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
