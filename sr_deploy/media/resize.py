"""The run's final size (``--outscale``): the model's output resized to another multiple of the input than
the model's own scale, e.g. 2 with a x4 model (1080p to 4K, where a x4 output would be 8K) or 3 for 720p
to 4K.

Where the factor is a whole number below the model's scale (3, 2 or 1 with a x4 model), the runner
area-resizes inside its graph (export/pixels.graph_outscale and resample_output), on the GPU where it runs
there, and the output comes back at the final size. Otherwise the model runs at its own scale and OpenCV
resizes its output: by area averaging when shrinking
(each output pixel the mean of what it covers; a fixed-support kernel such as OpenCV's Lanczos aliases
when shrinking) and by Lanczos (8x8) when enlarging past the model's scale. The size is rounded half up;
a video's is then made even where its pixel format subsamples chroma (media/video.encodable_size).
"""

from __future__ import annotations

import math

import numpy as np

from sr_deploy.errors import InputError


def check_outscale(outscale: float | None) -> None:
    if outscale is not None and not (math.isfinite(outscale) and outscale > 0):
        raise InputError(f"--outscale must be a positive number (2: twice the input's size), got {outscale:g}")


def final_size(width: int, height: int, *, scale: int, outscale: float | None,
               multiple: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    """(width, height) of the output of a ``width`` x ``height`` input; with ``outscale``, each side rounded
    half up to a multiple of ``multiple`` (a video's chroma subsampling)."""
    if outscale is None:
        return width * scale, height * scale
    return tuple(max(m, int(n * outscale / m + 0.5) * m) for n, m in zip((width, height), multiple))


def label(scale: int, outscale: float | None) -> str:
    """The factor default output names carry: "4", or the --outscale ("2", "1.5")."""
    return f"{outscale:g}" if outscale is not None else str(scale)


def resize_to(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img`` (H x W, or H x W x C with C ≤ 4; uint8 or uint16) at ``size`` = (width, height); itself when
    it has that size already. Keeps the dtype and a trailing channel axis of one."""
    import cv2

    if (img.shape[1], img.shape[0]) == tuple(size):
        return img
    shrink = size[0] * size[1] < img.shape[0] * img.shape[1]
    out = cv2.resize(img, tuple(size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4)
    return out[..., None] if img.ndim == 3 and out.ndim == 2 else out
