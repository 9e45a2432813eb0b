import numpy as np
import pytest

from sr_deploy.errors import InputError
from sr_deploy.runtime.select import available_backends, make_runner, resolve_model


def _runners(tiny_ckpt, tiny_onnx):
    src_ckpt, src_onnx = resolve_model(str(tiny_ckpt)), resolve_model(str(tiny_onnx))
    out = [make_runner(src_ckpt, "torch")[0], make_runner(src_onnx, "onnxruntime")[0]]
    if "openvino" in available_backends():
        out.append(make_runner(src_onnx, "openvino")[0])
    return out


def test_every_runner_agrees_with_torch(tiny_ckpt, tiny_onnx):
    x = np.random.default_rng(0).random((2, 3, 15, 21), dtype=np.float32)
    runners = _runners(tiny_ckpt, tiny_onnx)
    outs = {}
    for r in runners:
        with r:
            assert r.input_spec().scale == 2
            outs[r.backend] = r.infer(x)
        assert not r.active
    ref = outs.pop("torch")
    assert ref.shape == (2, 3, 30, 42)
    for name, y in outs.items():
        assert np.abs(y - ref).max() < 1e-4, name


def test_unknown_backend_and_model(tiny_ckpt):
    with pytest.raises(InputError, match="unknown backend"):
        make_runner(resolve_model(str(tiny_ckpt)), "cuda-magic")
    with pytest.raises(InputError, match="no shipped model named"):
        resolve_model("nonexistent_model")
    with pytest.raises(InputError, match="not found"):
        resolve_model("missing/model.onnx")


def test_checkpoint_runs_on_onnxruntime_via_cached_export(tiny_ckpt):
    r, _ = make_runner(resolve_model(str(tiny_ckpt)), "onnxruntime")
    with r:
        assert r.infer(np.zeros((1, 3, 9, 9), np.float32)).shape == (1, 3, 18, 18)
