import json

import numpy as np
import pytest

from sr_deploy.descriptor import ModelDescriptor
from sr_deploy.engine.key import check_key, engine_path, make_key, read_sidecar, write_sidecar
from sr_deploy.engine.profile import Profile, make_profile, parse_hw
from sr_deploy.errors import EngineMismatch, InputError, ModelError

DESC = ModelDescriptor(name="m", scale=4, size_multiple=1)


def test_parse_hw():
    assert parse_hw("270x480") == (270, 480)
    assert parse_hw(" 16X32 ") == (16, 32)
    for bad in ("270", "0x5", "axb", ""):
        with pytest.raises(InputError):
            parse_hw(bad)


def test_default_profile_from_descriptor():
    p = make_profile(DESC)
    assert p.opt == (1, 3, 270, 480)  # 1080p output at x4
    assert p.min == (1, 3, 16, 16)
    from sr_deploy.engine.profile import ASSUMED_MEMORY, activation_bytes_per_pixel

    b, _, h, w = p.max  # the GPU's memory unknown: sized for a 16 GB card, a 1080p input's aspect kept
    assert b * h * w * activation_bytes_per_pixel(DESC) <= ASSUMED_MEMORY / 2 and h >= 540 and abs(h / w - 0.5625) < 0.02
    p8 = make_profile(ModelDescriptor(name="m", scale=2, size_multiple=8), target_hw=(1080, 1920))
    assert p8.opt[2] % 8 == 0 and p8.opt[3] % 8 == 0 and p8.opt[2] >= 540
    with pytest.raises(InputError, match="multiple"):
        make_profile(ModelDescriptor(name="m", scale=2, size_multiple=8), min_hw=(15, 16))


def test_profile_order_and_bounds():
    with pytest.raises(InputError, match="min <= opt <= max"):
        make_profile(DESC, min_hw=(64, 64), opt_hw=(32, 32))
    p = make_profile(DESC, min_hw=(16, 16), opt_hw=(64, 64), max_hw=(128, 128), max_batch=2)
    p.check((2, 3, 100, 17))
    with pytest.raises(InputError, match="outside the engine's profile"):
        p.check((1, 3, 129, 64))
    with pytest.raises(InputError, match="outside"):
        p.check((3, 3, 64, 64))
    assert Profile.from_dict(p.to_dict()) == p


def _key(**kw):
    base = dict(tensorrt="10.9.0", gpu="NVIDIA H100", compute_capability="9.0")
    base.update(kw)
    return make_key("ab" * 32, "fp16", make_profile(DESC), **base)


def test_engine_name_depends_on_every_key_part(tmp_path):
    onnx = tmp_path / "m.fp16.onnx"
    names = {engine_path(onnx, k).name for k in
             [_key(), _key(tensorrt="11.0.0"), _key(gpu="NVIDIA L4", compute_capability="8.9"),
              make_key("cd" * 32, "fp16", make_profile(DESC), tensorrt="10.9.0", gpu="NVIDIA H100", compute_capability="9.0"),
              make_key("ab" * 32, "fp16", make_profile(DESC, max_hw=(540, 960), max_batch=2), tensorrt="10.9.0", gpu="NVIDIA H100",
                       compute_capability="9.0")]}
    assert len(names) == 5
    assert engine_path(onnx, _key()).name.startswith("m.fp16.sm90.")


def test_sidecar_roundtrip_and_mismatch(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    key = _key()
    write_sidecar(engine, key, DESC.with_(precision="fp16"))
    k2, d2 = read_sidecar(engine)
    assert k2 == key and d2.precision == "fp16" and d2.scale == 4
    check_key(k2, tensorrt="10.9.0", gpu="NVIDIA H100", compute_capability="9.0", engine=engine)
    with pytest.raises(EngineMismatch, match=r"TensorRT 10\.9\.0 \(built\) vs 11\.0\.0.*build-engine .* --fp16"):
        check_key(k2, tensorrt="11.0.0", gpu="NVIDIA H100", compute_capability="9.0", engine=engine)
    with pytest.raises(EngineMismatch, match="GPU NVIDIA H100 sm9.0 .*NVIDIA L4 sm8.9"):
        check_key(k2, tensorrt="10.9.0", gpu="NVIDIA L4", compute_capability="8.9", engine=engine)
    # another GPU of the same architecture (same compute capability): still another engine's machine
    with pytest.raises(EngineMismatch, match="GPU NVIDIA H100 sm9.0 .*NVIDIA H100 PCIe sm9.0"):
        check_key(k2, tensorrt="10.9.0", gpu="NVIDIA H100 PCIe", compute_capability="9.0", engine=engine)
    # every difference named, and the command that rebuilds this precision, exactly
    for precision, flag in (("int8", " --int8 --calib DIR"), ("fp32", ""), ("fp16", " --fp16")):
        k = make_key("ab" * 32, precision, make_profile(DESC), tensorrt="10.9.0", gpu="NVIDIA H100",
                     compute_capability="9.0")
        with pytest.raises(EngineMismatch) as err:
            check_key(k, tensorrt="11.0.0", gpu="NVIDIA L4", compute_capability="8.9", engine=engine, onnx_hint="m.onnx")
        assert str(err.value) == (f"{engine}: engine does not match this machine: TensorRT 10.9.0 (built) vs 11.0.0 "
                                  "(installed); GPU NVIDIA H100 sm9.0 (built) vs NVIDIA L4 sm8.9 (here); rebuild with "
                                  f"`srdeploy build-engine m.onnx{flag}`")
    (tmp_path / "m.json").write_text(json.dumps({"key": {"nope": 1}}))
    with pytest.raises(ModelError, match="sidecar"):
        read_sidecar(engine)
    with pytest.raises(ModelError, match="no sidecar"):
        read_sidecar(tmp_path / "other.engine")


@pytest.mark.needs_tensorrt
@pytest.mark.needs_gpu
def test_build_and_run_engine_matches_onnxruntime(tiny_onnx, tmp_path):
    from sr_deploy.engine.build import build_engine
    from sr_deploy.export.onnx_export import read_descriptor
    from sr_deploy.runtime.ort_runner import OrtRunner
    from sr_deploy.runtime.tensorrt_runner import TensorRTRunner

    desc = read_descriptor(tiny_onnx)
    prof = make_profile(desc, min_hw=(8, 8), opt_hw=(32, 32), max_hw=(64, 64), max_batch=2)
    engine = build_engine(tiny_onnx, desc, prof, out=tmp_path / "t.engine")
    x = np.random.default_rng(0).random((2, 3, 21, 30), dtype=np.float32)
    with OrtRunner(tiny_onnx, desc) as ref, TensorRTRunner(engine) as trt_runner:
        assert np.abs(trt_runner.infer(x) - ref.infer(x)).max() < 1e-3
        px = np.random.default_rng(1).integers(0, 256, (1, 20, 30, 3), dtype=np.uint8)
        outs = list(trt_runner.stream_u8([px] * 6))  # the pipelined path on a real GPU
        ref_px = ref.infer_u8(px)
        assert all(np.abs(o.astype(int) - ref_px.astype(int)).max() <= 1 for o in outs)
        with pytest.raises(InputError, match="outside"):
            trt_runner.infer(np.zeros((1, 3, 65, 8), np.float32))


def test_default_profile_max_fits_the_gpus_memory():
    from sr_deploy.descriptor import ModelDescriptor
    from sr_deploy.engine.profile import activation_bytes_per_pixel, make_profile

    desc = ModelDescriptor(name="m", scale=4, arch={"channels": 64})
    per_px = activation_bytes_per_pixel(desc)
    roomy = make_profile(desc, memory_bytes=80 << 30)
    assert roomy.max[2:] == (1080, 1920)  # an H100 takes a 1080p input (x4: 8K out) whole
    assert roomy.max[0] * 1080 * 1920 * per_px <= 0.5 * (80 << 30)
    tight = make_profile(desc, memory_bytes=8 << 30)
    b, _, h, w = tight.max
    assert b * h * w * per_px <= 0.5 * (8 << 30)
    assert (h, w) != (1080, 1920) and tight.opt[2] <= h and tight.opt[3] <= w
    tiny = make_profile(desc, memory_bytes=256 << 20)
    assert tiny.max[0] == 1 and tiny.max[2] * tiny.max[3] * per_px <= 0.5 * (256 << 20)
    assert abs(tiny.max[2] / tiny.max[3] - 1080 / 1920) < 0.05  # aspect kept
    assert make_profile(desc, memory_bytes=256 << 20, max_hw=(540, 960)).max == (4, 3, 540, 960)  # explicit wins


def test_each_key_part_alone_names_another_engine(tmp_path):
    """One part changed at a time (a GPU of another name with the same compute capability included): an
    engine built for one never runs on the other."""
    onnx = tmp_path / "m.fp16.onnx"
    base = engine_path(onnx, _key()).name
    for change in ({"gpu": "NVIDIA H200"}, {"compute_capability": "9.1"}, {"tensorrt": "10.9.1"}):
        assert engine_path(onnx, _key(**change)).name != base, change
    other_onnx = make_key("cd" * 32, "fp16", make_profile(DESC), tensorrt="10.9.0", gpu="NVIDIA H100",
                          compute_capability="9.0")
    assert engine_path(onnx, other_onnx).name != base


def test_profile_layout_defaults_and_messages_exactly():
    """Read against mutation testing: what each default is, for each I/O layout, and what an error names."""
    from dataclasses import replace

    nhwc = make_profile(DESC.with_(io="uint8-nhwc"), min_hw=(16, 24), opt_hw=(32, 40), max_hw=(64, 80), max_batch=3)
    assert (nhwc.min, nhwc.opt, nhwc.max) == ((1, 16, 24, 3), (1, 32, 40, 3), (3, 64, 80, 3))
    nchw = make_profile(DESC, min_hw=(16, 24), opt_hw=(32, 40), max_hw=(64, 80), max_batch=3)
    assert (nchw.min, nchw.opt, nchw.max) == ((1, 3, 16, 24), (1, 3, 32, 40), (3, 3, 64, 80))
    # an opt larger than half the default maximum: the maximum is twice opt, per side
    big = make_profile(DESC, opt_hw=(600, 1000), memory_bytes=10**15)
    assert big.max[2:] == (1200, 2000)
    # a memory that cuts the maximum below the default minimum: min follows it down, per side
    tiny = make_profile(DESC, max_batch=1, memory_bytes=1)
    assert tiny.min[2:] == tiny.max[2:] and tiny.max[0] == 1
    assert parse_hw("1x1") == (1, 1) and parse_hw(" 2 X 3 ") == (2, 3)
    for bad in ("0x5", "5x0", "", "5"):
        with pytest.raises(InputError) as err:
            parse_hw(bad)
        assert str(err.value) == f"shape {bad!r} is not HxW (for example 270x480)"
    odd = replace(DESC, size_multiple=8)
    with pytest.raises(InputError) as err:
        make_profile(odd, min_hw=(16, 24), opt_hw=(32, 36), max_hw=(64, 80))
    assert str(err.value) == "--opt 32x36 is not a multiple of the model's size multiple 8"


def _live_pair_bytes_per_pixel(model, h: int = 16, w: int = 24) -> float:
    """The largest input + output of any one layer of ``model``'s export form, fp32 bytes per input pixel."""
    import torch

    model = model.export_ready() if hasattr(model, "export_ready") else model
    peak = [0]

    def hook(mod, args, out):
        peak[0] = max(peak[0], sum(a.numel() for a in args if torch.is_tensor(a)) + out.numel())

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    with torch.inference_mode():
        model.eval()(torch.rand(1, 3, h, w))
    for hd in handles:
        hd.remove()
    return 4 * peak[0] / (h * w)


@pytest.mark.parametrize("arch", ["light", "srresnet"])
def test_the_activation_estimate_bounds_the_real_layers_and_fits_light_closely(arch):
    """The per-pixel estimate that decides tiling is at least the largest layer's input + output, and
    for light_x4 (every conv at the input's size) within 2x of it: the upsampler bound it had before
    was 11x, which tiled light_x4's 270x480 video frames under the host's 1 GiB budget."""
    from sr_deploy.engine.profile import activation_bytes_per_pixel
    from sr_deploy.export.onnx_export import descriptor_for
    from sr_deploy.models.light import LightSR, LightSRConfig
    from sr_deploy.models.srresnet import SRResNet, SRResNetConfig

    model = LightSR(LightSRConfig()) if arch == "light" else SRResNet(SRResNetConfig(num_blocks=1, channels=64))
    est = activation_bytes_per_pixel(descriptor_for(model, name="m"))
    real = _live_pair_bytes_per_pixel(model)
    assert real <= est
    if arch == "light":
        assert est <= 2 * real
