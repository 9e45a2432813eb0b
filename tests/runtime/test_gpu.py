"""The GPU path on a real NVIDIA GPU (skipped elsewhere; benchmarks/run_gpu_suite.sh runs them)."""

import numpy as np
import pytest

from sr_deploy.runtime.pipeline import CudaDevice, FramePipeline, TensorPlan


@pytest.mark.needs_gpu
def test_pipeline_on_cuda_python_device():
    """FramePipeline on real streams and events: a device-to-device copy as the 'model'."""
    pytest.importorskip("cuda")
    dev = CudaDevice()
    rt = dev.rt
    plan = TensorPlan((1, 8, 8, 3), np.uint8)

    def compute(slot, stream):
        kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        assert int(rt.cudaMemcpyAsync(slot.dev_out, slot.dev_in, plan.nbytes, kind, stream)[0]) == 0

    frames = [np.full(plan.shape, i, np.uint8) for i in range(10)]
    with FramePipeline(dev, compute, inp=plan, out=plan, depth=3) as pipe:
        outs = list(pipe.run(frames))
    assert [int(o[0, 0, 0, 0]) for o in outs] == list(range(10))


@pytest.mark.needs_gpu
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_torch_cuda_stream_matches_cpu(tiny_ckpt, cuda_graph):
    from sr_deploy.export.onnx_export import descriptor_for
    from sr_deploy.models.checkpoint import load_checkpoint
    from sr_deploy.runtime.torch_runner import TorchRunner

    model, _ = load_checkpoint(tiny_ckpt)
    desc = descriptor_for(model, name="tiny")
    px = [np.random.default_rng(i).integers(0, 256, (2, 24, 40, 3), dtype=np.uint8) for i in range(5)]
    with TorchRunner(model, desc, device="cpu") as cpu:
        ref = [cpu.infer_u8(b) for b in px]
    gpu = TorchRunner(model, desc, precision="fp16", device="cuda", cuda_graph=cuda_graph)
    assert gpu.on_gpu
    with gpu:
        outs = list(gpu.stream_u8(iter(px)))
    for r, o in zip(ref, outs, strict=True):
        assert o.shape == r.shape and np.abs(o.astype(int) - r.astype(int)).max() <= 3  # fp16


@pytest.mark.needs_gpu
def test_torch_cuda_stream_meets_size_requirements():
    """The pipelined CUDA path pads to the architecture's size multiple and minimum like infer_u8 does."""
    from sr_deploy.descriptor import ModelDescriptor
    from sr_deploy.runtime.torch_runner import TorchRunner
    from tests.models.test_community import _Strict

    desc = ModelDescriptor(name="s", scale=2, size_multiple=8, size_minimum=16)
    px = [np.random.default_rng(i).integers(0, 256, (2, 9 + i, 13, 3), dtype=np.uint8) for i in range(4)]
    with TorchRunner(_Strict(), desc, device="cuda") as gpu:
        outs = list(gpu.stream_u8(iter(px)))
    for x, y in zip(px, outs, strict=True):
        assert np.array_equal(y, x.repeat(2, axis=1).repeat(2, axis=2))


@pytest.mark.needs_gpu
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_torch_cuda_stream_averages_on_the_device(tiny_ckpt, cuda_graph):
    """--outscale 1 with a x2 model on CUDA: the resampling module (clamp, 2x2 average) runs on the device,
    pipelined and graph-captured; x1 bytes come back, within a level of the CPU's pooled fp32 output."""
    from sr_deploy.export.onnx_export import descriptor_for
    from sr_deploy.models.checkpoint import load_checkpoint
    from sr_deploy.runtime.torch_runner import TorchRunner

    model, _ = load_checkpoint(tiny_ckpt)
    desc = descriptor_for(model, name="tiny")
    px = [np.random.default_rng(i).integers(0, 256, (2, 24, 40, 3), dtype=np.uint8) for i in range(5)]
    cpu = TorchRunner(model, desc, device="cpu")
    assert cpu.resample_output(1)
    with cpu:
        ref = [cpu.infer_u8(b) for b in px]
    gpu = TorchRunner(model, desc, precision="fp16", device="cuda", cuda_graph=cuda_graph)
    assert gpu.resample_output(1) and gpu.scale == 1
    with gpu:
        outs = list(gpu.stream_u8(iter(px)))
    for x, r, o in zip(px, ref, outs, strict=True):
        assert o.shape == r.shape == x.shape and np.abs(o.astype(int) - r.astype(int)).max() <= 3  # fp16
