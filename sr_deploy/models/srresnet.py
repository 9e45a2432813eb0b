"""The SRGAN generator (SRResNet) of Ledig et al. 2017 and its variants."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

UPSAMPLERS = ("pixelshuffle", "deconv", "nearest_conv")


@dataclass(frozen=True)
class SRResNetConfig:
    """Hyperparameters that rebuild a generator; saved with every checkpoint."""

    scale: int = 4
    num_blocks: int = 16
    channels: int = 64
    in_channels: int = 3
    upsampler: str = "pixelshuffle"
    arch: str = "srresnet"

    def __post_init__(self) -> None:
        if self.scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, got {self.scale}")
        if self.upsampler not in UPSAMPLERS:
            raise ValueError(f"upsampler must be one of {UPSAMPLERS}, got {self.upsampler!r}")
        if self.num_blocks < 1 or self.channels < 1:
            raise ValueError("num_blocks and channels must be positive")

    def to_dict(self) -> dict:
        return asdict(self)


class ResidualBlock(nn.Module):
    """conv3x3-BN-PReLU-conv3x3-BN with an identity skip."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.PReLU(channels),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _upsample_step(channels: int, factor: int, kind: str) -> list[nn.Module]:
    if kind == "pixelshuffle":
        return [
            nn.Conv2d(channels, channels * factor * factor, 3, padding=1),
            nn.PixelShuffle(factor),
            nn.PReLU(channels),
        ]
    if kind == "deconv":
        # kernel 2*factor, stride factor, padding factor//2: output is exactly factor x input
        k = 2 * factor if factor == 2 else 3
        pad = (k - factor + 1) // 2
        out_pad = (k - factor) % 2 if factor == 3 else 0
        return [
            nn.ConvTranspose2d(channels, channels, k, stride=factor, padding=pad, output_padding=out_pad),
            nn.PReLU(channels),
        ]
    return [
        nn.Upsample(scale_factor=factor, mode="nearest"),
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.PReLU(channels),
    ]


class SRResNet(nn.Module):
    """SRGAN generator: 9x9 head, residual trunk, global skip, upsampling, 9x9 tail.

    Input and output are RGB in [0, 1]; the output is not clamped so that the
    training loss sees the raw prediction (runners clamp).
    """

    def __init__(self, config: SRResNetConfig | None = None, **kwargs) -> None:
        super().__init__()
        self.config = config or SRResNetConfig(**kwargs)
        c, ch = self.config.channels, self.config.in_channels
        self.head = nn.Sequential(nn.Conv2d(ch, c, 9, padding=4), nn.PReLU(c))
        self.trunk = nn.Sequential(*[ResidualBlock(c) for _ in range(self.config.num_blocks)])
        self.trunk_tail = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))
        steps = [3] if self.config.scale == 3 else [2] * int(math.log2(self.config.scale))
        layers: list[nn.Module] = []
        for factor in steps:
            layers += _upsample_step(c, factor, self.config.upsampler)
        self.upsample = nn.Sequential(*layers)
        self.tail = nn.Conv2d(c, ch, 9, padding=4)

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.head(x)
        body = self.trunk_tail(self.trunk(head))
        return self.tail(self.upsample(head + body))
