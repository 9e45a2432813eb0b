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
