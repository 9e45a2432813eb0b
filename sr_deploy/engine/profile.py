"""Optimization profiles: min/opt/max input shapes for a dynamic-shape engine."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sr_deploy.descriptor import ModelDescriptor
from sr_deploy.errors import InputError

DEFAULT_TARGET = (1080, 1920)  # output resolution the default profile is tuned for (H, W)
# the largest input the default profile takes whole where the GPU's memory holds it: a 1080p frame (x4: 8K out),
# so 720p and 1080p sources run whole on an 80 GB GPU instead of in tiles (2.25x the model pixels)
DEFAULT_MAX_INPUT = (1080, 1920)
ASSUMED_MEMORY = 16 << 30  # where the GPU's memory cannot be read: size the default profile for a 16 GB card


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


def activation_bytes_per_pixel(desc: ModelDescriptor) -> int:
    """Peak activation bytes per input pixel, from the descriptor: an upper estimate used to size profiles.

    For a pixel-shuffle SR network with ``channels`` features the peak sits in the upsampler, where a
    conv's input (C channels at the intermediate scale) and its output (C·r² channels there) are both
    alive: 2·C·s² values per input pixel at the last stage, plus the output and the trunk's skip.
    Values are 4 bytes (fp32; half precision halves it, which only leaves margin).

    A graph exported since the descriptor carried ``activation_bytes`` says its own figure: the peak of
    its live tensors at a probe size (export/activations.py), which also fits community architectures
    the formulas below do not describe (SRVGG compact: every conv at the input's size, like light_x4).

    light_x4's every convolution runs at the input's resolution and one pixel shuffle makes the output:
    its peak is a feature layer's input and output there, or the last conv's 3·s² channels and the
    shuffled output, 11x less than the upsampler bound (which tiled its 270x480 video frames on a 1 GiB
    host budget: tiles blended in float on the host, 0.7x the frames/s of whole frames end to end)."""
    if desc.activation_bytes:
        return desc.activation_bytes
    c = int(desc.arch.get("channels", 64)) if desc.arch else 64
    s = desc.model_scale  # a graph that resamples its output still makes the full-scale one first
    if desc.arch.get("arch") == "light":
        values = 2 * max(c, 3 * s * s) + 3 * s * s
    else:
        values = 2 * c * s * s + 3 * s * s + 2 * c
    return 4 * values


def max_for_memory(desc: ModelDescriptor, memory_bytes: int, want_hw: tuple[int, int], want_batch: int,
                   fraction: float = 0.5) -> tuple[int, tuple[int, int]]:
    """The largest (batch, HxW) up to the wanted ones whose activations fit in ``fraction`` of ``memory_bytes``;
    the size shrinks (keeping its aspect, rounded to the size multiple) only once the batch is down to 1.
    Larger frames are tiled within the profile."""
    per_px = activation_bytes_per_pixel(desc)
    budget = fraction * memory_bytes
    h, w = want_hw
    for b in range(want_batch, 0, -1):
        if b * h * w * per_px <= budget:
            return b, (h, w)
    m = max(1, desc.size_multiple)
    k = math.sqrt(budget / (h * w * per_px))
    fit = (max(m, int(h * k) // m * m), max(m, int(w * k) // m * m))
    return 1, fit


def make_profile(desc: ModelDescriptor, *, min_hw: tuple[int, int] | None = None, opt_hw: tuple[int, int] | None = None,
                 max_hw: tuple[int, int] | None = None, target_hw: tuple[int, int] = DEFAULT_TARGET,
                 max_batch: int = 4, memory_bytes: int | None = None) -> Profile:
    """Defaults from the descriptor: opt = the LR size of ``target_hw``, max = a 1080p input
    (DEFAULT_MAX_INPUT, at least twice opt), min = 16 px.

    With ``memory_bytes`` (the GPU's total memory: a fixed figure, so a busy GPU does not change the
    profile, the engine key and with them the engine) and no explicit ``max_hw``, the default maximum
    batch and size are cut to what fits in half of it: an 80 GB GPU takes one 1080p input whole."""
    m = max(1, desc.size_multiple)
    opt = opt_hw or (_round_up(math.ceil(target_hw[0] / desc.scale), m), _round_up(math.ceil(target_hw[1] / desc.scale), m))
    mn = min_hw or (_round_up(16, m), _round_up(16, m))
    mx = max_hw or (_round_up(max(2 * opt[0], DEFAULT_MAX_INPUT[0]), m), _round_up(max(2 * opt[1], DEFAULT_MAX_INPUT[1]), m))
    if max_hw is None:
        max_batch, mx = max_for_memory(desc, memory_bytes or ASSUMED_MEMORY, mx, max_batch)
        opt = (min(opt[0], mx[0]), min(opt[1], mx[1]))
        mn = (min(mn[0], mx[0]), min(mn[1], mx[1]))
    for name, hw in (("min", mn), ("opt", opt), ("max", mx)):
        if hw[0] % m or hw[1] % m:
            raise InputError(f"--{name} {hw[0]}x{hw[1]} is not a multiple of the model's size multiple {m}")
    c = desc.in_channels
    if desc.io == "uint8-nhwc":  # the engine's input is the graph's: uint8 pixels, channels last
        return Profile((1, *mn, c), (1, *opt, c), (max_batch, *mx, c))
    return Profile((1, c, *mn), (1, c, *opt), (max_batch, c, *mx))
