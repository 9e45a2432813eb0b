import os

import pytest
import torch
from torch import nn

from sr_deploy.errors import InputError, ModelError
from sr_deploy.models import Discriminator, SRResNet, SRResNetConfig, load_checkpoint, save_checkpoint
from tests.conftest import tiny_model


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("upsampler", ["pixelshuffle", "deconv", "nearest_conv"])
def test_output_is_scale_times_input(scale, upsampler):
    m = SRResNet(scale=scale, num_blocks=1, channels=8, upsampler=upsampler).eval()
    assert m(torch.rand(2, 3, 11, 13)).shape == (2, 3, 11 * scale, 13 * scale)


def test_paper_layout():
    m = SRResNet()
    assert m.head[0].kernel_size == (9, 9) and m.tail.kernel_size == (9, 9)
    assert len(m.trunk) == 16
    block = m.trunk[0].body
    assert [type(l) for l in block] == [nn.Conv2d, nn.BatchNorm2d, nn.PReLU, nn.Conv2d, nn.BatchNorm2d]
    shuffles = [l for l in m.upsample if isinstance(l, nn.PixelShuffle)]
    assert [s.upscale_factor for s in shuffles] == [2, 2]
    assert [l.upscale_factor for l in SRResNet(scale=3).upsample if isinstance(l, nn.PixelShuffle)] == [3]


def test_bad_config():
    with pytest.raises(ValueError):
        SRResNetConfig(scale=5)


def test_discriminator_shape():
    d = Discriminator()
    convs = [m for m in d.features.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8 and convs[-1].out_channels == 512
    assert [c.stride[0] for c in convs] == [1, 2] * 4
    assert d(torch.rand(2, 3, 96, 96)).shape == (2, 1)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_checkpoint_roundtrip(tmp_path, suffix):
    m = tiny_model(3)
    p = save_checkpoint(tmp_path / f"m{suffix}", m)
    m2, payload = load_checkpoint(p)
    assert payload["arch"] == m.config.to_dict()
    umask = os.umask(0)
    os.umask(umask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask  # a file's usual permissions, not a private 0600
    x = torch.rand(1, 3, 9, 9)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(1)}, bad)
    with pytest.raises(ModelError, match="not a srdeploy checkpoint"):
        load_checkpoint(bad)
    junk = tmp_path / "y.pt"
    junk.write_bytes(b"garbage")
    with pytest.raises(ModelError):
        load_checkpoint(junk)
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_export_ready_moves_tail_before_the_last_shuffle(scale):
    """The polyphase tail is the same function, borders included, with negative PReLU slopes."""
    torch.manual_seed(scale)
    m = SRResNet(scale=scale, num_blocks=1, channels=8).eval()
    for mod in m.modules():
        if isinstance(mod, nn.PReLU):
            nn.init.uniform_(mod.weight, -0.7, 0.7)
    fast = m.export_ready()
    last_conv = fast.tail[0]
    r = 3 if scale == 3 else 2
    assert isinstance(fast.tail[1], nn.PixelShuffle) and fast.tail[1].upscale_factor == r
    assert last_conv.out_channels == 3 * r * r and last_conv.in_channels == 8 * r * r
    assert last_conv.kernel_size == (5, 5)  # a 9x9 kernel reaches 2 low-res pixels at r = 2 or 3
    x = torch.rand(2, 3, 7, 10)
    with torch.no_grad():
        assert torch.allclose(fast(x), m(x), atol=1e-5)


def test_polyphase_single_slope_prelu_and_bad_kernel():
    from sr_deploy.models.srresnet import _polyphase_conv, _repeat_prelu

    torch.manual_seed(0)
    act = nn.PReLU()
    nn.init.constant_(act.weight, -0.3)
    conv = nn.Conv2d(4, 3, 7, padding=3)
    x = torch.randn(1, 16, 5, 6)
    with torch.no_grad():
        ref = conv(act(nn.functional.pixel_shuffle(x, 2)))
        got = nn.functional.pixel_shuffle(_polyphase_conv(conv, 2)(_repeat_prelu(act, 4)(x)), 2)
    assert torch.allclose(got, ref, atol=1e-5)
    with pytest.raises(ValueError):
        _polyphase_conv(nn.Conv2d(4, 3, 4, padding=2), 2)


@pytest.mark.parametrize("field, value", [("num_blocks", 3_000_000), ("channels", 10_000_000), ("num_blocks", 1e7),
                                          ("num_blocks", "16"), ("scale", 0), ("num_blocks", 0), ("channels", -8)])
def test_hyperparameters_beyond_the_weights_are_refused_before_anything_is_built(tmp_path, field, value):
    import json

    from safetensors.torch import save_file

    from sr_deploy.errors import ModelError
    from sr_deploy.models.checkpoint import load_checkpoint
    from tests.conftest import tiny_model

    model = tiny_model(2)
    arch = {**model.config.to_dict(), field: value}
    path = tmp_path / "lying.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"format": "srdeploy-checkpoint", "arch": json.dumps(arch)})
    with pytest.raises(ModelError, match=field):
        load_checkpoint(path)


def _lying_checkpoint(path, state, arch):
    import json

    from safetensors.torch import save_file

    save_file(state, str(path), metadata={"format": "srdeploy-checkpoint", "arch": json.dumps(arch)})
    return path


def test_every_hyperparameter_is_bounded_whatever_order_the_file_lists_them_in(tmp_path):
    """A hostile file may put the names that are not numbers (arch, upsampler, mean, std) first: the check
    goes on past them to every number."""

    model = tiny_model(2)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    good = model.config.to_dict()
    arch = {"arch": "srresnet", "upsampler": "pixelshuffle", **{k: v for k, v in good.items() if k not in ("arch", "upsampler")}}
    load_checkpoint(_lying_checkpoint(tmp_path / "ordered.safetensors", state, arch))  # the order alone is fine
    with pytest.raises(ModelError, match="num_blocks = 500,"):  # beyond the weights, yet cheap to build unchecked
        load_checkpoint(_lying_checkpoint(tmp_path / "lying.safetensors", state, {**arch, "num_blocks": 500}))


def test_the_smallest_architectures_and_the_light_model_s_lists_pass_the_bounds(tmp_path):
    from sr_deploy.models.light import LightSR, LightSRConfig

    one = SRResNet(scale=2, num_blocks=1, channels=8)  # num_blocks = 1: the least whole number allowed
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "one.safetensors", one))
    assert loaded.config.num_blocks == 1
    light = LightSR(LightSRConfig(scale=2, channels=8, mid=4, depth=1))  # mean and std are lists, not counts
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "light.safetensors", light))
    assert loaded.config.depth == 1 and tuple(loaded.config.mean) == tuple(light.config.mean)


def test_a_checkpoint_without_weights_names_what_is_missing(tmp_path):
    from sr_deploy.models.checkpoint import bound_architecture

    arch = tiny_model(2).config.to_dict()
    with pytest.raises(ModelError, match="its architecture or weights are missing"):
        load_checkpoint(_lying_checkpoint(tmp_path / "empty.safetensors", {}, arch))
    with pytest.raises(ModelError, match="its architecture or weights are missing"):
        bound_architecture(["srresnet"], {"w": torch.zeros(2)}, "list")
    with pytest.raises(ModelError, match="its weights hold entries that are not tensors"):
        bound_architecture(arch, {"w": torch.zeros(2), "step": 3}, "mixed")
