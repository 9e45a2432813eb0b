"""Runner on a TensorRT engine through cuda-python: device and pinned host buffers, a stream, events.

Written against the TensorRT 10/11 Python API (``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``) and cuda-python's runtime
bindings. It cannot run on a machine without TensorRT and a GPU; its shape,
key and buffer logic is tested without them (engine/, runtime/buffers.py).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

from sr_deploy.engine.key import check_key, read_sidecar
from sr_deploy.engine.profile import Profile
from sr_deploy.errors import BackendUnavailable, ModelError
from sr_deploy.runtime.base import InputSpec, Runner
from sr_deploy.runtime.buffers import BufferPlan, BufferPool


def _cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as exc:
            raise BackendUnavailable("cuda-python is not installed (pip install 'srdeploy[gpu]')") from exc
    return cudart


def _check(result):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else rest


class TensorRTRunner(Runner):
    backend = "tensorrt"

    def __init__(self, engine_path: str | os.PathLike, *, cuda_graph: bool = False) -> None:
        self.path = Path(engine_path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: engine not found")
        self.key, desc = read_sidecar(self.path)
        super().__init__(desc, self.key.precision)
        self.profile = Profile.from_dict(self.key.profile)
        self.cuda_graph = cuda_graph

    def input_spec(self) -> InputSpec:
        return InputSpec(channels=self.descriptor.in_channels, scale=self.descriptor.scale,
                         size_multiple=self.descriptor.size_multiple, min_hw=self.profile.min[2:],
                         max_hw=self.profile.max[2:], max_batch=self.profile.max[0])

    def _activate(self) -> None:
        from sr_deploy.engine.build import gpu_identity, require_tensorrt

        trt = require_tensorrt()
        gpu, cc = gpu_identity()
        check_key(self.key, tensorrt=trt.__version__, gpu=gpu, compute_capability=cc, engine=self.path)
        self.cudart = cudart = _cudart()
        self.trt_logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.trt_logger).deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise ModelError(f"{self.path}: TensorRT could not deserialize this engine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.in_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.out_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.stream = _check(cudart.cudaStreamCreate())
        self.start_evt, self.end_evt = _check(cudart.cudaEventCreate()), _check(cudart.cudaEventCreate())
        self.device = BufferPool(lambda n: _check(cudart.cudaMalloc(n)), lambda p: cudart.cudaFree(p))
        self.host = BufferPool(lambda n: _check(cudart.cudaMallocHost(n)), lambda p: cudart.cudaFreeHost(p))
        self.plan: BufferPlan | None = None
        self.graph_exec = None
        self.last_ms = 0.0

    def _deactivate(self) -> None:
        cudart = self.cudart
        if self.graph_exec is not None:
            cudart.cudaGraphExecDestroy(self.graph_exec)
        self.device.release()
        self.host.release()
        cudart.cudaEventDestroy(self.start_evt)
        cudart.cudaEventDestroy(self.end_evt)
        cudart.cudaStreamDestroy(self.stream)
        del self.context, self.engine

    def _set_shape(self, shape: tuple[int, int, int, int]) -> BufferPlan:
        self.profile.check(shape)
        plan = BufferPlan.for_input(shape, self.scale, self.descriptor.out_channels)
        if plan != self.plan:  # buffers and bindings are reused while the shape is unchanged
            d_in = self.device.ensure("in", plan.input_bytes)
            d_out = self.device.ensure("out", plan.output_bytes)
            self.host.ensure("in", plan.input_bytes)
            self.host.ensure("out", plan.output_bytes)
            self.context.set_input_shape(self.in_name, shape)
            self.context.set_tensor_address(self.in_name, int(d_in))
            self.context.set_tensor_address(self.out_name, int(d_out))
            if self.graph_exec is not None:
                self.cudart.cudaGraphExecDestroy(self.graph_exec)
                self.graph_exec = None
            self.plan = plan
        return plan

    def _enqueue(self) -> None:
        if not self.cuda_graph:
            if not self.context.execute_async_v3(int(self.stream)):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            return
        cudart = self.cudart
        if self.graph_exec is None:
            # one plain run first (TensorRT may allocate lazily), then capture the enqueue
            self.context.execute_async_v3(int(self.stream))
            _check(cudart.cudaStreamSynchronize(self.stream))
            _check(cudart.cudaStreamBeginCapture(self.stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
            self.context.execute_async_v3(int(self.stream))
            graph = _check(cudart.cudaStreamEndCapture(self.stream))
            self.graph_exec = _check(cudart.cudaGraphInstantiate(graph, 0))
        _check(cudart.cudaGraphLaunch(self.graph_exec, self.stream))

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        cudart = self.cudart
        plan = self._set_shape(tuple(batch.shape))
        h_in, h_out = self.host.handles["in"], self.host.handles["out"]
        d_in, d_out = self.device.handles["in"], self.device.handles["out"]
        ctypes.memmove(int(h_in), batch.ctypes.data, plan.input_bytes)
        kind_h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        kind_d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart.cudaMemcpyAsync(d_in, h_in, plan.input_bytes, kind_h2d, self.stream))
        _check(cudart.cudaEventRecord(self.start_evt, self.stream))
        self._enqueue()
        _check(cudart.cudaEventRecord(self.end_evt, self.stream))
        _check(cudart.cudaMemcpyAsync(h_out, d_out, plan.output_bytes, kind_d2h, self.stream))
        _check(cudart.cudaStreamSynchronize(self.stream))
        self.last_ms = float(_check(cudart.cudaEventElapsedTime(self.start_evt, self.end_evt)))
        out = np.empty(plan.output_shape, dtype=np.float32)
        ctypes.memmove(out.ctypes.data, int(h_out), plan.output_bytes)
        return out
