"""The SRGAN generator (SRResNet) of Ledig et al. 2017 and its variants."""

from __future__ import annotations

import copy
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

    def export_ready(self) -> nn.Module:
        """A copy whose last upsampling step and tail run at the pre-shuffle resolution.

        ``conv → PixelShuffle(r) → PReLU → tail(9x9, C→3)`` becomes
        ``conv → PReLU(slopes repeated r²) → conv(K'xK', C·r²→3·r²) → PixelShuffle(r)``:
        the polyphase form of the same convolution, exact including zero padding at the
        borders. The 3-channel 9x9 tail on the full-resolution map is the slowest layer of
        the model on CPUs and GPUs alike (3 output channels waste most of a SIMD/tensor-core
        tile): measured on the 2-core CPU, OpenVINO bf16, 128x128 input, it took half of
        the frame time. Written by hand because no library rewrites a conv through a
        pixel shuffle.
        """
        m = copy.deepcopy(self).eval()
        if self.config.upsampler != "pixelshuffle":
            return m
        *rest, up_conv, shuffle, act = list(m.upsample)
        r, tail = shuffle.upscale_factor, m.tail
        m.upsample = nn.Sequential(*rest, up_conv, _repeat_prelu(act, r * r))
        m.tail = nn.Sequential(_polyphase_conv(tail, r), nn.PixelShuffle(r))
        return m


def _repeat_prelu(act: nn.PReLU, times: int) -> nn.PReLU:
    """PReLU before a pixel shuffle: shuffle channel c comes from channels c·r²…c·r²+r²-1."""
    if act.num_parameters == 1:
        return copy.deepcopy(act)
    out = nn.PReLU(act.num_parameters * times)
    with torch.no_grad():
        out.weight.copy_(act.weight.repeat_interleave(times))
    return out


def _polyphase_conv(conv: nn.Conv2d, r: int) -> nn.Conv2d:
    """The stride-1 'same' conv ``conv`` applied after PixelShuffle(r), rewritten to act before it.

    Output phase (ay, ax) at low-res (i, j) needs high-res input offsets d = r·m + b - a for
    low-res offset m and input phase b; weight W[o, c, d+p] where |d| ≤ p, zero elsewhere.
    """
    k = conv.kernel_size[0]
    if conv.kernel_size != (k, k) or conv.padding != (k // 2, k // 2) or conv.stride != (1, 1) or k % 2 == 0:
        raise ValueError("polyphase rewrite needs an odd square stride-1 'same' convolution")
    p = k // 2
    q = (p + r - 1) // r  # low-res reach: the largest m with r·m - (r - 1) ≤ p
    kk = 2 * q + 1
    cout, cin = conv.out_channels, conv.in_channels
    w = conv.weight.detach()
    new_w = torch.zeros(cout * r * r, cin * r * r, kk, kk, dtype=w.dtype)
    for ay in range(r):
        for ax in range(r):
            for by in range(r):
                for bx in range(r):
                    for my in range(-q, q + 1):
                        dy = r * my + by - ay
                        if abs(dy) > p:
                            continue
                        for mx in range(-q, q + 1):
                            dx = r * mx + bx - ax
                            if abs(dx) > p:
                                continue
                            # PixelShuffle (ONNX DepthToSpace CRD): channel c·r² + phase_y·r + phase_x
                            new_w[ay * r + ax::r * r, by * r + bx::r * r, my + q, mx + q] = w[:, :, dy + p, dx + p]
    out = nn.Conv2d(cin * r * r, cout * r * r, kk, padding=q, bias=conv.bias is not None)
    with torch.no_grad():
        out.weight.copy_(new_w)
        if conv.bias is not None:
            out.bias.copy_(conv.bias.detach().repeat_interleave(r * r))
    return out
