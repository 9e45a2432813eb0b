import numpy as np
import pytest

from sr_deploy.errors import InputError
from sr_deploy.export.onnx_export import read_descriptor
from sr_deploy.runtime.select import available_backends, make_runner, resolve_model


def _runners(tiny_ckpt, tiny_onnx):
    src_ckpt, src_onnx = resolve_model(str(tiny_ckpt)), resolve_model(str(tiny_onnx))
    out = [make_runner(src_ckpt, "torch")[0], make_runner(src_onnx, "onnxruntime")[0]]
    if "openvino" in available_backends():
        out.append(make_runner(src_onnx, "openvino")[0])
    return out


def test_every_runner_agrees_with_torch(tiny_ckpt, tiny_onnx):
    x = np.random.default_rng(0).random((2, 3, 15, 21), dtype=np.float32)
    runners = _runners(tiny_ckpt, tiny_onnx)
    outs = {}
    for r in runners:
        with r:
            assert r.input_spec().scale == 2
            outs[r.backend] = r.infer(x)
        assert not r.active
    ref = outs.pop("torch")
    assert ref.shape == (2, 3, 30, 42)
    for name, y in outs.items():
        assert np.abs(y - ref).max() < 1e-4, name


def test_unknown_backend_and_model(tiny_ckpt):
    with pytest.raises(InputError, match="unknown backend"):
        make_runner(resolve_model(str(tiny_ckpt)), "cuda-magic")
    with pytest.raises(InputError, match="no shipped model named"):
        resolve_model("nonexistent_model")
    with pytest.raises(InputError, match="not found"):
        resolve_model("missing/model.onnx")


def test_checkpoint_runs_on_onnxruntime_via_cached_export(tiny_ckpt):
    r, _ = make_runner(resolve_model(str(tiny_ckpt)), "onnxruntime")
    with r:
        assert r.infer(np.zeros((1, 3, 9, 9), np.float32)).shape == (1, 3, 18, 18)


# int8: with Q/DQ on the residual adds' inputs (TensorRT placement) the two runtimes round the add's
# requantization differently at a few pixels (max 0.039, mean 0.003 on this random tiny model); on
# srresnet_x4 that placement scored ΔPSNR 0.054 dB on OpenVINO against 0.066 dB for ORT's own layout
@pytest.mark.parametrize("precision,tol", [("int8", 0.05), ("bf16", 0.03)])
def test_openvino_matches_onnxruntime_within_precision_tolerance(tiny_onnx, tmp_path, precision, tol):
    """OpenVINO runs the same Q/DQ ONNX as ONNX Runtime; bf16 is compared with the fp32 model."""
    import cv2

    from sr_deploy.machine import cpu_has_bf16
    from sr_deploy.export.onnx_export import read_descriptor
    from sr_deploy.precision.convert import make_precision_onnx
    from sr_deploy.runtime.openvino_runner import OpenVINORunner
    from sr_deploy.runtime.ort_runner import OrtRunner
    from tests.conftest import pattern_image

    if not OpenVINORunner.available():
        pytest.skip("openvino not installed")
    if precision == "bf16" and not cpu_has_bf16():
        pytest.skip("no native bf16 on this CPU")
    model = tmp_path / "m.onnx"
    model.write_bytes(tiny_onnx.read_bytes())
    if precision == "int8":
        calib = tmp_path / "calib"
        calib.mkdir()
        for i in range(3):
            cv2.imwrite(str(calib / f"{i}.png"), pattern_image(64, 64, 3, seed=i))
        model = __import__("pathlib").Path(make_precision_onnx(model, "int8", calib=calib, calib_count=6,
                                                               calib_size=16, budget_db=5.0).path)
    desc = read_descriptor(model)
    x = np.random.default_rng(1).random((1, 3, 20, 24), dtype=np.float32)
    with OrtRunner(model, desc) as ref, OpenVINORunner(model, desc, precision=precision) as ov:
        diff = np.abs(ov.infer(x) - ref.infer(x))
    assert diff.max() < tol and diff.mean() < tol / 10


def test_srdeploy_threads_sets_cpu_runner_threads(tiny_onnx, monkeypatch):
    """Ray actors sharing a machine get their share of the cores through SRDEPLOY_THREADS."""
    from sr_deploy.runtime.openvino_runner import OpenVINORunner

    monkeypatch.setenv("SRDEPLOY_THREADS", "1")
    runner, _ = make_runner(resolve_model(str(tiny_onnx)), "onnxruntime", "fp32")
    with runner:
        assert runner._opts.intra_op_num_threads == 1
    if OpenVINORunner.available():
        runner, _ = make_runner(resolve_model(str(tiny_onnx)), "openvino", "fp32")
        with runner:
            assert runner.config["INFERENCE_NUM_THREADS"] == 1
    monkeypatch.setenv("SRDEPLOY_THREADS", "")
    runner, _ = make_runner(resolve_model(str(tiny_onnx)), "onnxruntime", "fp32")
    with runner:
        assert runner.threads == 0  # the library's own choice


@pytest.mark.parametrize("streams", ["2", "3", "auto", ""])
def test_openvino_keeps_frames_in_flight_with_the_same_output_in_order(tiny_onnx, monkeypatch, streams):
    """stream_u8 on OpenVINO: several asynchronous infer requests (CPU streams), outputs in their order and
    equal to one-at-a-time infer_u8; a batch the graph must split or pad goes alone, in its turn."""
    from sr_deploy.runtime.openvino_runner import OpenVINORunner

    if not OpenVINORunner.available():
        pytest.skip("openvino not installed")
    monkeypatch.setenv("SRDEPLOY_OV_STREAMS", streams)  # auto: OpenVINO's choice here; "": one at a time
    runner = OpenVINORunner(tiny_onnx, read_descriptor(tiny_onnx))
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (1 + i % 2, 12 + i, 16, 3), dtype=np.uint8) for i in range(7)]
    with runner:
        want = [runner.infer_u8(b) for b in batches]
        got = list(runner.stream_u8(iter(batches)))
        if streams.isdigit():
            assert len(runner._in_flight()) == int(streams)
        if not streams:
            assert runner._in_flight() == []
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and int(np.abs(g.astype(int) - w.astype(int)).max()) <= 1
