"""The SR evaluation protocol shared by validation and benchmarks.

HR cropped to a multiple of the scale, LR by antialiased bicubic
downscaling, Y-channel PSNR/SSIM with a border of ``scale`` pixels shaved.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from sr_deploy.errors import InputError
from sr_deploy.metrics import SSIM_WINDOW, bicubic_resize, mod_crop, y_scores
from sr_deploy.metrics import make_lr as bicubic_lr


@dataclass(frozen=True)
class EvalPair:
    name: str
    hr: np.ndarray  # RGB uint8, mod-cropped
    lr: np.ndarray  # RGB uint8


@dataclass(frozen=True)
class QualityResult:
    psnr_y: float
    ssim_y: float
    images: int
    detail: float = float("nan")  # mean metrics.detail_ratio: 1.0 = as much fine detail as HR


def load_eval_set(folder: str | Path, scale: int, say: Callable[[str], None] | None = None, *,
                  make_lr: Callable[[np.ndarray, int, int], np.ndarray] | None = None) -> list[EvalPair]:
    """Read every image of ``folder`` as an (HR, LR) pair; images too small to score at ``scale`` and
    unreadable ones are skipped, named through ``say`` (the set's image count shows that it is smaller).
    ``make_lr(hr, scale, index)`` makes the LR (default: a bicubic downscale)."""
    from sr_deploy.imagefiles import list_images, read_rgb

    # SSIM's window must fit once the border is shaved; images are cut to a multiple of the scale first
    least = -(-(2 * scale + SSIM_WINDOW) // scale) * scale
    pairs = []
    for f in list_images([folder]):
        try:
            img = read_rgb(f)
        except InputError as exc:
            if say:
                say(f"skipped {exc}")
            continue
        hr = mod_crop(img, scale)
        if min(hr.shape[:2]) < least:
            if say:
                say(f"skipped {f}: {img.shape[1]}x{img.shape[0]} is too small to score at x{scale} "
                    f"(at least {least}x{least})")
            continue
        lr = make_lr(hr, scale, len(pairs)) if make_lr else bicubic_lr(hr, scale)
        pairs.append(EvalPair(f.stem, hr, lr))
    if not pairs:
        raise InputError(f"{folder}: no images large enough to evaluate at x{scale}")
    return pairs


HELD_OUT_SEED = 777  # `real` or `degraded` alone: the first held-out draw of train/README's srresnet_x4_real protocol


def lr_maker(spec: str | None) -> tuple[str, Callable[[np.ndarray, int, int], np.ndarray] | None]:
    """(label, ``make_lr`` for load_eval_set) from an evaluation's degradation: ``bicubic`` (None: the clean
    downscale), ``real[:SEED]``, Real-ESRGAN's second-order degradation (blur, resize, noise, JPEG, twice), or
    ``degraded[:SEED]``, the one-pass mix (blur, downscale, light noise, light JPEG, each only sometimes;
    degradations.py); one draw per image from ``[SEED, image index]``, so a set scores the same on every run."""
    spec = (spec or "bicubic").strip()
    if spec == "bicubic":
        return "bicubic", None
    from sr_deploy.degradations import EVAL_KINDS, degraded_eval_lr

    kind, _, seed = spec.partition(":")
    if kind in EVAL_KINDS and (not seed or (seed.isdigit() and seed.isascii() and len(seed) <= 18)):
        n = int(seed) if seed else HELD_OUT_SEED

        def make(hr: np.ndarray, scale: int, index: int) -> np.ndarray:
            return degraded_eval_lr(hr, scale, index, seed=n, kind=kind)

        return f"{kind}:{n}", make
    raise InputError("--degrade must be bicubic, real[:SEED] or degraded[:SEED] (SEED a whole number), "
                     f"got {spec!r}")


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    return bicubic_resize(lr, (lr.shape[1] * scale, lr.shape[0] * scale))


def evaluate(pairs: list[EvalPair], scale: int, upscale: Callable[[np.ndarray], np.ndarray]) -> QualityResult:
    """Mean Y-PSNR/SSIM (and detail ratio) of ``upscale(lr)`` against HR over ``pairs``."""
    scores = [y_scores(upscale(p.lr), p.hr, scale) for p in pairs]
    return QualityResult(
        psnr_y=float(np.mean([s[0] for s in scores])),
        ssim_y=float(np.mean([s[1] for s in scores])),
        images=len(scores),
        detail=float(np.mean([s[2] for s in scores])),
    )


def torch_upscaler(model, *, channels_last: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a torch generator as uint8 RGB → uint8 RGB, rounding like an 8-bit image writer."""
    import torch

    def run(lr: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(lr.transpose(2, 0, 1).copy()).float().div(255.0).unsqueeze(0)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            y = model(x)[0].clamp(0, 1).mul(255.0).round().byte()
        return y.permute(1, 2, 0).contiguous().numpy()

    return run
