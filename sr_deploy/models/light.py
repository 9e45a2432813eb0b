"""A light real-time CNN: two convolutions and sub-pixel x2 steps (about 0.34M parameters at x4).

Inputs are standardised with a per-channel mean/std during training; at
export the standardisation is folded into the first and last convolutions,
so the deployed graph takes and returns plain [0, 1] RGB.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

# Per-channel statistics of the 291-image training set (RGB, [0, 1]).
DEFAULT_MEAN = (0.4488, 0.4371, 0.4040)
DEFAULT_STD = (0.2845, 0.2701, 0.2920)


@dataclass(frozen=True)
class LightSRConfig:
    scale: int = 4
    channels: int = 64
    in_channels: int = 3
    mean: tuple[float, float, float] = DEFAULT_MEAN
    std: tuple[float, float, float] = DEFAULT_STD
    arch: str = "light"

    def __post_init__(self) -> None:
        if self.scale not in (2, 4):
            raise ValueError(f"the light model upscales x2 or x4, got {self.scale}")
        object.__setattr__(self, "mean", tuple(self.mean))
        object.__setattr__(self, "std", tuple(self.std))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


class LightSR(nn.Module):
    def __init__(self, config: LightSRConfig | None = None, **kwargs) -> None:
        super().__init__()
        self.config = config or LightSRConfig(**kwargs)
        c, ch = self.config.channels, self.config.in_channels
        self.register_buffer("mean", torch.tensor(self.config.mean).view(1, ch, 1, 1))
        self.register_buffer("std", torch.tensor(self.config.std).view(1, ch, 1, 1))
        self.standardise = True
        # reflect padding on the first conv keeps the standardisation fold exact at the borders
        # (zero padding of standardised input would be "mean" padding of raw input)
        self.body = nn.Sequential(nn.Conv2d(ch, c, 5, padding=2, padding_mode="reflect"), nn.ReLU(inplace=True),
                                  nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True))
        ups: list[nn.Module] = []
        for _ in range(int(math.log2(self.config.scale))):
            ups += [nn.Conv2d(c, c * 4, 3, padding=1), nn.PixelShuffle(2), nn.ReLU(inplace=True)]
        self.upsample = nn.Sequential(*ups)
        self.tail = nn.Conv2d(c, ch, 3, padding=1)

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.standardise:
            x = (x - self.mean) / self.std
        y = self.tail(self.upsample(self.body(x)))
        return y * self.std + self.mean if self.standardise else y

    def export_ready(self) -> "LightSR":
        """A copy with the standardisation folded into the first and last convolutions.

        Written by hand because it is an affine fold of two constants into two
        layers; torch has no utility for folding a Normalize into a conv.
        First conv: W' = W / std_in, b' = b - Σ W·mean/std. Last conv: W' = W·std_out, b' = b·std + mean.
        """
        m = copy.deepcopy(self).eval()
        first, last = m.body[0], m.tail
        mean, std = m.mean.view(-1), m.std.view(-1)
        with torch.no_grad():
            w = first.weight / std.view(1, -1, 1, 1)
            first.bias -= (w * mean.view(1, -1, 1, 1)).sum(dim=(1, 2, 3))
            first.weight.copy_(w)
            last.weight.mul_(std.view(-1, 1, 1, 1))
            last.bias.mul_(std).add_(mean)
        m.standardise = False
        return m
