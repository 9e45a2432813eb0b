"""The YUV graph (export/yuv.py): conversions held to the ITU formulas and to swscale, every layout, the
model between them, the GPU pipeline on the simulated device, and video through it."""

import ctypes

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from sr_deploy.export.yuv import RgbToYuv, YuvModel, YuvSpec, YuvToRgb

# (Kr, Kb) as the standards give them, written out here independently of the module's table
KRKB = {1: (0.2126, 0.0722), 5: (0.299, 0.114), 9: (0.2627, 0.0593)}
FORMATS = ["yuv420p", "nv12", "yuv420p10le", "p010le"]


def _levels(bits: int, full: bool):
    top = 2 ** bits - 1
    k = 2 ** (bits - 8)
    return (0, top, 2 ** (bits - 1), top) if full else (16 * k, 219 * k, 128 * k, 224 * k)


def _pack(y: np.ndarray, u: np.ndarray, v: np.ndarray, fmt: str) -> np.ndarray:
    """Planes of codes → the (3H/2, W) array FFmpeg lays ``fmt`` out as."""
    h, w = y.shape
    dtype = np.uint8 if fmt in ("yuv420p", "nv12") else np.uint16
    shift = 6 if fmt == "p010le" else 0
    if fmt in ("yuv420p", "yuv420p10le"):
        c = np.concatenate((u.ravel(), v.ravel())).reshape(h // 2, w)
    else:
        c = np.stack((u, v), -1).reshape(h // 2, w)
    return (np.concatenate((y, c)).astype(np.int64) << shift).astype(dtype)


def _reference_rgb(y, u, v, matrix: int, bits: int, full: bool) -> np.ndarray:
    """Codes → RGB in [0, 1]: chroma upsampled bilinear (OpenCV, centre-sited), BT formulas."""
    kr, kb = KRKB[matrix]
    kg = 1 - kr - kb
    y0, ys, c0, cs = _levels(bits, full)
    h, w = y.shape
    up = [cv2.resize(c.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) for c in (u, v)]
    yn = (y - y0) / ys
    cb, cr = ((c - c0) / cs for c in up)
    r = yn + 2 * (1 - kr) * cr
    b = yn + 2 * (1 - kb) * cb
    g = (yn - kr * r - kb * b) / kg
    return np.clip(np.stack((r, g, b)), 0, 1)


def _smooth_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    small = np.random.default_rng(seed).integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("matrix", [1, 5, 9])
@pytest.mark.parametrize("full", [False, True])
def test_to_rgb_follows_the_standard_formulas(fmt, matrix, full):
    bits = 8 if fmt in ("yuv420p", "nv12") else 10
    rng = np.random.default_rng(matrix)
    h, w = 12, 16
    top = 2 ** bits - 1
    y = rng.integers(0, top + 1, (h, w))
    u, v = (rng.integers(0, top + 1, (h // 2, w // 2)) for _ in range(2))
    got = YuvToRgb(YuvSpec(fmt, matrix, full))(torch.from_numpy(_pack(y, u, v, fmt))[None])[0].numpy()
    np.testing.assert_allclose(got, _reference_rgb(y, u, v, matrix, bits, full), atol=2e-5)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("matrix", [1, 5, 9])
@pytest.mark.parametrize("full", [False, True])
def test_to_yuv_follows_the_standard_formulas(fmt, matrix, full):
    bits = 8 if fmt in ("yuv420p", "nv12") else 10
    kr, kb = KRKB[matrix]
    kg = 1 - kr - kb
    y0, ys, c0, cs = _levels(bits, full)
    rgb = _smooth_rgb(16, 24, seed=matrix).astype(np.float64) / 255
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    yl = kr * r + kg * g + kb * b
    cb, cr = (b - yl) / (2 * (1 - kb)), (r - yl) / (2 * (1 - kr))

    def mean2x2(c):
        return c.reshape(c.shape[0] // 2, 2, c.shape[1] // 2, 2).mean((1, 3))

    top = 2 ** bits - 1
    codes = [np.clip(np.rint(x), 0, top) for x in (y0 + ys * yl, c0 + cs * mean2x2(cb), c0 + cs * mean2x2(cr))]
    want = _pack(*(c.astype(np.int64) for c in codes), fmt)
    got = RgbToYuv(YuvSpec(fmt, matrix, full))(torch.from_numpy(rgb.transpose(2, 0, 1)[None]).float())[0].numpy()
    assert got.dtype == want.dtype and got.shape == want.shape
    step = 64 if fmt == "p010le" else 1  # fp32 against fp64 may round a code the other way at a tie
    assert np.abs(got.astype(np.int64) - want.astype(np.int64)).max() <= step


@pytest.mark.parametrize("fmt", ["yuv420p", "nv12"])
@pytest.mark.parametrize("full", [False, True])
def test_to_yuv_matches_swscale(fmt, full):
    """FFmpeg's own conversion of the same picture (its chroma filter differs a little: within 1 code on average)."""
    import av

    rgb = _smooth_rgb(48, 64)
    theirs = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
        format=fmt, dst_colorspace=1, dst_color_range=2 if full else 1).to_ndarray().astype(int)
    ours = RgbToYuv(YuvSpec(fmt, 1, full))(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)[0]
    d = np.abs(ours.numpy().astype(int) - theirs)
    h = rgb.shape[0]
    assert d[:h].max() <= 1  # luma: the same formula
    assert d.mean() < 1.0


def test_every_layout_holds_the_same_picture():
    rgb = torch.from_numpy(_smooth_rgb(32, 48)).permute(2, 0, 1)[None].float() / 255
    outs = {}
    for fmt in FORMATS:
        spec = YuvSpec(fmt, 1, False)
        outs[fmt] = YuvToRgb(spec)(RgbToYuv(spec)(rgb))
    err = {fmt: (o - rgb).abs().mean().item() * 255 for fmt, o in outs.items()}  # mostly the 4:2:0 chroma
    assert max(err.values()) < 1.5, err
    assert err["yuv420p10le"] < err["yuv420p"] - 0.05, err  # 10 bits hold the picture closer than 8
    assert torch.equal(outs["yuv420p"], outs["nv12"])
    assert torch.equal(outs["yuv420p10le"], outs["p010le"])


def test_unsupported_layouts_and_matrices_are_refused():
    with pytest.raises(ValueError, match="yuv422p; one of yuv420p, nv12, yuv420p10le, p010le"):
        YuvSpec("yuv422p", 1, False)
    with pytest.raises(ValueError, match="matrix 0"):
        YuvSpec("yuv420p", 0, False)


class _Nearest2(nn.Module):
    def forward(self, x):
        return nn.functional.interpolate(x, scale_factor=2, mode="nearest")


@pytest.mark.parametrize("inp,out", [("yuv420p", "yuv420p"), ("yuv420p", "nv12"), ("yuv420p10le", "p010le"),
                                     ("yuv420p10le", "yuv420p10le")])
def test_model_between_the_conversions(inp, out):
    rgb = torch.from_numpy(_smooth_rgb(16, 24)).permute(2, 0, 1)[None].float() / 255
    a, b = YuvSpec(inp, 5, False), YuvSpec(out, 5, False)
    x = RgbToYuv(a)(rgb)
    y = YuvModel(_Nearest2(), a, b)(x)
    assert y.shape == (1, 48, 48) and y.dtype == x.dtype
    assert torch.equal(y, RgbToYuv(b)(_Nearest2()(YuvToRgb(a)(x))))


def test_yuv_through_the_gpu_pipeline_on_the_simulated_device():
    """The YUV graph's tensors in the frame pipeline: 10-bit P010 in and out, several frames in flight."""
    from sr_deploy.runtime.pipeline import CudaDevice, FramePipeline, TensorPlan
    from tests.engine.standin import SimCudart

    spec = YuvSpec("p010le", 9, False)
    model = YuvModel(_Nearest2(), spec, spec)
    inp, out = TensorPlan((1, 24, 24), np.uint16), TensorPlan((1, 48, 48), np.uint16)
    sim = SimCudart()

    def compute(slot, stream):
        def run():
            x = np.frombuffer((ctypes.c_uint16 * (inp.nbytes // 2)).from_address(slot.dev_in), np.uint16)
            y = model(torch.from_numpy(x.reshape(inp.shape).copy())).numpy()
            ctypes.memmove(slot.dev_out, np.ascontiguousarray(y).ctypes.data, y.nbytes)

        sim.enqueue(int(stream), run)

    frames = [RgbToYuv(spec)(torch.from_numpy(_smooth_rgb(16, 24, seed=i)).permute(2, 0, 1)[None].float() / 255).numpy()
              for i in range(5)]
    with FramePipeline(CudaDevice(sim), compute, inp=inp, out=out, depth=3) as pipe:
        got = list(pipe.run(iter(frames)))
    assert sim.max_pending_h2d == 3
    for f, g in zip(frames, got, strict=True):
        np.testing.assert_array_equal(g, model(torch.from_numpy(f)).numpy())
    assert sim.live == 0


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("full", [False, True])
def test_a_model_overshooting_black_and_white_is_clamped_to_the_range(fmt, full):
    """Models overshoot [0, 1] (ringing at edges): RGB is clamped before the matrix, so over-white is white
    and under-black is black, in the range's own codes (limited: 16..235), never past the format's."""
    bits = 8 if fmt in ("yuv420p", "nv12") else 10
    y0, ys, c0, _ = _levels(bits, full)
    shift = 6 if fmt == "p010le" else 0
    grey = torch.tensor([-0.3, 0.0, 1.0, 1.3]).repeat_interleave(2).view(1, 1, 1, 8).expand(1, 3, 2, 8)
    codes = RgbToYuv(YuvSpec(fmt, 1, full))(grey)[0].numpy().astype(np.int64) >> shift
    assert codes[:2].tolist() == [[y0, y0, y0, y0, y0 + ys, y0 + ys, y0 + ys, y0 + ys]] * 2
    assert (codes[2:] == c0).all()  # no colour in grey
    # codes past the format's range decode to the clamped colour, never wrap
    top = 2 ** bits - 1
    x = torch.from_numpy(_pack(np.full((2, 4), top), np.full((1, 2), 0), np.full((1, 2), top), fmt))[None]
    rgb = YuvToRgb(YuvSpec(fmt, 1, full))(x)
    assert rgb.min() >= 0 and rgb.max() <= 1 and rgb[0, 0].max() == 1.0  # saturated red clamps at 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_full_range_chroma_of_pure_blue_and_yellow_stays_in_the_codes(fmt):
    """Full range: pure blue's Cb is the centre plus half the span (255.5 at 8 bits), which rounds past the
    top code; it must clamp to the top (an uint8 would wrap it to 0), and pure yellow's Cb to 0."""
    bits = 8 if fmt in ("yuv420p", "nv12") else 10
    shift = 6 if fmt == "p010le" else 0
    rgb = torch.zeros(1, 3, 2, 4)
    rgb[0, 2, :, :2] = 1.0  # blue
    rgb[0, :2, :, 2:] = 1.0  # yellow
    codes = RgbToYuv(YuvSpec(fmt, 1, True))(rgb)[0].numpy().astype(np.int64) >> shift
    cb = codes[2:].reshape(-1)[:2] if fmt in ("yuv420p", "yuv420p10le") else codes[2:, 0::2].reshape(-1)
    assert cb.tolist() == [2 ** bits - 1, 0]
