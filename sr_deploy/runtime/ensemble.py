"""Self-ensemble at inference (EDSR's "+" models): the 8 flips/rotations of the input, each upscaled and
transformed back, averaged. About +0.1 dB for 8x the compute (EDSR); opt-in (`--ensemble`), never the
default, and reported apart from the plain model's numbers."""

from __future__ import annotations

import numpy as np

from sr_deploy.runtime.base import InputSpec, Runner


def _forward(x: np.ndarray, k: int, hw: tuple[int, int]) -> np.ndarray:
    """Transform ``k`` (0-7) of a batch whose spatial axes are ``hw``: rotate k%4 quarter turns, then
    mirror left-right for k >= 4."""
    y = np.rot90(x, k % 4, axes=hw)
    return np.flip(y, axis=hw[1]) if k >= 4 else y


def _inverse(y: np.ndarray, k: int, hw: tuple[int, int]) -> np.ndarray:
    if k >= 4:
        y = np.flip(y, axis=hw[1])
    return np.rot90(y, -(k % 4), axes=hw)


class EnsembleRunner(Runner):
    """Wraps a runner; every call runs it 8 times. Rotations swap height and width, so a graph of one fixed
    size runs only the four transforms that keep its shape unless it is square."""

    def __init__(self, inner: Runner) -> None:
        super().__init__(inner.descriptor, inner.precision)
        self.inner = inner
        self.backend = inner.backend
        self.work_factor = inner.work_factor

    def bytes_per_pixel(self) -> float:
        return self.inner.bytes_per_pixel()

    def memory_budget(self) -> int:
        return self.inner.memory_budget()

    def input_spec(self) -> InputSpec:
        return self.inner.input_spec()

    def describe(self) -> str:
        return f"{self.inner.describe()}, x8 self-ensemble"

    def _activate(self) -> None:
        self.inner.activate()

    def _deactivate(self) -> None:
        self.inner.deactivate()

    def _transforms(self, h: int, w: int) -> list[int]:
        fixed = self.descriptor.fixed_hw
        return list(range(8)) if not fixed or h == w else [0, 2, 4, 6]  # 180° turns and mirrors keep HxW

    def _fitted(self, batch, run, hdim):  # the inner runner pads and splits for its own graph
        return run(batch)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        ks = self._transforms(batch.shape[2], batch.shape[3])
        acc = None
        for k in ks:
            y = _inverse(self.inner.infer(np.ascontiguousarray(_forward(batch, k, (2, 3)))), k, (2, 3))
            acc = y.astype(np.float32) if acc is None else acc + y
        return acc / len(ks)

    def _infer_u8(self, batch: np.ndarray) -> np.ndarray:
        # each pass comes back as bytes (uint8 graphs stay fast); the mean is taken in float, rounded once
        ks = self._transforms(batch.shape[1], batch.shape[2])
        acc = None
        for k in ks:
            y = _inverse(self.inner.infer_u8(np.ascontiguousarray(_forward(batch, k, (1, 2)))), k, (1, 2))
            acc = y.astype(np.float32) if acc is None else acc + y
        return np.clip(np.rint(acc / len(ks)), 0, 255).astype(np.uint8)
