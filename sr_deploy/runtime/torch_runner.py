"""Runner on PyTorch eager (BN folded, tail before the last shuffle, channels-last, optional bf16 on CPU)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sr_deploy.descriptor import ModelDescriptor
from sr_deploy.runtime.base import Runner


class TorchRunner(Runner):
    backend = "torch"

    def __init__(self, model: nn.Module, descriptor: ModelDescriptor, *, precision: str = "fp32",
                 device: str | None = None) -> None:
        super().__init__(descriptor, precision)
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"torch runner precision must be fp32, bf16 or fp16, got {precision}")
        self._model = model
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("torch fp16 needs a CUDA device; use bf16 on the CPU")

    def _activate(self) -> None:
        from sr_deploy.export.fold import inference_form

        self.net = inference_form(self._model).to(self.device, memory_format=torch.channels_last)

    def _deactivate(self) -> None:
        del self.net

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.device).contiguous(memory_format=torch.channels_last)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype or torch.float32,
                                                     enabled=dtype is not None):
            y = self.net(x)
        return y.float().contiguous().cpu().numpy()

    def _infer_u8(self, batch: np.ndarray) -> np.ndarray:
        # bytes travel to the device; scale, clamp, round and cast run there (on CUDA: never on the host)
        x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        x = x.contiguous(memory_format=torch.channels_last)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype or torch.float32,
                                                     enabled=dtype is not None):
            y = self.net(x)
        with torch.inference_mode():
            y = y.float().mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        return y.cpu().numpy()
