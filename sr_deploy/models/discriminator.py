"""The SRGAN discriminator (Ledig et al. 2017, Fig. 4)."""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int, stride: int, bn: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride=stride, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


class Discriminator(nn.Module):
    """8 conv-BN-LeakyReLU blocks (64→512 channels, strides 1/2 alternating),
    dense 1024, LeakyReLU, dense 1. Returns logits (BCE-with-logits is applied
    by the loss, which is the numerically stable form of -log D)."""

    def __init__(self, in_channels: int = 3, base: int = 64, pool: int = 6, blocks: int = 8) -> None:
        super().__init__()
        if blocks not in (8, 10):
            raise ValueError(f"the discriminator has 8 blocks (paper) or 10 (with a skip), got {blocks}")
        widths = [base, base, base * 2, base * 2, base * 4, base * 4, base * 8, base * 8]
        if blocks == 10:
            # two more stride-1 blocks at the deepest width; block 7's output skips to block 10's
            widths += [base * 8, base * 8]
        layers = []
        cin = in_channels
        for i, w in enumerate(widths):
            stride = 1 + i % 2 if i < 8 else 1
            layers.append(_block(cin, w, stride=stride, bn=i > 0))
            cin = w
        self.features = nn.Sequential(*layers)
        self.skip = blocks == 10
        # The paper's 96x96 crops end at 6x6; pooling to 6x6 keeps the dense
        # layer's size fixed for any crop size.
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(cin * pool * pool, 1024),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(1024, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.skip:
            return self.classifier(self.pool(self.features(x)))
        for i, block in enumerate(self.features):
            x = block(x)
            if i == 6:  # output of block 7 (1-based)
                skip = x
        # block 7 is stride 1 and block 8 stride 2: bring the skip to block 10's resolution
        skip = nn.functional.adaptive_avg_pool2d(skip, x.shape[-2:])
        return self.classifier(self.pool(x + skip))
