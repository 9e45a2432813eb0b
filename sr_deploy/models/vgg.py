"""VGG19 feature extractor for the SRGAN content loss, without torchvision.

The layer indices match torchvision's ``vgg19().features`` so that its
ImageNet state dict (``features.N.weight``) loads unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from sr_deploy.errors import InputError, ModelError

_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
# Index (exclusive end) into features for φi,j: the ReLU after conv i_j.
LAYERS = {"vgg22": 9, "vgg54": 36}
TORCHVISION_FILE = "vgg19-dcbb9e9d.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _features() -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 3
    for v in _CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
            cin = v
    return nn.Sequential(*layers)


def find_vgg_weights(path: str | os.PathLike | None) -> Path | None:
    """The given file, else torchvision's file in the torch hub cache, else None."""
    if path:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"VGG19 weights file not found: {p}")
        return p
    hub = Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE
    return hub if hub.is_file() else None


class VGGFeatures(nn.Module):
    """Frozen VGG19 features up to φi,j, taking RGB in [0, 1]."""

    def __init__(self, layer: str = "vgg54") -> None:
        super().__init__()
        if layer not in LAYERS:
            raise ValueError(f"layer must be one of {sorted(LAYERS)}, got {layer!r}")
        self.features = _features()[: LAYERS[layer]]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def load_torchvision(self, path: str | os.PathLike) -> "VGGFeatures":
        """Load a torchvision-layout VGG19 state dict; reject anything else."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
            raise ModelError(f"{path}: not a readable torch state dict ({exc.__class__.__name__})") from exc
        if not isinstance(state, dict):
            raise ModelError(f"{path}: expected a VGG19 state dict, found {type(state).__name__}")
        wanted = {k: v for k, v in state.items() if k.startswith("features.")}
        own = {f"features.{k}": v for k, v in self.features.state_dict().items()}
        missing = [k for k in own if k not in wanted]
        if missing:
            raise ModelError(
                f"{path}: not a torchvision VGG19 state dict (missing {missing[0]} and {len(missing) - 1} more)"
            )
        for k, v in own.items():
            if tuple(wanted[k].shape) != tuple(v.shape):
                raise ModelError(f"{path}: {k} has shape {tuple(wanted[k].shape)}, VGG19 needs {tuple(v.shape)}")
        self.features.load_state_dict({k[len("features."):]: wanted[k] for k in own})
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x - self.mean) / self.std)
