"""The GPU frame pipeline: several frames in flight, copies and compute overlapped.

Each in-flight frame owns a *slot*: a pinned host input and output, a device
input and output, and three events. Three streams carry the work: ``copy_in``
(host → device), ``compute`` (the model) and ``copy_out`` (device → host).
For a frame in slot i:

    host: copy the frame's bytes into pinned in[i]
    copy_in:  H2D in[i] → d_in[i]                           record in_done[i]
    compute:  wait in_done[i]; model(d_in[i] → d_out[i])     record compute_done[i]
    copy_out: wait compute_done[i]; D2H d_out[i] → out[i]   record out_done[i]

The host synchronizes on one thing only: ``out_done[i]``, when it takes slot
i's result, which is also the moment slot i may be reused. So while frame k
computes, frame k+1 is uploaded and frame k-1 downloaded. Buffers are sized
from the model's own tensor dtypes and shapes (uint8 pixels for graphs with
pixels inside) and reused while the shape is unchanged.

What runs the model is pluggable (``compute(slot, stream)``): TensorRT's
``execute_async_v3`` or a torch module. What moves bytes is a ``Device``:
``CudaDevice`` (cuda-python) on a GPU, a simulated device in the tests, which
executes every queued operation as late as the events allow, so a buffer
reused too early shows up as a wrong frame.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol

import numpy as np

from sr_deploy.cuda import CudaError, check_cuda, cudart  # noqa: F401  (CudaError re-exported)


class Device(Protocol):
    """The few CUDA runtime operations the pipeline uses."""

    def alloc_host(self, nbytes: int): ...
    def host_array(self, buf, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray: ...
    def free_host(self, buf) -> None: ...
    def alloc_device(self, nbytes: int) -> int: ...
    def free_device(self, ptr: int) -> None: ...
    def create_stream(self): ...
    def destroy_stream(self, stream) -> None: ...
    def create_event(self): ...
    def destroy_event(self, event) -> None: ...
    def copy_h2d(self, dst: int, src, nbytes: int, stream) -> None: ...
    def copy_d2h(self, dst, src: int, nbytes: int, stream) -> None: ...
    def record(self, event, stream) -> None: ...
    def wait(self, stream, event) -> None: ...
    def synchronize(self, event) -> None: ...
    def synchronize_stream(self, stream) -> None: ...


@dataclass(frozen=True)
class TensorPlan:
    """Shape and dtype of one model input or output; ``nbytes`` sizes its buffers."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


@dataclass
class Slot:
    index: int
    host_in: object
    host_out: object
    dev_in: int
    dev_out: int
    in_done: object
    compute_done: object
    out_done: object


class FramePipeline:
    """Keeps ``depth`` frames in flight on ``device``; ``compute(slot, stream)`` enqueues the model.

    ``run(batches)`` yields outputs in input order. ``depth`` ≥ 2 overlaps the
    copies of one frame with the compute of its neighbours.
    """

    def __init__(self, device: Device, compute: Callable[[Slot, object], None], *, inp: TensorPlan,
                 out: TensorPlan, depth: int = 3) -> None:
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self.device, self.compute, self.inp, self.out, self.depth = device, compute, inp, out, depth
        d = device
        self.copy_in, self.compute_stream, self.copy_out = d.create_stream(), d.create_stream(), d.create_stream()
        self.slots: list[Slot] = []
        try:
            for i in range(depth):
                self.slots.append(Slot(i, d.alloc_host(inp.nbytes), d.alloc_host(out.nbytes),
                                       d.alloc_device(inp.nbytes), d.alloc_device(out.nbytes),
                                       d.create_event(), d.create_event(), d.create_event()))
        except BaseException:
            self.close()
            raise
        self.submitted = 0
        self.closed = False

    def _launch(self, slot: Slot, batch: np.ndarray) -> None:
        d = self.device
        if batch.shape != self.inp.shape or batch.dtype != self.inp.dtype:
            raise ValueError(f"pipeline planned for {np.dtype(self.inp.dtype)} {self.inp.shape}, got {batch.dtype} {batch.shape}")
        np.copyto(d.host_array(slot.host_in, self.inp.dtype, self.inp.shape), batch)
        d.copy_h2d(slot.dev_in, slot.host_in, self.inp.nbytes, self.copy_in)
        d.record(slot.in_done, self.copy_in)
        d.wait(self.compute_stream, slot.in_done)
        self.compute(slot, self.compute_stream)
        d.record(slot.compute_done, self.compute_stream)
        d.wait(self.copy_out, slot.compute_done)
        d.copy_d2h(slot.host_out, slot.dev_out, self.out.nbytes, self.copy_out)
        d.record(slot.out_done, self.copy_out)
        self.submitted += 1

    def _take(self, slot: Slot) -> np.ndarray:
        self.device.synchronize(slot.out_done)  # the only host wait: this frame's result, and the slot's reuse
        return self.device.host_array(slot.host_out, self.out.dtype, self.out.shape).copy()

    def run(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Outputs of ``batches`` in order, ``depth`` of them in flight at a time."""
        pending: deque[Slot] = deque()
        for batch in batches:
            if len(pending) == self.depth:
                yield self._take(pending.popleft())
            slot = self.slots[self.submitted % self.depth]
            self._launch(slot, batch)
            pending.append(slot)
        while pending:
            yield self._take(pending.popleft())

    def close(self) -> None:
        d = self.device
        # never free memory a queued copy or kernel still uses (also after an error mid-launch)
        for st in (getattr(self, "copy_in", None), getattr(self, "compute_stream", None), getattr(self, "copy_out", None)):
            if st is not None:
                d.synchronize_stream(st)
        for s in self.slots:
            d.free_host(s.host_in)
            d.free_host(s.host_out)
            d.free_device(s.dev_in)
            d.free_device(s.dev_out)
            for e in (s.in_done, s.compute_done, s.out_done):
                d.destroy_event(e)
        self.slots = []
        for st in (getattr(self, "copy_in", None), getattr(self, "compute_stream", None), getattr(self, "copy_out", None)):
            if st is not None:
                d.destroy_stream(st)
        self.copy_in = self.compute_stream = self.copy_out = None
        self.closed = True

    def __enter__(self) -> "FramePipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CudaDevice:
    """``Device`` on cuda-python's runtime API: pinned host memory, device memory, streams, events."""

    def __init__(self, rt=None) -> None:
        self.rt = rt or cudart()

    def alloc_host(self, nbytes: int):
        return check_cuda(self.rt.cudaMallocHost(nbytes), "cudaMallocHost")

    def host_array(self, buf, dtype, shape) -> np.ndarray:
        import ctypes

        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        raw = (ctypes.c_ubyte * n).from_address(int(buf))
        return np.frombuffer(raw, dtype=dtype).reshape(shape)

    def free_host(self, buf) -> None:
        check_cuda(self.rt.cudaFreeHost(buf), "cudaFreeHost")

    def alloc_device(self, nbytes: int) -> int:
        return int(check_cuda(self.rt.cudaMalloc(nbytes), "cudaMalloc"))

    def free_device(self, ptr: int) -> None:
        check_cuda(self.rt.cudaFree(ptr), "cudaFree")

    def create_stream(self):
        return check_cuda(self.rt.cudaStreamCreateWithFlags(self.rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")

    def destroy_stream(self, stream) -> None:
        check_cuda(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def create_event(self):
        return check_cuda(self.rt.cudaEventCreateWithFlags(self.rt.cudaEventDisableTiming), "cudaEventCreateWithFlags")

    def destroy_event(self, event) -> None:
        check_cuda(self.rt.cudaEventDestroy(event), "cudaEventDestroy")

    def copy_h2d(self, dst: int, src, nbytes: int, stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        check_cuda(self.rt.cudaMemcpyAsync(dst, src, nbytes, kind, stream), "cudaMemcpyAsync (host to device)")

    def copy_d2h(self, dst, src: int, nbytes: int, stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check_cuda(self.rt.cudaMemcpyAsync(dst, src, nbytes, kind, stream), "cudaMemcpyAsync (device to host)")

    def record(self, event, stream) -> None:
        check_cuda(self.rt.cudaEventRecord(event, stream), "cudaEventRecord")

    def wait(self, stream, event) -> None:
        check_cuda(self.rt.cudaStreamWaitEvent(stream, event, 0), "cudaStreamWaitEvent")

    def synchronize(self, event) -> None:
        check_cuda(self.rt.cudaEventSynchronize(event), "cudaEventSynchronize")

    def synchronize_stream(self, stream) -> None:
        check_cuda(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
