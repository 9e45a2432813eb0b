"""Host-side cost of moving one frame through a runner, model excluded.

Times what the host does around the model for one frame of ``lr_hw`` input:
the float path (uint8 → float32 /255 → NCHW, then clamp → x255 → round →
uint8 → NHWC) against the pixel path (uint8 NHWC bytes straight in and out,
the conversions inside the graph). The model's own work is replaced by a
buffer of the output's size, so only the host's share is measured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class HostIO:
    lr_hw: tuple[int, int]
    scale: int
    float_ms: float
    pixels_ms: float
    float_mb: float  # bytes across the runner boundary, in + out
    pixels_mb: float


def _median_ms(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1000.0 * float(np.median(ts))


def measure_host_io(lr_hw: tuple[int, int] = (270, 480), scale: int = 4, repeats: int = 15) -> HostIO:
    from sr_deploy.metrics import quantize

    h, w = lr_hw
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    model_float = rng.random((1, 3, h * scale, w * scale), dtype=np.float32)
    model_u8 = rng.integers(0, 256, (1, h * scale, w * scale, 3), dtype=np.uint8)

    def float_path():
        x = np.ascontiguousarray((frame.astype(np.float32) / 255.0).transpose(2, 0, 1)[None])
        y = model_float.copy()  # a runner hands back a fresh array
        np.clip(y, 0.0, 1.0, out=y)
        return x, quantize(y[0].transpose(1, 2, 0))

    def pixel_path():
        x = np.ascontiguousarray(frame[None])
        return x, model_u8.copy()[0]

    return HostIO(lr_hw, scale, _median_ms(float_path, repeats), _median_ms(pixel_path, repeats),
                  (frame.size * 4 + model_float.nbytes) / 1e6, (frame.size + model_u8.nbytes) / 1e6)


@dataclass(frozen=True)
class ColourIO:
    lr_hw: tuple[int, int]
    scale: int
    bits: int
    rgb_ms: float  # host ms per frame: decoder's YUV → RGB array, RGB array → encoder's YUV frame
    yuv_ms: float  # the YUV graph's: the decoder's arrays as they are, the output's into a frame
    rgb_mb: float  # bytes across the runner boundary (the bus, on a GPU), in + out
    yuv_mb: float


def measure_colour_io(lr_hw: tuple[int, int] = (270, 480), scale: int = 4, bits: int = 8,
                      repeats: int = 9) -> ColourIO:
    """Host cost of the colour conversions per frame, RGB path against YUV graph (export/yuv.py), model
    excluded (its output replaced by an array of the output's size). 8-bit: rgb24 ↔ yuv420p through swscale
    (BT.709, limited). 10-bit: the RGB path's rgb48le through the float graph (x/65535 in, rounded to
    uint16 out) against yuv420p10le as it is."""
    import av

    h, w = lr_hw[0] - lr_hw[0] % 2, lr_hw[1] - lr_hw[1] % 2  # 4:2:0 frames have even sides
    oh, ow = h * scale, w * scale
    rng = np.random.default_rng(0)
    fmt, rgb_fmt = ("yuv420p", "rgb24") if bits == 8 else ("yuv420p10le", "rgb48le")
    dtype = np.uint8 if bits == 8 else np.uint16
    top = (1 << bits) - 1
    src = av.VideoFrame.from_ndarray(rng.integers(0, top + 1, (h * 3 // 2, w), dtype=dtype), format=fmt)
    out_yuv = rng.integers(0, top + 1, (oh * 3 // 2, ow), dtype=dtype)
    if bits == 8:
        out_rgb = rng.integers(0, 256, (oh, ow, 3), dtype=np.uint8)
    else:
        out_rgb = rng.random((oh, ow, 3), dtype=np.float32)
    colours = {"src_colorspace": 1, "src_color_range": 1}
    from av.video.reformatter import VideoReformatter

    dec, enc = VideoReformatter(), VideoReformatter()  # kept across frames, as media/video.py keeps them

    def rgb_path():
        x = dec.reformat(src, format=rgb_fmt, **colours).to_ndarray()
        if bits > 8:  # into the float graph, and its float output rounded to 16 bits
            x = x.astype(np.float32) * (1 / 65535)
            y = np.clip(np.rint(out_rgb * 65535.0), 0, 65535).astype(np.uint16)
        else:
            y = out_rgb.copy()  # a runner hands back a fresh array
        return x, enc.reformat(av.VideoFrame.from_ndarray(y, format=rgb_fmt), format=fmt, dst_colorspace=1,
                               dst_color_range=1)

    def yuv_path():
        return src.to_ndarray(), av.VideoFrame.from_ndarray(out_yuv.copy(), format=fmt)

    px_in, px_out = h * w, oh * ow
    rgb_bytes = (px_in * 3 * (4 if bits > 8 else 1)) + px_out * 3 * (4 if bits > 8 else 1)
    yuv_bytes = (px_in + px_out) * 1.5 * (2 if bits > 8 else 1)
    return ColourIO(lr_hw, scale, bits, _median_ms(rgb_path, repeats), _median_ms(yuv_path, repeats),
                    rgb_bytes / 1e6, yuv_bytes / 1e6)
