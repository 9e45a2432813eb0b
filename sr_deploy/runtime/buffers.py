"""Buffer planning for the TensorRT runner: sizes per shape, reuse while the shape is unchanged."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BufferPlan:
    input_shape: tuple[int, int, int, int]
    output_shape: tuple[int, int, int, int]
    dtype: np.dtype = np.dtype(np.float32)

    @classmethod
    def for_input(cls, shape: tuple[int, ...], scale: int, out_channels: int) -> "BufferPlan":
        n, c, h, w = shape
        return cls((n, c, h, w), (n, out_channels, h * scale, w * scale))

    @property
    def input_bytes(self) -> int:
        return int(np.prod(self.input_shape)) * self.dtype.itemsize

    @property
    def output_bytes(self) -> int:
        return int(np.prod(self.output_shape)) * self.dtype.itemsize


class BufferPool:
    """Keeps one allocation per role; grows only when a larger plan arrives, never per call."""

    def __init__(self, alloc, free) -> None:
        self._alloc, self._free = alloc, free
        self.capacity: dict[str, int] = {}
        self.handles: dict[str, object] = {}
        self.allocations = 0

    def ensure(self, role: str, nbytes: int):
        if self.capacity.get(role, -1) < nbytes:
            if role in self.handles:
                self._free(self.handles[role])
            self.handles[role] = self._alloc(nbytes)
            self.capacity[role] = nbytes
            self.allocations += 1
        return self.handles[role]

    def release(self) -> None:
        for h in self.handles.values():
            self._free(h)
        self.handles.clear()
        self.capacity.clear()
