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
from collections import OrderedDict, deque
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from sr_deploy.engine.key import check_key, read_sidecar
from sr_deploy.engine.profile import Profile
from sr_deploy.errors import ModelError, SRDeployError
from sr_deploy.runtime.base import InputSpec, Runner, pad_edges
from sr_deploy.runtime.pipeline import CudaDevice, FramePipeline, TensorPlan, check_cuda


# pipelines (pinned host and device buffers) of earlier input shapes stay allocated up to this many shapes
# and this many bytes beside the current one
PLANS_KEPT = 4
PLAN_BYTES_KEPT = 1 << 30


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
        # buffers per input shape, kept while the shape recurs: a tiled frame alternates a full batch of tiles
        # with a row's remainder, and re-allocating pinned memory at every change would stall the GPU
        self.plans: OrderedDict[tuple[int, ...], FramePipeline] = OrderedDict()
        self.graphs: dict[tuple, tuple] = {}  # (input shape, slot) -> captured CUDA graph and its exec
        self.shape: tuple[int, ...] | None = None  # the shape set on the context now

    def _deactivate(self) -> None:
        self._close_plans()
        del self.context, self.engine, self.trt_runtime

    def _close_plans(self, only: tuple[int, ...] | None = None) -> None:
        rt = getattr(self.device, "rt", None)
        for shape in [only] if only is not None else list(getattr(self, "plans", {})):
            self.plans.pop(shape).close()  # synchronizes its streams before freeing
            for key in [k for k in self.graphs if k[0] == shape]:
                graph, graph_exec = self.graphs.pop(key)
                check_cuda(rt.cudaGraphExecDestroy(graph_exec), "cudaGraphExecDestroy")
                check_cuda(rt.cudaGraphDestroy(graph), "cudaGraphDestroy")

    def _plan(self, shape: tuple[int, ...]) -> FramePipeline:
        """The pipeline for engine-layout batches of ``shape``, the context set to that shape. Called only
        when the previous shape's pipeline has drained (``_stream``), so no enqueued work sees the change."""
        pipe = self.plans.get(shape)
        if pipe is None:
            self.profile.check(shape)
        if shape != self.shape:
            _ok(self.context.set_input_shape(self.in_name, shape), f"set_input_shape({self.in_name}, {shape})")
            self.shape = shape
        if pipe is not None:
            self.plans.move_to_end(shape)
            return pipe
        out_shape = tuple(int(d) for d in self.context.get_tensor_shape(self.out_name))
        if any(d < 0 for d in out_shape):
            raise TensorRTError(f"TensorRT left the output shape unresolved ({out_shape}) for input {shape}")
        inp, out = TensorPlan(shape, self.in_dtype), TensorPlan(out_shape, self.out_dtype)
        while self.plans and (len(self.plans) >= PLANS_KEPT or PLAN_BYTES_KEPT < sum(
                p.depth * (p.inp.nbytes + p.out.nbytes) for p in self.plans.values())):
            self._close_plans(next(iter(self.plans)))
        pipe = FramePipeline(self.device, self._enqueue, inp=inp, out=out, depth=self.depth)
        self.plans[shape] = pipe
        return pipe

    def _enqueue(self, slot, stream) -> None:
        ctx = self.context
        _ok(ctx.set_tensor_address(self.in_name, slot.dev_in), "set_tensor_address (input)")
        _ok(ctx.set_tensor_address(self.out_name, slot.dev_out), "set_tensor_address (output)")
        if not self.cuda_graph:
            _ok(ctx.execute_async_v3(int(stream)), "execute_async_v3")
            return
        rt, key = self.device.rt, (self.shape, slot.index)
        if key not in self.graphs:
            # one plain enqueue first (TensorRT may allocate lazily), then capture this slot's enqueue
            _ok(ctx.execute_async_v3(int(stream)), "execute_async_v3")
            check_cuda(rt.cudaStreamBeginCapture(stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
                       "cudaStreamBeginCapture")
            try:
                _ok(ctx.execute_async_v3(int(stream)), "execute_async_v3 (graph capture)")
            finally:
                graph = check_cuda(rt.cudaStreamEndCapture(stream), "cudaStreamEndCapture")
            self.graphs[key] = (graph, check_cuda(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate"))
            return
        check_cuda(rt.cudaGraphLaunch(self.graphs[key][1], stream), "cudaGraphLaunch")

    # ---------------------------------------------------------------- Runner contract
    def stream_u8(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """NHWC uint8 batches through the pipeline, several in flight, outputs in order."""
        if not self.active:
            self.activate()
        pixel_graph = self.in_dtype == np.uint8
        nhwc = self.descriptor.io == "uint8-nhwc"
        return self._stream(batches, hdim=1, to_engine=lambda b: self._to_engine(b, pixel_graph, nhwc),
                            from_engine=lambda y: self._from_engine(y, pixel_graph, nhwc))

    def _stream(self, batches: Iterable[np.ndarray], *, hdim: int, to_engine, from_engine) -> Iterator[np.ndarray]:
        """Each batch (spatial dims at ``hdim``) fitted to the model and the profile: edge-padded to the
        descriptor's size multiple and minimum (a community graph exported by the TorchScript tracer relies on
        the runner for them) and up to the profile's minimum size (the output cropped back), so a small frame
        or a row's last tile never fails mid-video, and cut into chunks of at most its batch. Consecutive
        chunks of one shape flow through one pipeline. One stream at a time per runner: two interleaved
        would share the context's shape and the pipelines' slots."""
        most = self.profile.max[0]
        mh, mw = self._hw(self.profile.min)
        parts: deque[tuple[int, int, int]] = deque()  # per input batch: its height, width and chunk count

        def chunks():
            for b in batches:
                if len(b) == 0:
                    raise ValueError("empty batch")
                b, hw = self._fit(b, hdim)
                h, w = hw or (b.shape[hdim], b.shape[hdim + 1])
                b = pad_edges(b, hdim, mh, mw)
                parts.append((h, w, -(-len(b) // most)))
                for i in range(0, len(b), most):
                    yield to_engine(b[i:i + most])

        it, done = chunks(), []
        head = next(it, None)
        while head is not None:
            following = [None]

            def same_shape(first=head, shape=head.shape):
                yield first
                for c in it:
                    if c.shape != shape:
                        following[0] = c
                        return
                    yield c

            for out in self._plan(head.shape).run(same_shape()):
                done.append(from_engine(out))
                h, w, n = parts[0]
                if len(done) == n:
                    parts.popleft()
                    y = done[0] if n == 1 else np.concatenate(done)
                    done = []
                    yield self._crop(y, (h, w), hdim)
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

    def _infer_u8(self, batch: np.ndarray) -> np.ndarray:
        return next(iter(self.stream_u8([batch])))

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        if self.in_dtype == np.uint8:
            return self._u8_to_float(self._infer_u8, batch)
        return next(self._stream([batch], hdim=2, to_engine=lambda b: b.astype(self.in_dtype),
                                 from_engine=lambda y: y.astype(np.float32)))
