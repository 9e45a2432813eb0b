"""Runner on a TensorRT engine: the GPU frame pipeline (runtime/pipeline.py) around ``execute_async_v3``.

Written against the TensorRT 10.x/11.x Python API and cuda-python's runtime.
Everything TensorRT answers with a status is checked and fails with a named
error; buffers are sized from the engine's own tensor dtypes and shapes (an
engine built from a uint8-I/O graph moves bytes). Tests run this file for
real against a strict stand-in ``tensorrt`` whose names are those of the
real 10.x and 11.x bindings, on a simulated CUDA device (tests/engine/).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from sr_deploy.engine.key import check_key, read_sidecar
from sr_deploy.engine.profile import Profile
from sr_deploy.errors import ModelError, SRDeployError
from sr_deploy.runtime.base import InputSpec, Runner
from sr_deploy.runtime.pipeline import CudaDevice, FramePipeline, TensorPlan, check_cuda


class TensorRTError(SRDeployError):
    """A TensorRT call reported failure."""


def _ok(result, what: str) -> None:
    # set_input_shape, set_tensor_address, execute_async_v3 ... return False instead of raising
    if result is False:
        raise TensorRTError(f"TensorRT {what} failed (see TensorRT's messages above)")


class TensorRTRunner(Runner):
    backend = "tensorrt"

    def __init__(self, engine_path: str | os.PathLike, *, cuda_graph: bool = False, depth: int = 3,
                 device=None) -> None:
        self.path = Path(engine_path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: engine not found")
        self.key, desc = read_sidecar(self.path)
        super().__init__(desc, self.key.precision)
        self.profile = Profile.from_dict(self.key.profile)
        self.cuda_graph, self.depth, self._device = cuda_graph, depth, device

    def input_spec(self) -> InputSpec:
        return InputSpec(channels=self.descriptor.in_channels, scale=self.descriptor.scale,
                         size_multiple=self.descriptor.size_multiple, min_hw=self._hw(self.profile.min),
                         max_hw=self._hw(self.profile.max), max_batch=self.profile.max[0])

    def _hw(self, shape) -> tuple[int, int]:
        return tuple(shape[1:3]) if self.descriptor.io == "uint8-nhwc" else tuple(shape[2:4])

    @property
    def on_gpu(self) -> bool:
        return True

    def memory_budget(self) -> int:
        # the engine's activations are sized for its profile's maximum when built; within it, whole frames
        h, w = self._hw(self.profile.max)
        return int(self.bytes_per_pixel() * h * w * self.profile.max[0])

    def _activate(self) -> None:
        from sr_deploy.engine.build import gpu_identity, require_tensorrt

        trt = require_tensorrt()
        gpu, cc = gpu_identity()
        check_key(self.key, tensorrt=trt.__version__, gpu=gpu, compute_capability=cc, engine=self.path)
        self.trt = trt
        self.device = self._device or CudaDevice()
        self.trt_logger = trt.Logger(trt.Logger.WARNING)
        self.trt_runtime = trt.Runtime(self.trt_logger)
        self.engine = self.trt_runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise ModelError(f"{self.path}: TensorRT could not deserialize this engine (corrupt, or built by another "
                             f"TensorRT); rebuild it with `srdeploy build-engine`")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise TensorRTError("TensorRT could not create an execution context (out of GPU memory?)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        ins = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or len(outs) != 1:
            raise ModelError(f"{self.path}: expected one input and one output tensor, found {ins} and {outs}")
        self.in_name, self.out_name = ins[0], outs[0]
        # dtypes come from the engine, never assumed: uint8 for graphs with pixels inside, else float32/16
        self.in_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.in_name)))
        self.out_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.out_name)))
        self.pipeline: FramePipeline | None = None
        self.graphs: dict[int, tuple] = {}
        self.shape: tuple[int, ...] | None = None

    def _deactivate(self) -> None:
        self._close_pipeline()
        del self.context, self.engine, self.trt_runtime

    def _close_pipeline(self) -> None:
        if getattr(self, "pipeline", None) is not None:
            self.pipeline.close()
            self.pipeline = None
        rt = getattr(self.device, "rt", None)
        for graph, graph_exec in getattr(self, "graphs", {}).values():
            check_cuda(rt.cudaGraphExecDestroy(graph_exec), "cudaGraphExecDestroy")
            check_cuda(rt.cudaGraphDestroy(graph), "cudaGraphDestroy")
        self.graphs = {}

    def _plan(self, item_shape: tuple[int, ...], n: int) -> FramePipeline:
        """Pipeline for batches of ``n`` of ``item_shape``: set the shape on the context, size buffers from
        the engine's answer."""
        shape = (n, *item_shape)
        if self.pipeline is not None and shape == self.shape:
            return self.pipeline
        self.profile.check(shape)
        self._close_pipeline()
        _ok(self.context.set_input_shape(self.in_name, shape), f"set_input_shape({self.in_name}, {shape})")
        out_shape = tuple(int(d) for d in self.context.get_tensor_shape(self.out_name))
        if any(d < 0 for d in out_shape):
            raise TensorRTError(f"TensorRT left the output shape unresolved ({out_shape}) for input {shape}")
        self.pipeline = FramePipeline(self.device, self._enqueue, inp=TensorPlan(shape, self.in_dtype),
                                      out=TensorPlan(out_shape, self.out_dtype), depth=self.depth)
        self.shape = shape
        return self.pipeline

    def _enqueue(self, slot, stream) -> None:
        ctx = self.context
        _ok(ctx.set_tensor_address(self.in_name, slot.dev_in), "set_tensor_address (input)")
        _ok(ctx.set_tensor_address(self.out_name, slot.dev_out), "set_tensor_address (output)")
        if not self.cuda_graph:
            _ok(ctx.execute_async_v3(int(stream)), "execute_async_v3")
            return
        rt = self.device.rt
        if slot.index not in self.graphs:
            # one plain enqueue first (TensorRT may allocate lazily), then capture this slot's enqueue
            _ok(ctx.execute_async_v3(int(stream)), "execute_async_v3")
            check_cuda(rt.cudaStreamBeginCapture(stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
                       "cudaStreamBeginCapture")
            try:
                _ok(ctx.execute_async_v3(int(stream)), "execute_async_v3 (graph capture)")
            finally:
                graph = check_cuda(rt.cudaStreamEndCapture(stream), "cudaStreamEndCapture")
            self.graphs[slot.index] = (graph, check_cuda(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate"))
            return
        check_cuda(rt.cudaGraphLaunch(self.graphs[slot.index][1], stream), "cudaGraphLaunch")

    # ---------------------------------------------------------------- Runner contract
    def stream_u8(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Batches flow through the pipeline with several in flight; a change of shape re-plans the buffers."""
        if not self.active:
            self.activate()
        pixel_graph = self.in_dtype == np.uint8
        nhwc = self.descriptor.io == "uint8-nhwc"
        s = self.scale
        sizes: list[tuple[int, int]] = []

        def padded():
            for b in batches:
                p, hw = self._pad_to_profile(b)
                sizes.append(hw)
                yield p

        it = padded()
        head = next(it, None)
        while head is not None:
            shape, following = head.shape, [None]

            def same_shape(first=head, shape=shape):
                yield first
                for b in it:
                    if b.shape != shape:
                        following[0] = b
                        return
                    yield b

            pipe = self._plan(tuple(self._to_engine(head[:1], pixel_graph, nhwc).shape[1:]), head.shape[0])
            for out in pipe.run(self._to_engine(b, pixel_graph, nhwc) for b in same_shape()):
                h, w = sizes.pop(0)
                yield self._from_engine(out, pixel_graph, nhwc)[:, : h * s, : w * s]
            head = following[0]

    def _to_engine(self, batch: np.ndarray, pixel_graph: bool, nhwc: bool) -> np.ndarray:
        if pixel_graph:
            return batch if nhwc else np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        # a float-I/O engine: the host conversion (build engines from uint8-I/O graphs to avoid it)
        x = batch.transpose(0, 3, 1, 2).astype(self.in_dtype)
        return x / np.asarray(255.0, dtype=self.in_dtype)

    def _from_engine(self, out: np.ndarray, pixel_graph: bool, nhwc: bool) -> np.ndarray:
        if pixel_graph:
            return out if nhwc else np.ascontiguousarray(out.transpose(0, 2, 3, 1))
        y = np.clip(np.rint(out.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(y.transpose(0, 2, 3, 1))

    def _pad_to_profile(self, batch: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """Frames smaller than the profile's minimum are edge-padded up to it (the output is cropped back),
        so a small frame or the last tile of a row never fails mid-video."""
        h, w = batch.shape[1:3]
        mh, mw = self._hw(self.profile.min)
        if h >= mh and w >= mw:
            return batch, (h, w)
        return np.pad(batch, ((0, 0), (0, max(0, mh - h)), (0, max(0, mw - w)), (0, 0)), mode="edge"), (h, w)

    def _infer_u8(self, batch: np.ndarray) -> np.ndarray:
        return next(iter(self.stream_u8([batch])))

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        if self.in_dtype == np.uint8:
            return self._u8_to_float(self._infer_u8, batch)
        pipe = self._plan(tuple(batch.shape[1:]), batch.shape[0])
        return next(iter(pipe.run([batch.astype(self.in_dtype)]))).astype(np.float32)
