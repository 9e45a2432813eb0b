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

    def __init__(self, in_channels: int = 3, base: int = 64, pool: int = 6) -> None:
        super().__init__()
        widths = [base, base, base * 2, base * 2, base * 4, base * 4, base * 8, base * 8]
        blocks = []
        cin = in_channels
        for i, w in enumerate(widths):
            blocks.append(_block(cin, w, stride=1 + i % 2, bn=i > 0))
            cin = w
        self.features = nn.Sequential(*blocks)
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
        return self.classifier(self.pool(self.features(x)))
