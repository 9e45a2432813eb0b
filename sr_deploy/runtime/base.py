"""The Runner contract every backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from sr_deploy.descriptor import ModelDescriptor


@dataclass(frozen=True)
class InputSpec:
    """What a runner accepts: NCHW float32 in [0, 1] within these bounds."""

    channels: int
    scale: int
    size_multiple: int = 1
    min_hw: tuple[int, int] = (1, 1)
    max_hw: tuple[int, int] | None = None  # None: any size (memory permitting)
    max_batch: int | None = None


class Runner(ABC):
    """A backend that upscales NCHW float32 batches.

    Use as a context manager (``with runner: runner.infer(x)``) or call
    ``activate()`` / ``deactivate()``; ``infer`` returns NCHW float32
    clamped to the descriptor's value range.
    """

    backend: str = ""

    def __init__(self, descriptor: ModelDescriptor, precision: str = "fp32") -> None:
        self.descriptor = descriptor
        self.precision = precision
        self.active = False

    @property
    def scale(self) -> int:
        return self.descriptor.scale

    def activate(self) -> None:
        if not self.active:
            self._activate()
            self.active = True

    def deactivate(self) -> None:
        if self.active:
            self._deactivate()
            self.active = False

    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if not self.active:
            self.activate()
        if batch.ndim != 4 or batch.shape[1] != self.descriptor.in_channels:
            raise ValueError(f"expected an NCHW batch with {self.descriptor.in_channels} channels, got {batch.shape}")
        out = self._infer(np.ascontiguousarray(batch, dtype=np.float32))
        lo, hi = self.descriptor.value_range
        return np.clip(out, lo, hi, out=out)

    def input_spec(self) -> InputSpec:
        return InputSpec(channels=self.descriptor.in_channels, scale=self.descriptor.scale,
                         size_multiple=self.descriptor.size_multiple)

    def describe(self) -> str:
        return f"{self.backend} {self.precision}"

    @abstractmethod
    def _activate(self) -> None: ...

    def _deactivate(self) -> None:
        pass

    @abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray: ...
