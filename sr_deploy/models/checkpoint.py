"""Checkpoints that rebuild their own model: hyperparameters saved beside weights.

``.pt`` files are dicts loaded with ``weights_only=True``; ``.safetensors``
files keep the hyperparameters in their string metadata.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sr_deploy.errors import InputError, ModelError
from sr_deploy.fsutil import atomic_path
from sr_deploy.models.srresnet import SRResNet, SRResNetConfig

FORMAT = "srdeploy-checkpoint"
FORMAT_VERSION = 1


class ForeignWeights(ModelError):
    """A readable weights file that is not a srdeploy checkpoint: a community model's state dict, perhaps."""

    def __init__(self, message: str, state: dict) -> None:
        super().__init__(message)
        self.state = state


def build_generator(arch: dict) -> nn.Module:
    """Rebuild a generator from the ``arch`` dict stored in a checkpoint."""
    arch = dict(arch)
    kind = arch.get("arch", "srresnet")
    if kind == "srresnet":
        return SRResNet(SRResNetConfig(**arch))
    if kind == "light":
        from sr_deploy.models.light import LightSR, LightSRConfig

        return LightSR(LightSRConfig(**arch))
    raise ModelError(f"unknown architecture {kind!r} in checkpoint")


def arch_of(model: nn.Module) -> dict:
    return model.config.to_dict()  # type: ignore[attr-defined]


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, extra: dict[str, Any] | None = None,
                    dtype: torch.dtype | None = None) -> Path:
    """Write model weights + hyperparameters (+ optional training state) atomically.

    ``dtype`` (torch.float16): floating tensors stored in it, half the bytes (a release's weights; loading
    casts them back into the model's float32 parameters). Integer buffers keep theirs."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in _unwrap(model).state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    arch = arch_of(_unwrap(model))
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save

            # the bytes written into atomic_path's file: safetensors' save_file makes a file of its own, 0600
            tmp.write_bytes(save(state, metadata={"format": FORMAT, "arch": json.dumps(arch)}))
        else:
            payload = {"format": FORMAT, "version": FORMAT_VERSION, "arch": arch, "state_dict": state}
            payload.update(extra or {})
            torch.save(payload, tmp)
    return path


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint into a dict with at least ``arch`` and ``state_dict``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a bad file
            raise ModelError(f"{path}: not a readable safetensors file ({exc})") from exc
        if "arch" not in meta:
            raise ForeignWeights(f"{path}: safetensors file has no srdeploy 'arch' metadata", state)
        return {"format": FORMAT, "arch": json.loads(meta["arch"]), "state_dict": state}
    with open(path, "rb") as f:
        head = f.read(512)
    # torch.save writes a zip archive (PK..) or, in the legacy format, a pickle (0x80 protocol byte);
    # anything else (a text file, an HTML error page saved as .pt, an empty file) is named as such
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        what = "an empty file" if not head else ("a text file" if _is_utf8(head) else "not a PyTorch file")
        raise ModelError(f"{path}: not a PyTorch checkpoint ({what})")
    import zipfile

    if head.startswith(b"PK") and not zipfile.is_zipfile(path):  # the central directory sits at the end
        raise ModelError(f"{path}: not a loadable checkpoint: a truncated or damaged archive")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc.__class__.__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = "it holds Python objects beyond tensors; refused unloaded, nothing in it ran"
        elif "PytorchStreamReader" in str(exc):
            reason = "a truncated or damaged archive"
        raise ModelError(f"{path}: not a loadable checkpoint: {reason}") from exc
    if isinstance(payload, dict) and payload.get("format") != FORMAT:
        raise ForeignWeights(f"{path}: not a srdeploy checkpoint (no '{FORMAT}' header with the model's "
                             f"hyperparameters)", payload)
    if not isinstance(payload, dict) or "arch" not in payload:
        raise ModelError(f"{path}: not a srdeploy checkpoint (no '{FORMAT}' header with the model's hyperparameters)")
    return payload


def bound_architecture(arch, state, origin) -> None:
    """A checkpoint's hyperparameters are untrusted (a 300 KB file can claim 3,000,000 blocks and the
    build would allocate until the host runs out): each whole-number one must be a whole number no larger
    than the weights themselves allow, the count of tensors (blocks, layers) or their largest dimension
    (channels), before anything is built."""
    if not isinstance(arch, dict) or not isinstance(state, dict) or not state:
        raise ModelError(f"{origin}: not a srdeploy checkpoint (its architecture or weights are missing)")
    tensors = [v for v in state.values() if isinstance(v, torch.Tensor)]
    if len(tensors) != len(state):
        raise ModelError(f"{origin}: its weights hold entries that are not tensors")
    most = max(len(tensors), max((max(t.shape) for t in tensors if t.dim()), default=1))
    for key, value in arch.items():
        if key in ("arch", "upsampler", "mean", "std"):
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ModelError(f"{origin}: its architecture says {key} = {value!r}, not a whole number")
        if not 0 < value <= most:
            raise ModelError(f"{origin}: its architecture says {key} = {value}, beyond what its {len(tensors)} "
                             f"weight tensors can hold (at most {most}); the file's metadata is wrong")


def _is_utf8(sample: bytes) -> bool:
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the generator stored in ``path``; return it (eval mode) and the raw payload.

    A weights file that is not a srdeploy checkpoint is handed to spandrel (models/community.py),
    which recognises community architectures from their state dicts; an ncnn ``.param`` (with its
    ``.bin``) is run as its own graph (models/ncnn.py)."""
    if Path(path).suffix.lower() == ".param":
        from sr_deploy.models.ncnn import load_ncnn

        model = load_ncnn(path)
        return model, {"format": "ncnn", "arch": model.config.to_dict()}
    try:
        payload = read_checkpoint(path)
    except ForeignWeights as foreign:
        from sr_deploy.models.community import from_state_dict

        model = from_state_dict(foreign.state, str(path))
        return model, {"format": "community", "arch": model.config.to_dict()}
    bound_architecture(payload.get("arch"), payload.get("state_dict"), path)
    try:
        model = build_generator(payload["arch"])
        model.load_state_dict(payload["state_dict"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: weights do not match the stored architecture ({str(exc).splitlines()[0]})") from exc
    model.eval()
    return model, payload
