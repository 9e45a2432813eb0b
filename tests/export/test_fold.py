import torch
from torch import nn

from sr_deploy.export import fold_batchnorm
from tests.conftest import tiny_model


def test_folded_equals_unfolded():
    m = tiny_model(4)
    f = fold_batchnorm(m)
    assert not any(isinstance(x, nn.BatchNorm2d) for x in f.modules())
    assert any(isinstance(x, nn.BatchNorm2d) for x in m.modules()), "the original is left untouched"
    x = torch.rand(2, 3, 13, 17)
    with torch.no_grad():
        assert torch.allclose(m(x), f(x), atol=1e-5)
