"""The builder and the runner, run for real against the stand-in TensorRT 10.x and 11.x on a simulated GPU."""

import json
import sys

import numpy as np
import pytest

from sr_deploy.engine import build as build_mod
from sr_deploy.engine.profile import make_profile
from sr_deploy.errors import EngineMismatch, InputError, ModelError
from sr_deploy.export.onnx_export import read_descriptor
from sr_deploy.export.pixels import uint8_onnx
from sr_deploy.media.tiling import quantize, tile_batch, upscale_frame
from sr_deploy.runtime import pipeline as pipeline_mod
from sr_deploy.runtime.ort_runner import OrtRunner
from sr_deploy.runtime.tensorrt_runner import TensorRTRunner
from tests.engine.standin import SimCudart, bindings_names, find_wheel, make_tensorrt


@pytest.fixture(params=[10, 11], ids=["trt10", "trt11"])
def trt(request, monkeypatch):
    wheel = find_wheel(request.param)
    if wheel is None:
        pytest.skip(f"TensorRT {request.param}.x bindings wheel not downloaded (bash .ci/install fetches it)")
    sim, calls = SimCudart(), []
    mod = make_tensorrt(wheel, sim, calls)
    monkeypatch.setitem(sys.modules, "tensorrt", mod)
    monkeypatch.setattr(pipeline_mod, "cudart", lambda: sim)
    monkeypatch.setattr(build_mod, "gpu_identity", lambda: ("Sim GPU", "9.0"))
    mod._sim, mod._calls = sim, calls
    return mod


@pytest.fixture
def pipeline_shapes(monkeypatch):
    """The input shape of every pipeline (pinned and device buffers) a TensorRT runner makes."""
    from sr_deploy.runtime import tensorrt_runner

    made = []

    class Counted(tensorrt_runner.FramePipeline):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made.append(self.inp.shape)

    monkeypatch.setattr(tensorrt_runner, "FramePipeline", Counted)
    return made


def _reference(onnx_path, px):
    r = OrtRunner(onnx_path, read_descriptor(onnx_path), pixels=False)
    with r:
        y = r.infer(px.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    return quantize(y.transpose(0, 2, 3, 1))


def _build(onnx_path, **kw):
    desc = read_descriptor(onnx_path)
    profile = make_profile(desc, min_hw=(8, 8), opt_hw=(16, 16), max_hw=(32, 32), max_batch=2)
    return build_mod.build_engine(onnx_path, desc, profile, **kw), profile


def test_real_binding_names(trt):
    version, whole, tails = bindings_names(find_wheel(int(trt.__version__.split(".")[0])))
    for name in ("set_input_shape", "set_tensor_address", "execute_async_v3", "deserialize_cuda_engine",
                 "build_serialized_network", "create_timing_cache", "set_timing_cache", "combine", "get_tensor_dtype",
                 "STRONGLY_TYPED", "WORKSPACE"):
        assert name in whole, name
    assert hasattr(trt.BuilderFlag, "FP16") == version.startswith("10.")
    assert hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH") == version.startswith("10.")
    with pytest.raises(AttributeError):
        trt.Builder(trt.Logger()).build_engine  # removed in 10.0: the stand-in refuses it like the real module


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_uint8_engine_pipeline(trt, tiny_onnx, tmp_path, cuda_graph):
    u8 = uint8_onnx(tiny_onnx, out=tmp_path / "m.uint8-nhwc.onnx")
    engine, profile = _build(u8)
    assert profile.max == (2, 32, 32, 3)  # NHWC profile for a pixels graph
    flags = [c[1] for c in trt._calls if c[0] == "create_network"]
    # strongly typed on 10.x (precision lives in the ONNX); 11.x has no other mode and takes no flag
    assert flags == ([1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)] if trt.__version__.startswith("10.") else [0])
    frames = [np.random.default_rng(i).integers(0, 256, (1, 12, 20, 3), dtype=np.uint8) for i in range(7)]
    r = TensorRTRunner(engine, cuda_graph=cuda_graph, depth=3)
    with r:
        assert r.in_dtype == np.uint8 and r.out_dtype == np.uint8
        outs = list(r.stream_u8(iter(frames)))
        n_exec = sum(1 for c in trt._calls if c[0] == "execute_async_v3")
    for f, o in zip(frames, outs, strict=True):
        assert np.abs(o.astype(int) - _reference(tiny_onnx, f).astype(int)).max() <= 1
    sim = trt._sim
    assert sim.max_pending_h2d >= 2  # frames really were in flight together
    assert sim.live == 0  # buffers, streams, events and graphs all released
    # with graphs: one plain enqueue and one captured per slot, then replays
    assert n_exec == (2 * 3 if cuda_graph else 7)


def test_float_engine_sizes_buffers_from_engine_dtypes(trt, tiny_onnx):
    engine, _ = _build(tiny_onnx)
    px = np.random.default_rng(3).integers(0, 256, (2, 9, 17, 3), dtype=np.uint8)
    with TensorRTRunner(engine) as r:
        assert r.in_dtype == np.float32
        got = r.infer_u8(px)
        y = r.infer(px.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    assert np.abs(got.astype(int) - _reference(tiny_onnx, px).astype(int)).max() <= 1
    assert y.shape == (2, 3, 18, 34)


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_batches_and_sizes_beyond_the_profile_are_fitted_to_it(trt, tiny_onnx, tmp_path, pipeline_shapes, cuda_graph):
    """More frames than the profile's batch are cut into chunks, frames under its minimum padded and cropped;
    buffers (and CUDA graphs) are kept per shape, so alternating shapes neither re-allocate nor mix."""
    made = pipeline_shapes
    u8 = uint8_onnx(tiny_onnx, out=tmp_path / "m.uint8-nhwc.onnx")
    engine, _ = _build(u8)  # batch 1-2, 8x8 to 32x32
    rng = np.random.default_rng(5)
    shapes = [(5, 12, 20), (1, 4, 6), (3, 12, 20), (2, 12, 20), (1, 4, 6), (5, 12, 20)]
    batches = [rng.integers(0, 256, (*sh, 3), dtype=np.uint8) for sh in shapes]
    with TensorRTRunner(engine, cuda_graph=cuda_graph) as r:
        outs = list(r.stream_u8(iter(batches)))
        assert r.infer_u8(batches[0]).shape == (5, 24, 40, 3)
        assert tile_batch(r, (8, 8)) == 2  # tiles are batched within the profile, not cut by the runner
    for b, o in zip(batches, outs, strict=True):
        assert o.shape == (len(b), 2 * b.shape[1], 2 * b.shape[2], 3)
        ref = _reference(tiny_onnx, np.pad(b, ((0, 0), (0, max(0, 8 - b.shape[1])), (0, max(0, 8 - b.shape[2])), (0, 0)),
                                           mode="edge"))[:, : 2 * b.shape[1], : 2 * b.shape[2]]
        assert np.abs(o.astype(int) - ref.astype(int)).max() <= 1
    assert sorted(made) == [(1, 8, 8, 3), (1, 12, 20, 3), (2, 12, 20, 3)]  # one pipeline per shape, reused
    assert trt._sim.live == 0

    engine, _ = _build(tiny_onnx)  # float I/O: the float entry is fitted the same way
    x = rng.random((3, 3, 5, 6), dtype=np.float32)
    with TensorRTRunner(engine) as r:
        y = r.infer(x)
    ref = _reference(tiny_onnx, np.pad(quantize(x.transpose(0, 2, 3, 1)), ((0, 0), (0, 3), (0, 2), (0, 0)), mode="edge"))
    assert y.shape == (3, 3, 10, 12)
    assert np.abs(quantize(y.transpose(0, 2, 3, 1)).astype(int) - ref[:, :10, :12].astype(int)).max() <= 1


def test_streamed_frames_meet_the_models_size_multiple(trt, tiny_onnx, tmp_path, pipeline_shapes):
    """A model whose graph relies on the runner for its size multiple (community graphs from the TorchScript
    tracer): frames streamed to the engine (video, tiles) are padded to the multiple like ``infer_u8``'s."""
    made = pipeline_shapes
    u8 = uint8_onnx(tiny_onnx, out=tmp_path / "m.uint8-nhwc.onnx")
    desc = read_descriptor(u8).with_(size_multiple=8)
    profile = make_profile(desc, min_hw=(8, 8), opt_hw=(16, 16), max_hw=(32, 32), max_batch=2)
    engine = build_mod.build_engine(u8, desc, profile)
    frames = [np.random.default_rng(i).integers(0, 256, (1, 12, 20, 3), dtype=np.uint8) for i in range(3)]
    with TensorRTRunner(engine) as r:
        outs = list(r.stream_u8(iter(frames)))
    assert made == [(1, 16, 24, 3)]
    for f, o in zip(frames, outs, strict=True):
        ref = _reference(tiny_onnx, np.pad(f, ((0, 0), (0, 4), (0, 4), (0, 0)), mode="edge"))[:, :24, :40]
        assert o.shape == (1, 24, 40, 3)
        assert np.abs(o.astype(int) - ref.astype(int)).max() <= 1


def test_the_tiles_of_a_frame_are_in_flight_together(trt, tiny_onnx, tmp_path):
    """A frame larger than the profile is tiled, and its tile batches stream through the pipeline (several
    uploaded before the host waits on one), blended as on any other backend."""
    u8 = uint8_onnx(tiny_onnx, out=tmp_path / "m.uint8-nhwc.onnx")
    engine, _ = _build(u8)  # up to 32x32, batch 2
    frame = np.random.default_rng(8).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    with TensorRTRunner(engine) as r:
        got = upscale_frame(r, frame, tile=(24, 24))
    assert trt._sim.max_pending_h2d >= 2
    with OrtRunner(tiny_onnx, read_descriptor(tiny_onnx), pixels=False) as ref:
        want = upscale_frame(ref, frame, tile=(24, 24))
    assert got.shape == want.shape == (120, 180, 3)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_finer_than_8_bit_input_on_a_pixels_engine_is_said_once(trt, tiny_onnx, tmp_path, caplog):
    """The engines srdeploy builds take uint8 pixels: 16-bit or 10-bit input through their float entry is
    rounded to 8 bits, and the run says so (once), instead of quietly dropping the extra bits."""
    engine, _ = _build(uint8_onnx(tiny_onnx, out=tmp_path / "m.uint8-nhwc.onnx"))
    rng = np.random.default_rng(2)
    eight = rng.integers(0, 256, (1, 3, 12, 12)).astype(np.float32) / 255.0
    with TensorRTRunner(engine) as r, caplog.at_level("WARNING"):
        r.infer(eight)
        assert not caplog.records  # 8-bit values lose nothing
        r.infer(rng.integers(0, 65536, (1, 3, 12, 12)).astype(np.float32) / 65535.0)
        r.infer(rng.integers(0, 65536, (1, 3, 12, 12)).astype(np.float32) / 65535.0)
    notes = [rec.getMessage() for rec in caplog.records]
    assert len(notes) == 1 and "8-bit pixels only" in notes[0] and "tensorrt" in notes[0], notes


def test_shape_outside_profile_and_bad_engines(trt, tiny_onnx, tmp_path):
    engine, _ = _build(tiny_onnx)
    with TensorRTRunner(engine) as r:
        with pytest.raises(InputError, match="outside the engine's profile"):
            r.infer_u8(np.zeros((1, 40, 40, 3), np.uint8))
    sidecar = engine.with_suffix(".json")
    data = json.loads(sidecar.read_text())
    data["key"]["tensorrt"] = "9.0.0"
    sidecar.write_text(json.dumps(data))
    with pytest.raises(EngineMismatch, match="TensorRT 9.0.0"):
        TensorRTRunner(engine).activate()
    data["key"]["tensorrt"] = trt.__version__
    sidecar.write_text(json.dumps(data))
    engine.write_bytes(b"garbage")
    with pytest.raises(ModelError, match="could not deserialize"):
        TensorRTRunner(engine).activate()


def test_timing_cache_per_version_refused_cache_rebuilt(trt, tiny_onnx, tmp_path):
    path = build_mod.timing_cache_path(trt.__version__, "Sim GPU", "9.0")
    assert trt.__version__ in path.name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"timing cache of tensorrt 9.9 (another version)")
    engine, _ = _build(tiny_onnx, out=tmp_path / "a.engine")
    assert engine.is_file()
    # refused once, then an empty cache; the file now holds this version's cache
    assert [c for c in trt._calls if c[0] == "set_timing_cache"] == [("set_timing_cache", False)] * 2
    assert path.read_bytes().startswith(f"timing cache of tensorrt {trt.__version__}".encode())
    trt._calls.clear()
    _build(tiny_onnx, out=tmp_path / "b.engine")  # reused as is
    assert [c for c in trt._calls if c[0] == "set_timing_cache"] == [("set_timing_cache", False)]


def test_builds_share_the_timing_cache_without_holding_its_lock_while_they_build(trt, tiny_onnx, tmp_path, monkeypatch):
    from filelock import FileLock, Timeout

    path = build_mod.timing_cache_path(trt.__version__, "Sim GPU", "9.0")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    real = trt.Builder.build_serialized_network
    seen = {}

    def another_build_meanwhile(self, network, config):
        try:  # the lock is free while this build runs: another process may read and write the cache now
            with FileLock(str(path) + ".lock", timeout=0):
                seen["free"] = True
        except Timeout:
            seen["free"] = False
        path.write_bytes(f"timing cache of tensorrt {trt.__version__} (another build's)".encode())
        return real(self, network, config)

    monkeypatch.setattr(trt.Builder, "build_serialized_network", another_build_meanwhile)
    _build(tiny_onnx, out=tmp_path / "c.engine")
    assert seen["free"]
    merged = path.read_bytes()  # the other build's timings and ours, combined
    assert merged.startswith(f"timing cache of tensorrt {trt.__version__} (another build's) + ".encode()), merged
    assert ("combine", False) in trt._calls


@pytest.fixture
def gpu_here(trt, monkeypatch):
    from sr_deploy.runtime import select

    monkeypatch.setattr(build_mod, "tensorrt_available", lambda: True)
    monkeypatch.setattr(select, "gpu_available", lambda: True)
    return trt


def test_run_builds_engine_on_first_use_then_reuses_it(gpu_here, tiny_ckpt, tiny_onnx, monkeypatch):
    from sr_deploy.runtime.select import make_runner, resolve_model

    src = resolve_model(str(tiny_ckpt))
    px = np.random.default_rng(5).integers(0, 256, (1, 10, 14, 3), dtype=np.uint8)
    r1, why1 = make_runner(src, "tensorrt")
    with r1:
        out = r1.infer_u8(px)
    assert "built on first use" in why1 and r1.in_dtype == np.uint8
    assert ".fp16." in r1.path.name  # the default engine is fp16, its variant gated and made into the cache
    from sr_deploy.fsutil import cache_root

    reports = list((cache_root() / "onnx").glob("*.fp16.quality.json"))
    assert reports and json.loads(reports[0].read_text())["fidelity_db"] >= 45
    # 10x14 is below the profile's 16x16 minimum: edge-padded to it, output cropped back
    assert out.shape == (1, 20, 28, 3)
    ref = _reference(tiny_onnx, np.pad(px, ((0, 0), (0, 6), (0, 2), (0, 0)), mode="edge"))[:, :20, :28]
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1
    gate = json.loads(r1.path.with_suffix(".json").read_text())["gate"]
    assert gate["passed"] and gate["psnr_vs_fp32_db"] >= 50 and "dB vs fp32" in why1
    r2, why2 = make_runner(src, "auto", cuda_graph=True)  # auto on a GPU with TensorRT: the cached engine
    assert "from the cache" in why2 and r2.path == r1.path and r2.cuda_graph
    # another TensorRT version: a new engine is built beside, the old one is never run
    object.__setattr__(gpu_here, "__version__", gpu_here.__version__ + ".1")
    r3, why3 = make_runner(src, "tensorrt")
    assert "built on first use" in why3 and r3.path != r1.path


def test_tensorrt_backend_without_gpu_says_what_works(tiny_ckpt, monkeypatch):
    from sr_deploy.errors import BackendUnavailable
    from sr_deploy.runtime import select

    monkeypatch.setattr(select, "gpu_available", lambda: False)
    with pytest.raises(BackendUnavailable, match="--backend auto"):
        select.make_runner(select.resolve_model(str(tiny_ckpt)), "tensorrt")


def test_engine_that_drifts_from_fp32_is_refused(gpu_here, tiny_ckpt, monkeypatch, tmp_path):
    """The engine gate compares the built engine with the fp32 ONNX: an engine whose output is off (a bad
    tactic, an fp16 overflow) is refused with one line, and the verdict is kept in its sidecar."""
    from sr_deploy.errors import QualityGateError
    from sr_deploy.runtime.select import make_runner, resolve_model

    real = TensorRTRunner._from_engine

    def drifted(self, out, pixel_graph, nhwc):
        return (real(self, out, pixel_graph, nhwc).astype(np.int16) + 9).clip(0, 255).astype(np.uint8)

    monkeypatch.setenv("SRDEPLOY_CACHE", str(tmp_path / "cache"))  # a fresh engine, not one gated before
    monkeypatch.setattr(TensorRTRunner, "_from_engine", drifted)
    with pytest.raises(QualityGateError, match="from the fp32 model's"):
        make_runner(resolve_model(str(tiny_ckpt)), "tensorrt")
    with pytest.raises(QualityGateError):  # the recorded verdict is reused, not re-measured into a pass
        monkeypatch.setattr(TensorRTRunner, "_from_engine", real)
        make_runner(resolve_model(str(tiny_ckpt)), "tensorrt")


def test_outscale_at_a_divisor_builds_an_engine_that_averages_on_the_gpu(gpu_here, tiny_ckpt, tiny_onnx):
    """`run --outscale 1` with a x2 model: the engine is built from the pooled pixels graph (its own engine,
    beside the x2 one), returns x1 bytes, and is gated against the pooled fp32 graph."""
    import cv2

    from sr_deploy.runtime.select import make_runner, resolve_model

    src = resolve_model(str(tiny_ckpt))
    px = np.random.default_rng(6).integers(0, 256, (1, 16, 20, 3), dtype=np.uint8)
    full, _ = make_runner(src, "tensorrt")
    pooled, why = make_runner(src, "tensorrt", outscale=1)
    assert "built on first use" in why and pooled.path != full.path
    assert pooled.path.name.split(".")[1] == "x1" and ".x" not in full.path.name  # the name says what it returns
    assert pooled.scale == 1 and pooled.descriptor.model_scale == 2 and pooled.in_dtype == pooled.out_dtype == np.uint8
    with full, pooled:
        out, big = pooled.infer_u8(px), full.infer_u8(px)
    assert out.shape == px.shape
    area = cv2.resize(big[0], (20, 16), interpolation=cv2.INTER_AREA)  # what the host resize would give
    assert np.abs(out[0].astype(int) - area.astype(int)).max() <= 1
    gate = json.loads(pooled.path.with_suffix(".json").read_text())["gate"]
    assert gate["passed"] and gate["psnr_vs_fp32_db"] >= 50


@pytest.fixture(scope="module")
def tiny_x4_onnx(tmp_path_factory):
    """A x4 model's ONNX, exported before any stand-in TensorRT is imported (torch's exporter reads the
    modules loaded when it first runs)."""
    from sr_deploy.export import export_checkpoint
    from sr_deploy.models.checkpoint import save_checkpoint
    from tests.conftest import tiny_model

    d = tmp_path_factory.mktemp("x4")
    save_checkpoint(d / "tiny_x4.pt", tiny_model(4))
    return export_checkpoint(d / "tiny_x4.pt", d / "tiny_x4.onnx").path


def test_outscale_three_of_a_x4_model_builds_an_engine_that_area_resizes_on_the_gpu(tiny_x4_onnx, gpu_here):
    """`run --outscale 3` with a x4 model: the engine is built from the resampled pixels graph (a grouped
    conv and a depth-to-space after the model), named x3, returns x3 bytes within a level of the host's
    area resize of the x4 engine's output, and passes its gate against the resampled fp32 graph."""
    import cv2

    from sr_deploy.runtime.select import make_runner, resolve_model

    src = resolve_model(str(tiny_x4_onnx))
    px = np.random.default_rng(8).integers(0, 256, (1, 12, 20, 3), dtype=np.uint8)
    full, _ = make_runner(src, "tensorrt")
    resized, _ = make_runner(src, "tensorrt", outscale=3)
    assert resized.path.name.split(".")[1] == "x3" and (resized.scale, resized.descriptor.model_scale) == (3, 4)
    with full, resized:
        out, big = resized.infer_u8(px), full.infer_u8(px)
    assert out.shape == (1, 36, 60, 3)
    area = cv2.resize(big[0], (60, 36), interpolation=cv2.INTER_AREA)
    assert np.abs(out[0].astype(int) - area.astype(int)).max() <= 1
    gate = json.loads(resized.path.with_suffix(".json").read_text())["gate"]
    assert gate["passed"] and gate["psnr_vs_fp32_db"] >= 50


def test_build_engine_outscale_makes_the_averaged_engine(gpu_here, tiny_onnx, tmp_path):
    from typer.testing import CliRunner

    from sr_deploy.cli import app

    out = tmp_path / "half.engine"
    r = CliRunner().invoke(app, ["build-engine", str(tiny_onnx), "--outscale", "1", "-o", str(out)])
    assert r.exit_code == 0 and "x1: the x2 output area-resized in the graph" in r.output, r.output
    runner = TensorRTRunner(out)
    px = np.random.default_rng(7).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    with runner:
        got = runner.infer_u8(px)
    assert runner.scale == 1 and got.shape == px.shape
    full = _reference(tiny_onnx, px).astype(np.float64).reshape(1, 16, 2, 16, 2, 3).mean(axis=(2, 4))
    assert np.abs(got - full).max() <= 1.0
    r = CliRunner().invoke(app, ["build-engine", str(tiny_onnx), "--outscale", "3", "-o", str(tmp_path / "b.engine")])
    assert r.exit_code != 0 and "x1 only" in r.output and not (tmp_path / "b.engine").exists(), r.output
