"""Runner on PyTorch eager (BN folded, tail before the last shuffle, channels-last, optional bf16 on CPU)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sr_deploy.descriptor import ModelDescriptor
from sr_deploy.runtime.base import Runner


class AreaResample(nn.Module):
    """The torch form of export/pixels.resample_output: clamp to the value range, then each q x q block of
    the network's output area-resized to p x p (an average pool where p is 1, else a per-channel conv
    holding the same ``area_weights`` and a pixel shuffle), in fp32 whatever the autocast around it."""

    def __init__(self, desc: ModelDescriptor) -> None:
        from sr_deploy.export.pixels import area_kernel

        super().__init__()
        self.q, self.p, weight = area_kernel(desc.model_scale, desc.scale, desc.out_channels)
        self.lo, self.hi = desc.value_range
        self.channels = desc.out_channels
        self.register_buffer("weight", torch.from_numpy(weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            x = x.float().clamp(self.lo, self.hi)
            if self.p == 1:
                return nn.functional.avg_pool2d(x, self.q)
            y = nn.functional.conv2d(x, self.weight, stride=self.q, groups=self.channels)
            return nn.functional.pixel_shuffle(y, self.p)


class TorchRunner(Runner):
    backend = "torch"

    def __init__(self, model: nn.Module, descriptor: ModelDescriptor, *, precision: str = "fp32",
                 device: str | None = None, depth: int = 3, cuda_graph: bool = False) -> None:
        super().__init__(descriptor, precision)
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"torch runner precision must be fp32, bf16 or fp16, got {precision}")
        self._model = model
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("torch fp16 needs a CUDA device; use bf16 on the CPU")
        self.depth, self.cuda_graph = depth, cuda_graph

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    def memory_budget(self) -> int:
        if self.device.type != "cuda":
            return super().memory_budget()
        free, _total = torch.cuda.mem_get_info(self.device)
        return int(free * 0.5)

    def _activate(self) -> None:
        from sr_deploy.export.fold import inference_form

        net = inference_form(self._model)
        if self.descriptor.resizes_output:  # --outscale at a whole factor: on the device
            net = nn.Sequential(net, AreaResample(self.descriptor))
        self.net = net.to(self.device, memory_format=torch.channels_last)
        self._yuv_models: dict = {}  # (input, output) YuvSpec -> the YUV form of self.net (stream_yuv)

    def resample_output(self, to_scale: int) -> bool:
        if not self._resamplable(to_scale):
            return False
        self.descriptor = self.descriptor.resampled(to_scale)
        return True

    def _deactivate(self) -> None:
        del self.net, self._yuv_models

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.device).contiguous(memory_format=torch.channels_last)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype or torch.float32,
                                                     enabled=dtype is not None):
            y = self.net(x)
        return y.float().contiguous().cpu().numpy()

    def _forward_u8(self, x_u8: torch.Tensor) -> torch.Tensor:
        """NHWC uint8 on the device → NHWC uint8 on the device: scale, model, round, clamp, cast all there."""
        x = x_u8.permute(0, 3, 1, 2).float().div_(255.0).contiguous(memory_format=torch.channels_last)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            y = self.net(x)
        return y.float().mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()

    yuv_capable = True  # stream_yuv: 4:2:0 YUV frames, the colour conversions on the device (export/yuv.py)

    def stream_u8(self, batches):
        """On CUDA: the same schedule as runtime/pipeline.py with torch's streams and events (upload on
        one stream, compute on another, download on a third, ``depth`` batches in flight, the host
        waiting only for the result it takes); with ``cuda_graph`` the forward pass is captured once
        per shape and replayed. On the CPU: one batch at a time."""
        if self.device.type != "cuda":
            yield from super().stream_u8(batches)
            return
        yield from self._stream(batches, self._forward_u8, fit=True)

    def stream_yuv(self, batches, inp, out):
        """Batches of ``(N, 3H/2, W)`` YUV frames laid out as ``inp`` (an export/yuv.YuvSpec) → the upscaled
        frames laid out as ``out``: the bytes as decoded cross to the device, chroma upsampling, both
        matrices and the model run there, and the bytes the encoder takes come back (half of RGB's)."""
        from sr_deploy.export.yuv import YuvModel

        if not self.active:
            self.activate()
        if (inp, out) not in self._yuv_models:  # once per runner, not per call (parallel segments: per batch)
            self._yuv_models[(inp, out)] = YuvModel(self.net, inp, out).to(self.device)
        model = self._yuv_models[(inp, out)]
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

        def forward(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                return model(x)

        if self.device.type != "cuda":
            with torch.inference_mode():
                for b in batches:
                    yield forward(torch.from_numpy(np.ascontiguousarray(b))).numpy()
            return
        yield from self._stream(batches, forward, fit=False)

    def _stream(self, batches, forward, *, fit: bool):
        if not self.active:
            self.activate()
        from collections import deque

        up, down, compute = torch.cuda.Stream(), torch.cuda.Stream(), torch.cuda.Stream()
        pending: deque = deque()
        graphs: dict = {}
        try:
            with torch.inference_mode():
                for b in batches:
                    b, hw = self._fit(b, 1) if fit else (b, None)  # the architecture's size requirements
                    host_in = torch.from_numpy(np.ascontiguousarray(b)).pin_memory()
                    with torch.cuda.stream(up):
                        d_in = host_in.to(self.device, non_blocking=True)
                    compute.wait_stream(up)
                    with torch.cuda.stream(compute):
                        d_in.record_stream(compute)
                        y = self._graph_forward(graphs, d_in, forward) if self.cuda_graph else forward(d_in)
                    down.wait_stream(compute)
                    host_out = torch.empty(y.shape, dtype=y.dtype, pin_memory=True)
                    with torch.cuda.stream(down):
                        y.record_stream(down)
                        host_out.copy_(y, non_blocking=True)
                        done = torch.cuda.Event()
                        done.record(down)
                    pending.append((done, host_out, host_in, hw))
                    if len(pending) >= self.depth:
                        done, out, _, out_hw = pending.popleft()
                        done.synchronize()
                        yield self._crop(out.numpy(), out_hw, 1)
                while pending:
                    done, out, _, out_hw = pending.popleft()
                    done.synchronize()
                    yield self._crop(out.numpy(), out_hw, 1)
        finally:
            torch.cuda.synchronize(self.device)
            graphs.clear()  # the captured graphs and their static buffers are released here

    def _graph_forward(self, graphs: dict, d_in: torch.Tensor, forward) -> torch.Tensor:
        key = (tuple(d_in.shape), d_in.dtype)
        if key not in graphs:
            static_in = d_in.clone()
            forward(static_in)  # warm-up outside the capture (cuDNN picks its kernels)
            torch.cuda.current_stream().synchronize()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, stream=torch.cuda.current_stream()):
                static_out = forward(static_in)
            graphs[key] = (g, static_in, static_out)
        g, static_in, static_out = graphs[key]
        static_in.copy_(d_in)
        g.replay()
        return static_out.clone()

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
