"""Optimization profiles: min/opt/max input shapes for a dynamic-shape engine."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sr_deploy.descriptor import ModelDescriptor
from sr_deploy.errors import InputError

DEFAULT_TARGET = (1080, 1920)  # output resolution the default profile is tuned for (H, W)


def parse_hw(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise InputError(f"shape {text!r} is not HxW (for example 270x480)")
    return int(m.group(1)), int(m.group(2))


def _round_up(v: int, m: int) -> int:
    return int(math.ceil(v / m) * m)


@dataclass(frozen=True)
class Profile:
    """Shapes are NCHW of the engine's input."""

    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int, int, int, int]

    def __post_init__(self) -> None:
        for i in range(4):
            if not self.min[i] <= self.opt[i] <= self.max[i]:
                raise InputError(f"profile must satisfy min <= opt <= max in every dimension, got "
                                 f"{self.fmt(self.min)} / {self.fmt(self.opt)} / {self.fmt(self.max)}")

    @staticmethod
    def fmt(shape) -> str:
        return "x".join(str(v) for v in shape)

    def contains(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == 4 and all(lo <= v <= hi for lo, v, hi in zip(self.min, shape, self.max))

    def check(self, shape: tuple[int, ...]) -> None:
        if not self.contains(shape):
            raise InputError(f"input shape {self.fmt(shape)} is outside the engine's profile "
                             f"(min {self.fmt(self.min)}, max {self.fmt(self.max)}): use --tile, or rebuild "
                             f"with a larger --max")

    def to_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, d: dict) -> "Profile":
        return cls(tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]))


def make_profile(desc: ModelDescriptor, *, min_hw: tuple[int, int] | None = None, opt_hw: tuple[int, int] | None = None,
                 max_hw: tuple[int, int] | None = None, target_hw: tuple[int, int] = DEFAULT_TARGET,
                 max_batch: int = 4) -> Profile:
    """Defaults from the descriptor: opt = the LR size of ``target_hw``, max = twice that, min = 16 px."""
    m = max(1, desc.size_multiple)
    opt = opt_hw or (_round_up(math.ceil(target_hw[0] / desc.scale), m), _round_up(math.ceil(target_hw[1] / desc.scale), m))
    mn = min_hw or (_round_up(16, m), _round_up(16, m))
    mx = max_hw or (2 * opt[0], 2 * opt[1])
    for name, hw in (("min", mn), ("opt", opt), ("max", mx)):
        if hw[0] % m or hw[1] % m:
            raise InputError(f"--{name} {hw[0]}x{hw[1]} is not a multiple of the model's size multiple {m}")
    c = desc.in_channels
    if desc.io == "uint8-nhwc":  # the engine's input is the graph's: uint8 pixels, channels last
        return Profile((1, *mn, c), (1, *opt, c), (max_batch, *mx, c))
    return Profile((1, c, *mn), (1, c, *opt), (max_batch, c, *mx))
