"""Fold every BatchNorm into the convolution before it."""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Return an eval-mode copy of ``model`` with each Conv2d→BatchNorm2d pair fused.

    The arithmetic is torch's own (``fuse_conv_bn_eval``); this walks the
    module tree and swaps the BN for an Identity. A BatchNorm that does not
    directly follow a Conv2d inside a Sequential is an error, so that nothing
    unfolded is exported silently.
    """
    folded = copy.deepcopy(model).eval()
    _fold(folded)
    left = [name for name, m in folded.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ValueError(f"BatchNorm layers not preceded by a Conv2d, cannot fold: {', '.join(left)}")
    return folded


def _fold(module: nn.Module) -> None:
    for child in module.children():
        _fold(child)
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = module._modules[a], module._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module._modules[a] = fuse_conv_bn_eval(conv, bn)
                module._modules[b] = nn.Identity()


def inference_form(model: nn.Module) -> nn.Module:
    """BN folded plus the model's own exact rewrites for inference (``export_ready``), in eval mode.

    What the ONNX exporter and the torch runner both run.
    """
    if getattr(getattr(model, "config", None), "arch", "") == "community":
        # a community architecture's BatchNorms may not sit right after a convolution in a Sequential:
        # fold those that do, leave the rest to the ONNX runtimes' own fusions
        folded = copy.deepcopy(model).eval()
        _fold(folded)
        return folded
    folded = fold_batchnorm(model)
    return folded.export_ready() if hasattr(folded, "export_ready") else folded
