"""Community super-resolution models (Real-ESRGAN, SwinIR, SPAN, HAT, ...) loaded through spandrel.

spandrel recognises an architecture and its hyperparameters from a state
dict and builds the PyTorch module; srdeploy wraps that module so it looks
like one of its own generators (``config.scale``, ``config.in_channels``,
``config.to_dict()``) and carries the architecture's size requirements
inside the graph: the input is padded to the required multiple and minimum
size and the output cropped back, so every backend, tile and video frame
runs the same exported graph and no caller has to know the requirement.

Loading stays safe: the state dict is read by srdeploy, from safetensors or
from a pickle with ``weights_only=True`` (a payload never runs); spandrel
only sees tensors.

spandrel imports torchvision when it is imported, for two architectures
that are not super-resolution (LaMa inpainting and RestoreFormer face
restoration). A CPU-only install has no working torchvision (PyPI's wheel is
built against the CUDA torch), so where ``import torchvision`` fails,
spandrel is imported against a stand-in module whose three names raise a
clear error if those two architectures are ever run; nothing else in
spandrel touches it.
"""

from __future__ import annotations

import enum
import sys
import types
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from sr_deploy.errors import ModelError

INSTALL_HINT = ("community models load through spandrel, which is not installed: "
                "pip install --no-deps spandrel==0.4.2 && pip install einops "
                "(see README: community models)")


def import_spandrel():
    """``spandrel``, imported with the torchvision stand-in where torchvision cannot load."""
    if "spandrel" in sys.modules:
        return sys.modules["spandrel"]
    try:
        import torchvision.transforms.functional  # noqa: F401
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("torchvision"):
            raise
        return _import_with_standin()
    except (ImportError, RuntimeError, OSError):  # present but built for another torch
        return _import_with_standin()
    return _import()


def _import():
    try:
        import spandrel
    except ModuleNotFoundError as exc:
        if exc.name in ("spandrel", "einops"):
            raise ModelError(INSTALL_HINT) from exc
        raise
    return spandrel


def _import_with_standin():
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]  # a half-imported torchvision
    mods = {n: types.ModuleType(n) for n in ("torchvision", "torchvision.transforms",
                                             "torchvision.transforms.functional")}
    mods["torchvision"].transforms = mods["torchvision.transforms"]
    mods["torchvision.transforms"].functional = mods["torchvision.transforms.functional"]
    fn = mods["torchvision.transforms.functional"]

    def unavailable(*_args, **_kwargs):
        raise ModelError("this architecture needs torchvision, which does not load in this install "
                         "(srdeploy's super-resolution architectures do not use it)")

    fn.rotate = fn.normalize = unavailable
    fn.InterpolationMode = enum.Enum("InterpolationMode", "NEAREST BILINEAR BICUBIC")
    sys.modules.update(mods)
    try:
        return _import()
    finally:
        for name in mods:  # later `import torchvision` elsewhere fails as it would have
            sys.modules.pop(name, None)


@dataclass(frozen=True)
class CommunityConfig:
    """What srdeploy's descriptor needs, read from spandrel's model descriptor."""

    arch_name: str
    scale: int
    in_channels: int
    out_channels: int
    size_multiple: int = 1
    size_minimum: int = 0
    square: bool = False
    half_safe: bool = True
    bf16_safe: bool = True
    window: int = 0  # window-attention models: the window, so tiles overlap at least this much
    arch: str = "community"

    def to_dict(self) -> dict:
        return {"arch": self.arch, "arch_name": self.arch_name, "scale": self.scale,
                "in_channels": self.in_channels, "out_channels": self.out_channels,
                "size_multiple": self.size_multiple, "size_minimum": self.size_minimum,
                "square": self.square, "window": self.window}


class CommunitySR(nn.Module):
    """A spandrel model with its size requirements in the graph: pad (replicate) to the multiple and
    minimum size, run, crop to ``scale`` x the input. Replicate padding, not reflect: reflect cannot pad
    more than the input's own size, which a 16-pixel minimum on an 8-pixel tile needs."""

    def __init__(self, net: nn.Module, config: CommunityConfig) -> None:
        super().__init__()
        self.net = net
        self.config = config

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        h, w = x.shape[-2], x.shape[-1]
        # the TorchScript exporter cannot trace symbolic padding; its graphs rely on the runners'
        # padding to the descriptor's size_multiple / size_minimum (Runner._fitted) instead
        if (cfg.size_multiple > 1 or cfg.size_minimum > 0 or cfg.square) and not torch.jit.is_tracing():
            m = cfg.size_multiple
            th = (torch.sym_max(h, cfg.size_minimum) + m - 1) // m * m
            tw = (torch.sym_max(w, cfg.size_minimum) + m - 1) // m * m
            if cfg.square:
                th = tw = torch.sym_max(th, tw)
            x = F.pad(x, (0, tw - w, 0, th - h), mode="replicate")
            return self.net(x)[..., : h * cfg.scale, : w * cfg.scale]
        return self.net(x)


def from_state_dict(state: dict, origin: str) -> CommunitySR:
    """Build the model a state dict describes; one ``ModelError`` line when it is not one spandrel knows
    or not one srdeploy can deploy as super-resolution."""
    import warnings

    spandrel = import_spandrel()
    try:
        with warnings.catch_warnings():  # architectures' own construction warnings (meshgrid, zero-size init)
            warnings.simplefilter("ignore")
            desc = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError as exc:
        keys = [k for k in _flat_keys(state)][:3]
        raise ModelError(f"{origin}: not a srdeploy checkpoint, and no architecture spandrel knows matches "
                         f"its {len(list(_flat_keys(state)))} tensors (first: {', '.join(keys) or 'none'})") from exc
    except Exception as exc:  # noqa: BLE001 - an architecture's own loader can raise anything on odd shapes
        raise ModelError(f"{origin}: spandrel recognised the file but could not build the model "
                         f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})") from exc
    name = getattr(desc.architecture, "name", desc.architecture.__class__.__name__)
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise ModelError(f"{origin}: {name} is not an image-to-image model (srdeploy deploys super-resolution)")
    if desc.input_channels != desc.output_channels:
        raise ModelError(f"{origin}: {name} takes {desc.input_channels} channels and returns "
                         f"{desc.output_channels}; srdeploy deploys models whose output has the input's channels")
    if desc.input_channels != 3:
        raise ModelError(f"{origin}: {name} works on {desc.input_channels}-channel images; srdeploy runs RGB (3) models")
    if not isinstance(desc.scale, int) or desc.scale < 1:
        raise ModelError(f"{origin}: {name} has scale {desc.scale!r}; srdeploy needs a whole-number scale")
    req = desc.size_requirements
    net = desc.model.eval()
    window = int(getattr(net, "window_size", 0) or 0) if isinstance(getattr(net, "window_size", 0), int) else 0
    cfg = CommunityConfig(arch_name=name, scale=int(desc.scale), in_channels=3, out_channels=3,
                          size_multiple=int(req.multiple_of), size_minimum=int(req.minimum), square=bool(req.square),
                          half_safe=bool(desc.supports_half), bf16_safe=bool(desc.supports_bfloat16), window=window)
    for p in net.parameters():
        p.requires_grad_(False)
    return CommunitySR(net, cfg).eval()


def _flat_keys(state: dict):
    for k, v in state.items():
        if isinstance(v, dict):
            yield from (f"{k}.{kk}" for kk in _flat_keys(v))
        elif isinstance(v, torch.Tensor):
            yield k
