"""Quality metrics as the SR literature computes them.

Y channel of ITU-R BT.601 in MATLAB's ``rgb2ycbcr`` convention (studio range
16-235), a border of ``scale`` pixels cropped, PSNR on 8-bit values, and SSIM
as defined by Wang et al. 2004 (11x11 Gaussian window, sigma 1.5, K1=0.01,
K2=0.03, population statistics). That SSIM definition gives about 0.810 for
bicubic on Set5 x4, the value other SR toolboxes report; the SRGAN paper's
0.8211 came from a different computation and is not what this reproduces.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """RGB uint8 (or float in [0, 255]) HxWx3 → Y in [16, 235] as float64 (MATLAB rgb2ycbcr)."""
    x = img.astype(np.float64)
    if x.ndim == 2:
        x = np.stack([x] * 3, axis=-1)
    return 16.0 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0


def shave(img: np.ndarray, border: int) -> np.ndarray:
    return img[border:-border, border:-border] if border > 0 else img


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0:
        return float("inf")
    return 10.0 * np.log10(data_range**2 / mse)


SSIM_SIGMA = 1.5
# the side of scikit-image's Gaussian window for that sigma (2 * int(3.5 * sigma + 0.5) + 1): smaller images
# have no SSIM
SSIM_WINDOW = 2 * int(3.5 * SSIM_SIGMA + 0.5) + 1


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Wang et al. 2004 SSIM on a single-channel image (scikit-image's implementation)."""
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(
            a.astype(np.float64),
            b.astype(np.float64),
            data_range=data_range,
            gaussian_weights=True,
            sigma=SSIM_SIGMA,
            use_sample_covariance=False,
        )
    )


def _y_planes(sr: np.ndarray, hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    return shave(rgb_to_y(sr), scale), shave(rgb_to_y(hr), scale)


def y_psnr_ssim(sr: np.ndarray, hr: np.ndarray, scale: int) -> tuple[float, float]:
    """Y-channel PSNR and SSIM of two RGB uint8 images, ``scale`` border pixels shaved."""
    ys, yh = _y_planes(sr, hr, scale)
    return psnr(ys, yh), ssim(ys, yh)


def _laplacian_energy(y: np.ndarray) -> float:
    import cv2

    return float(np.mean(np.abs(cv2.Laplacian(y.astype(np.float32), cv2.CV_32F))))


def detail_ratio(sr: np.ndarray, hr: np.ndarray, scale: int) -> float:
    """High-frequency energy of the result relative to the ground truth: mean |Laplacian| of SR's Y over
    HR's (border shaved). 1.0 restores as much fine detail as HR holds; bicubic and PSNR-trained models
    stay well below (they average textures away), GAN-trained ones come closer. A sharpness proxy to read
    beside PSNR and the montage, not a fidelity score: invented texture counts as detail too."""
    ys, yh = _y_planes(sr, hr, scale)
    return _laplacian_energy(ys) / max(_laplacian_energy(yh), 1e-12)


def y_scores(sr: np.ndarray, hr: np.ndarray, scale: int) -> tuple[float, float, float]:
    """(Y-PSNR, Y-SSIM, detail ratio) from one Y conversion of each image."""
    ys, yh = _y_planes(sr, hr, scale)
    return psnr(ys, yh), ssim(ys, yh), _laplacian_energy(ys) / max(_laplacian_energy(yh), 1e-12)


def to_rgb(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return np.stack([img] * 3, axis=-1)
    return img[..., :3]


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def bicubic_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize RGB uint8 to (width, height) with PIL's antialiased bicubic (a=-0.5), close to MATLAB imresize."""
    return np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC))


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    h, w = hr.shape[:2]
    return bicubic_resize(hr, (w // scale, h // scale))


def quantize(x: np.ndarray, out_max: float = 255.0, dtype=np.uint8) -> np.ndarray:
    """Float in [0, 1] → integer pixels, rounded and clipped like an image writer."""
    return np.clip(np.rint(x * out_max), 0, out_max).astype(dtype)
