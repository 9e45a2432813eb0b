"""Degradations that make a low-resolution input from an HR image: the DIV2K "unknown" style one and
Real-ESRGAN's second order. Used by training (train/data.py) and by evaluation (quality.lr_maker, so that
`bench --degrade` scores models for real footage the way training validates them); numpy and OpenCV only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sr_deploy.metrics import make_lr


@dataclass(frozen=True)
class Degradation:
    """Real-world degradations (DIV2K "unknown" style): blur → downscale → noise → JPEG, each with a probability."""

    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.2, 2.0)
    noise_prob: float = 0.5
    noise_sigma: tuple[float, float] = (1.0, 8.0)  # in 8-bit levels
    jpeg_prob: float = 0.5
    jpeg_quality: tuple[int, int] = (60, 95)

    def apply(self, hr: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
        import cv2

        img = hr
        if rng.random() < self.blur_prob:
            img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(*self.blur_sigma)), borderType=cv2.BORDER_REFLECT)
        lr = make_lr(np.ascontiguousarray(img), scale)
        if rng.random() < self.noise_prob:
            noisy = lr.astype(np.float32) + rng.normal(0.0, rng.uniform(*self.noise_sigma), lr.shape)
            lr = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        if rng.random() < self.jpeg_prob:
            lr = _jpeg(lr, rng, self.jpeg_quality)
        return np.ascontiguousarray(lr)


@dataclass(frozen=True)
class SecondOrderDegradation:
    """Real-ESRGAN's high-order degradation (Wang et al. 2021): two rounds of blur → resize → noise → JPEG,
    then a resize to the LR size with a last JPEG, every parameter drawn at random.

    The ranges follow Real-ESRGAN's x4plus options, narrowed for a 1.5M-parameter generator (noise to 20
    levels and JPEG from 40, isotropic/anisotropic Gaussian kernels only: no sinc or plateau kernels);
    ``clean_prob`` of the samples stay clean bicubic downscales so that clean inputs keep their quality, and
    ``mild_prob`` of them take the one-pass degradation above instead (blur, downscale, light noise, light JPEG,
    each only sometimes), so that lightly degraded inputs are not smoothed as if they were heavily degraded.
    Written with OpenCV by hand because Real-ESRGAN's pipeline (basicsr) needs torchvision and a GPU
    batch queue; these few operations are all it does per sample.
    """

    clean_prob: float = 0.2
    mild_prob: float = 0.0
    blur_sigma: tuple[tuple[float, float], tuple[float, float]] = ((0.2, 3.0), (0.2, 1.5))
    blur_prob: tuple[float, float] = (1.0, 0.8)
    resize_range: tuple[tuple[float, float], tuple[float, float]] = ((0.15, 1.5), (0.3, 1.2))
    resize_kind_prob: tuple[tuple[float, float, float], tuple[float, float, float]] = ((0.2, 0.7, 0.1), (0.3, 0.4, 0.3))
    gaussian_noise_prob: float = 0.5
    noise_sigma: tuple[tuple[float, float], tuple[float, float]] = ((1.0, 20.0), (1.0, 15.0))  # 8-bit levels
    poisson_scale: tuple[tuple[float, float], tuple[float, float]] = ((0.05, 2.0), (0.05, 1.5))
    gray_noise_prob: float = 0.4
    jpeg_quality: tuple[int, int] = (40, 95)

    _INTERP = (1, 2, 3)  # cv2.INTER_LINEAR, INTER_CUBIC, INTER_AREA, chosen at random as Real-ESRGAN does

    def apply(self, hr: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
        share = rng.random()  # one draw picks clean, mild or second order (mild_prob 0: the stream as before it)
        if share < self.clean_prob:
            return make_lr(hr, scale)
        if share < self.clean_prob + self.mild_prob:
            return Degradation().apply(hr, scale, rng)
        import cv2

        h, w = hr.shape[:2]
        img = hr.astype(np.float32)
        for order in (0, 1):
            if rng.random() < self.blur_prob[order]:
                img = _gaussian_blur(img, self.blur_sigma[order], rng)
            kind = rng.choice(3, p=self.resize_kind_prob[order])
            lo, hi = self.resize_range[order]
            f = float(rng.uniform(1.0, hi)) if kind == 0 else float(rng.uniform(lo, 1.0)) if kind == 1 else 1.0
            base_h, base_w = (h, w) if order == 0 else (h / scale, w / scale)
            size = (max(2, int(round(base_w * f))), max(2, int(round(base_h * f))))
            if size != (img.shape[1], img.shape[0]):
                img = cv2.resize(img, size, interpolation=int(rng.choice(self._INTERP)))
            img = self._noise(img, order, rng)
            img = _jpeg(np.clip(np.rint(img), 0, 255).astype(np.uint8), rng, self.jpeg_quality).astype(np.float32)
        img = cv2.resize(img, (w // scale, h // scale), interpolation=int(rng.choice(self._INTERP)))
        lr = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(_jpeg(lr, rng, self.jpeg_quality))

    def _noise(self, img: np.ndarray, order: int, rng: np.random.Generator) -> np.ndarray:
        gray = rng.random() < self.gray_noise_prob
        shape = img.shape[:2] + ((1,) if gray else (img.shape[2],))
        if rng.random() < self.gaussian_noise_prob:
            noise = rng.normal(0.0, rng.uniform(*self.noise_sigma[order]), shape)
        else:
            # Poisson (shot) noise at 8 bits, scaled: Real-ESRGAN's random_add_poisson_noise
            base = np.clip(img, 0, 255) if not gray else np.clip(img, 0, 255).mean(axis=2, keepdims=True)
            noise = (rng.poisson(base) - base) * rng.uniform(*self.poisson_scale[order])
        return img + noise.astype(np.float32)


def _gaussian_blur(img: np.ndarray, sigma_range: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """An isotropic or anisotropic (rotated) Gaussian kernel, as in Real-ESRGAN's random_mixed_kernels."""
    import cv2

    sx = float(rng.uniform(*sigma_range))
    sy = sx if rng.random() < 0.5 else float(rng.uniform(*sigma_range))
    theta = float(rng.uniform(0, np.pi))
    k = 2 * int(rng.integers(3, 11)) + 1  # 7..21 taps, Real-ESRGAN's kernel_range
    r = np.arange(k, dtype=np.float64) - k // 2
    xx, yy = np.meshgrid(r, r)
    c, s = np.cos(theta), np.sin(theta)
    u, v = c * xx + s * yy, -s * xx + c * yy
    kern = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
    return cv2.filter2D(img, -1, (kern / kern.sum()).astype(np.float32), borderType=cv2.BORDER_REFLECT)


def _jpeg(img: np.ndarray, rng: np.random.Generator, quality: tuple[int, int]) -> np.ndarray:
    import cv2

    q = int(rng.integers(quality[0], quality[1] + 1))
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, q])
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


DEGRADATIONS = {"bicubic": None, "degraded": Degradation, "real": SecondOrderDegradation}


def degradation_for(name: str, clean_prob: float = 0.2,
                    mild_prob: float = 0.0) -> Degradation | SecondOrderDegradation | None:
    """The training degradation a config names (None: clean bicubic); ``clean_prob`` and ``mild_prob`` for the
    second-order one."""
    kind = DEGRADATIONS[name]
    if kind is SecondOrderDegradation:
        return SecondOrderDegradation(clean_prob=clean_prob, mild_prob=mild_prob)
    return kind() if kind else None


VAL_SEED = 20261206  # the validation draw; the held-out checks (bench --degrade real:SEED) use others


EVAL_KINDS = ("real", "degraded")  # what bench/build-engine/release --degrade KIND[:SEED] accept (quality.lr_maker)


def degraded_eval_lr(hr: np.ndarray, scale: int, index: int, seed: int = VAL_SEED, kind: str = "real") -> np.ndarray:
    """A fixed degradation of an evaluation image, the same on every call for one (kind, seed, image index):
    ``real`` the second order (no clean draws), ``degraded`` the one-pass mix (each step only sometimes, so
    some images come lightly degraded: the inputs a model for heavy degradations must not over-smooth)."""
    rng = np.random.default_rng([seed, index])
    if kind == "degraded":
        return Degradation().apply(hr, scale, rng)
    if kind != "real":
        raise ValueError(f"unknown evaluation degradation {kind!r}")
    return SecondOrderDegradation(clean_prob=0.0).apply(hr, scale, rng)
