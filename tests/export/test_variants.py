"""Every generator variant folds, exports with dynamic shapes and keeps parity, like the default."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from sr_deploy.export import export_onnx, fold_batchnorm
from sr_deploy.models.light import LightSR
from sr_deploy.models.srresnet import SRResNet
from tests.conftest import randomize_bn


def _parity(model, tmp_path, scale):
    rep = export_onnx(model, tmp_path / "m.onnx", name="m")
    assert rep.max_abs_diff <= 1e-4
    proto = onnx.load(str(rep.path))
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)
    sess = ort.InferenceSession(str(rep.path), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, 19, 26)
    with torch.no_grad():
        ref = model(x).numpy()
    got = sess.run(None, {"input": x.numpy()})[0]
    assert got.shape == (1, 3, 19 * scale, 26 * scale)
    assert np.abs(got - ref).max() <= 1e-4


@pytest.mark.parametrize("upsampler", ["pixelshuffle", "deconv", "nearest_conv"])
@pytest.mark.parametrize("scale", [3, 4])
def test_upsampler_variants(upsampler, scale, tmp_path):
    torch.manual_seed(0)
    m = randomize_bn(SRResNet(scale=scale, num_blocks=2, channels=8, upsampler=upsampler))
    with torch.no_grad():
        x = torch.rand(1, 3, 11, 13)
        assert torch.allclose(fold_batchnorm(m)(x), m(x), atol=1e-5)
    _parity(m, tmp_path, scale)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_light_model_folds_standardisation(scale, tmp_path):
    torch.manual_seed(0)
    m = LightSR(scale=scale, channels=16, mid=8, depth=2).eval()
    folded = m.export_ready()
    x = torch.rand(2, 3, 10, 12)
    with torch.no_grad():
        assert torch.allclose(folded(x), m(x), atol=1e-5)
    assert not folded.standardise
    _parity(m, tmp_path, scale)
    names = {n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    assert "Sub" not in names and "Div" not in names, "standardisation folded away"


def test_light_model_default_size():
    # 5x5 3->64, 64->32, three 32->32, 32->48 (all 3x3), biases included
    assert sum(p.numel() for p in LightSR().parameters()) == 4864 + 18464 + 3 * 9248 + 13872


def test_images_smaller_than_the_light_models_reflect_padding_are_padded_not_refused(tmp_path):
    # the 5x5 reflect-padded first conv needs 3 pixels a side; ONNX Runtime, OpenVINO and torch each
    # refused a 1x1 or 2x5 input in their own words
    from sr_deploy.export.onnx_export import descriptor_for, read_descriptor
    from sr_deploy.runtime.select import make_runner, resolve_model
    from sr_deploy.runtime.torch_runner import TorchRunner

    torch.manual_seed(0)
    m = LightSR(scale=2, channels=16, mid=8, depth=2).eval()
    path = export_onnx(m, tmp_path / "light.onnx", name="light").path
    assert read_descriptor(path).size_minimum == 3
    # an ONNX exported before its descriptor said so: the minimum is read from the graph's Pad
    proto = onnx.load(str(path))
    entry = next(e for e in proto.metadata_props if e.key == "srdeploy")
    entry.value = entry.value.replace('"size_minimum": 3', '"size_minimum": 0')
    old = tmp_path / "old.onnx"
    onnx.save(proto, str(old))
    assert '"size_minimum": 0' in entry.value and read_descriptor(old).size_minimum == 3
    runners = [make_runner(resolve_model(old), backend, "fp32")[0] for backend in ("onnxruntime", "openvino")]
    runners.append(TorchRunner(m, descriptor_for(m, name="light")))
    for h, w in [(1, 1), (2, 5), (5, 1)]:
        px = np.random.default_rng(h * w).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
        outs = []
        for runner in runners:
            with runner:
                outs.append(runner.infer_u8(px))
        for o in outs:
            assert o.shape == (1, 2 * h, 2 * w, 3)
            assert np.abs(o.astype(int) - outs[0].astype(int)).max() <= 1
