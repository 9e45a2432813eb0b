"""Training data: random HR crops with flips/rotations, LR made by bicubic downscaling.

Every sample is a pure function of (seed, sample index), so a resumed run
sees exactly the batches the interrupted run would have seen, whatever the
number of workers or processes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from sr_deploy.degradations import Degradation, SecondOrderDegradation
from sr_deploy.errors import InputError
from sr_deploy.imagefiles import list_images, read_rgb  # noqa: F401  (re-exported)
from sr_deploy.metrics import bicubic_resize, make_lr

log = logging.getLogger(__name__)


class CropDataset(Dataset):
    """Random (LR, HR) crop pairs from a folder of HR images, held in memory."""

    def __init__(self, folders: list[Path] | list[str], *, scale: int, hr_patch: int, seed: int = 0,
                 degradation: Degradation | SecondOrderDegradation | None = None, scale_aug: float = 1.0) -> None:
        if hr_patch % scale:
            raise InputError(f"HR patch {hr_patch} is not a multiple of the scale {scale}")
        files = list_images(folders)
        if not files:
            raise InputError(f"no images (png/jpg/bmp/webp) under {', '.join(map(str, folders))}")
        self.images: list[np.ndarray] = []
        skipped = 0
        for f in files:
            try:
                img = read_rgb(f)
            except Exception as exc:  # noqa: BLE001 - report and skip any unreadable file
                log.warning("skipping unreadable image %s (%s)", f, exc)
                skipped += 1
                continue
            if min(img.shape[:2]) < hr_patch:
                skipped += 1
                continue
            self.images.append(img)
        if not self.images:
            raise InputError(
                f"all {len(files)} images under {', '.join(map(str, folders))} are smaller than the {hr_patch}px crop"
            )
        self.skipped = skipped
        self.scale, self.hr_patch, self.seed, self.degradation = scale, hr_patch, seed, degradation
        self.scale_aug = scale_aug
        # Sample images in proportion to their area so that large images are not under-used.
        areas = np.array([im.shape[0] * im.shape[1] for im in self.images], dtype=np.float64)
        self.cdf = np.cumsum(areas / areas.sum())

    def __len__(self) -> int:
        return 1 << 62

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])
        img = self.images[min(int(np.searchsorted(self.cdf, rng.random())), len(self.images) - 1)]
        p = self.hr_patch
        # VDSR's scale augmentation: the HR image as if downscaled by f in [scale_aug, 1]; cropping the
        # p/f region and resizing only it to p is the same crop at a fraction of the cost. No draw is made
        # when it is off, so runs without it keep their exact data sequence.
        src = p
        if self.scale_aug < 1.0:
            src = min(int(round(p / rng.uniform(self.scale_aug, 1.0))), img.shape[0], img.shape[1])
        y = int(rng.integers(0, img.shape[0] - src + 1))
        x = int(rng.integers(0, img.shape[1] - src + 1))
        hr = img[y : y + src, x : x + src]
        if src != p:
            hr = bicubic_resize(np.ascontiguousarray(hr), (p, p))
        if rng.random() < 0.5:
            hr = hr[:, ::-1]
        hr = np.ascontiguousarray(np.rot90(hr, int(rng.integers(0, 4))))
        lr = self.degradation.apply(hr, self.scale, rng) if self.degradation else make_lr(hr, self.scale)
        return _to_tensor(lr), _to_tensor(hr)


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)


class StepSampler(Sampler[list[int]]):
    """Yields the sample indices of each step's batch, from ``start_step`` on.

    Under DDP each rank takes its own disjoint slice of the global batch.
    """

    def __init__(self, *, batch_size: int, start_step: int, total_steps: int, rank: int = 0, world: int = 1) -> None:
        self.batch_size, self.start, self.total, self.rank, self.world = batch_size, start_step, total_steps, rank, world

    def __iter__(self):
        for step in range(self.start, self.total):
            base = (step * self.world + self.rank) * self.batch_size
            yield list(range(base, base + self.batch_size))

    def __len__(self) -> int:
        return max(0, self.total - self.start)
