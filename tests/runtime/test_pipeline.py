"""Scheduling of the GPU frame pipeline on a simulated device that runs queued work as late as events allow."""

import ctypes

import numpy as np
import pytest

from sr_deploy.runtime.pipeline import CudaDevice, CudaError, FramePipeline, TensorPlan, check_cuda
from tests.engine.standin import SimCudart, SimError


def _kernel(sim, inp: TensorPlan, out: TensorPlan, log: list):
    """A 'model' on the simulated device: nearest x2 upscale plus one, read when the stream gets there."""

    def compute(slot, stream):
        def run():
            x = np.frombuffer((ctypes.c_ubyte * inp.nbytes).from_address(slot.dev_in), np.uint8).reshape(inp.shape)
            y = np.ascontiguousarray((x.repeat(2, 1).repeat(2, 2) + 1).astype(np.uint8))
            ctypes.memmove(slot.dev_out, y.ctypes.data, y.nbytes)
            log.append(("kernel", slot.index))

        sim.enqueue(int(stream), run)

    return compute


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_outputs_in_order_and_buffers_never_reused_in_flight(depth):
    sim, log = SimCudart(), []
    inp, out = TensorPlan((1, 6, 5, 3), np.uint8), TensorPlan((1, 12, 10, 3), np.uint8)
    frames = [np.full(inp.shape, i * 7, np.uint8) + np.arange(90, dtype=np.uint8).reshape(inp.shape) for i in range(9)]
    with FramePipeline(CudaDevice(sim), _kernel(sim, inp, out, log), inp=inp, out=out, depth=depth) as pipe:
        got = list(pipe.run(iter(frames)))
    for f, g in zip(frames, got, strict=True):
        np.testing.assert_array_equal(g, f.repeat(2, 1).repeat(2, 2) + 1)
    # frames overlap: with depth d, up to d uploads are queued before the host waits on anything
    assert sim.max_pending_h2d == depth
    # slots are used round robin and every slot's memory, stream and event was released
    assert [s for _, s in log] == [i % depth for i in range(9)]
    assert sim.live == 0


def test_a_consumer_that_stops_early_frees_nothing_still_in_use():
    # the caller takes one result and leaves (an interrupt, an error downstream) with frames still queued:
    # close() must let the streams finish before it frees their buffers
    sim, log = SimCudart(), []
    inp, out = TensorPlan((1, 6, 5, 3), np.uint8), TensorPlan((1, 12, 10, 3), np.uint8)
    frames = [np.full(inp.shape, i, np.uint8) for i in range(9)]
    with FramePipeline(CudaDevice(sim), _kernel(sim, inp, out, log), inp=inp, out=out, depth=3) as pipe:
        for got in pipe.run(iter(frames)):
            break
    np.testing.assert_array_equal(got, frames[0].repeat(2, 1).repeat(2, 2) + 1)
    assert sim.live == 0 and not any(sim.streams.values())


def test_host_waits_only_for_results():
    sim, log = SimCudart(), []
    inp, out = TensorPlan((1, 2, 2, 3), np.uint8), TensorPlan((1, 4, 4, 3), np.uint8)
    synced = []
    dev = CudaDevice(sim)
    orig = dev.synchronize
    dev.synchronize = lambda e: (synced.append(e), orig(e))[1]
    with FramePipeline(dev, _kernel(sim, inp, out, log), inp=inp, out=out, depth=2) as pipe:
        list(pipe.run(np.zeros(inp.shape, np.uint8) for _ in range(5)))
        out_events = {s.out_done for s in pipe.slots}
    assert len(synced) == 5 and set(synced) <= out_events  # one wait per frame, on its download


def test_wrong_batch_and_cuda_errors():
    sim = SimCudart()
    inp, out = TensorPlan((1, 2, 2, 3), np.uint8), TensorPlan((1, 4, 4, 3), np.uint8)
    with FramePipeline(CudaDevice(sim), _kernel(sim, inp, out, []), inp=inp, out=out) as pipe:
        with pytest.raises(ValueError, match="planned for uint8"):
            list(pipe.run([np.zeros((1, 3, 3, 3), np.uint8)]))
    assert sim.live == 0
    with pytest.raises(CudaError, match="cudaMalloc failed"):
        check_cuda((SimError(2), 0), "cudaMalloc")
    assert check_cuda((SimError(0), 42)) == 42
