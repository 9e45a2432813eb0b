import numpy as np
import torch

from sr_deploy.models.discriminator import Discriminator
from sr_deploy.degradations import Degradation


def test_ten_block_discriminator_with_skip():
    d = Discriminator(blocks=10)
    convs = [m for m in d.features.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 10
    x = torch.rand(2, 3, 96, 96)
    assert d(x).shape == (2, 1)
    # the skip really feeds the output: zeroing blocks 8-10 leaves block 7's signal through the skip
    with torch.no_grad():
        for blk in list(d.features)[7:]:
            for p in blk.parameters():
                p.zero_()
        assert d.eval()(x).std() > 0


def test_degradation_changes_lr_and_is_reproducible():
    rng_img = np.random.default_rng(0)
    hr = (rng_img.random((48, 48, 3)) * 255).astype(np.uint8)
    deg = Degradation(blur_prob=1, noise_prob=1, jpeg_prob=1)
    a = deg.apply(hr, 4, np.random.default_rng(1))
    b = deg.apply(hr, 4, np.random.default_rng(1))
    assert a.shape == (12, 12, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    clean = Degradation(blur_prob=0, noise_prob=0, jpeg_prob=0).apply(hr, 4, np.random.default_rng(1))
    assert np.abs(a.astype(int) - clean.astype(int)).mean() > 1
