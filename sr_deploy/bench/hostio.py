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
