"""Community architectures through spandrel: built with random weights from spandrel's own classes, saved
as a user would (.pth / .safetensors), exported, checked against torch in ONNX Runtime, and run on an
odd-sized image and a short clip."""

from __future__ import annotations

import pickle
import warnings

import av
import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sr_deploy.cli import app
from sr_deploy.errors import ModelError
from sr_deploy.models.checkpoint import load_checkpoint
from tests.conftest import make_clip, pattern_image

try:
    from sr_deploy.models.community import import_spandrel

    import_spandrel()
except ModelError:
    pytest.skip("spandrel is not installed (see README: community models)", allow_module_level=True)

STATIC = (32, 40)  # the fixed size for architectures that cannot export dynamic height/width


def _nets():
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.HAT import HAT
    from spandrel.architectures.OmniSR import OmniSR
    from spandrel.architectures.SPAN import SPAN
    from spandrel.architectures.SwinIR import SwinIR

    return {  # name: (module, spandrel's name, scale, dynamic H/W export expected)
        "esrgan": (lambda: ESRGAN(in_nc=3, out_nc=3, num_filters=16, num_blocks=1, scale=4), "ESRGAN", 4, True),
        "compact": (lambda: Compact(num_in_ch=3, num_out_ch=3, num_feat=16, num_conv=4, upscale=4),
                    "RealESRGAN Compact", 4, True),
        "span": (lambda: SPAN(num_in_ch=3, num_out_ch=3, feature_channels=16, upscale=4), "SPAN", 4, True),
        "swinir": (lambda: SwinIR(upscale=2, img_size=16, window_size=8, embed_dim=24, depths=[2], num_heads=[2],
                                  mlp_ratio=2, upsampler="pixelshuffledirect"), "SwinIR", 2, False),
        "omnisr": (lambda: OmniSR(num_in_ch=3, num_out_ch=3, num_feat=16, res_num=1, up_scale=4, window_size=8),
                   "OmniSR", 4, False),
        "hat": (lambda: HAT(upscale=2, img_size=16, window_size=8, embed_dim=24, depths=[2], num_heads=[2],
                            mlp_ratio=2, upsampler="pixelshuffle", compress_ratio=3, squeeze_factor=4),
                "HAT", 2, False),
    }


def _save(net: torch.nn.Module, path):
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"params_ema": state}, path)  # the BasicSR layout most community .pth files have


def _cli(*args):
    r = CliRunner().invoke(app, [*map(str, args)])
    return r.exit_code, r.output


@pytest.mark.slow
@pytest.mark.parametrize("name", list(_nets()))
def test_export_parity_and_run(name, tmp_path):
    make, arch, scale, dynamic = _nets()[name]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = make().eval()
    suffix = ".safetensors" if name in ("compact", "swinir", "hat") else ".pth"
    weights = tmp_path / f"{name}{suffix}"
    _save(net, weights)

    model, _ = load_checkpoint(weights)
    assert model.config.arch_name == arch and model.scale == scale

    onnx_path = tmp_path / f"{name}.onnx"
    if dynamic or name == "swinir":  # the refusal of a dynamic export is checked on one architecture: each
        code, out = _cli("export", weights, "-o", onnx_path)  # try is two exporters (half a minute or more)
    if not dynamic:  # one line naming the way out, then the fixed-size export
        if name == "swinir":
            assert code != 0 and out.startswith("error:") and "--shape HxW" in out and not onnx_path.exists(), out
        code, out = _cli("export", weights, "-o", onnx_path, "--shape", f"{STATIC[0]}x{STATIC[1]}")
    assert code == 0, out
    assert arch in out

    # parity: the graph in ONNX Runtime against the torch module, in 8-bit levels
    from sr_deploy.runtime.select import make_runner, resolve_model

    runner, _ = make_runner(resolve_model(onnx_path), "onnxruntime")
    h, w = STATIC if not dynamic else (19, 27)
    x = pattern_image(h, w, seed=1)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255)[0].permute(1, 2, 0).numpy()
    ref = np.clip(np.rint(ref * 255), 0, 255).astype(np.int16)
    with runner:
        got = runner.infer_u8(x[None])[0].astype(np.int16)
    assert got.shape == (h * scale, w * scale, 3)
    assert np.abs(got - ref).max() <= 1

    # run: an odd-sized image (larger than a fixed-size graph: tiled) and a short clip
    img = tmp_path / "odd.png"
    cv2.imwrite(str(img), pattern_image(37, 45, seed=2))
    code, out = _cli("run", img, "--model", onnx_path, "-o", tmp_path / "odd_up.png")
    assert code == 0, out
    up = cv2.imread(str(tmp_path / "odd_up.png"))
    assert up.shape == (37 * scale, 45 * scale, 3)
    assert np.abs(cv2.resize(up, (45, 37), interpolation=cv2.INTER_AREA).astype(int)
                  - pattern_image(37, 45, seed=2)[..., ::-1]).mean() < 128  # an image, not a blank

    if name == "swinir":  # the weights themselves: `auto` falls back to PyTorch, which takes any size
        code, out = _cli("run", img, "--model", weights, "-o", tmp_path / "odd_torch.png")
        assert code == 0, out
        assert cv2.imread(str(tmp_path / "odd_torch.png")).shape == (37 * scale, 45 * scale, 3)

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=3, size=(30, 22), audio=False)
    code, out = _cli("run", clip, "--model", onnx_path, "-o", tmp_path / "clip_up.mp4")
    assert code == 0, out
    with av.open(str(tmp_path / "clip_up.mp4")) as c:
        frames = [f for f in c.decode(video=0)]
    assert len(frames) == 3 and (frames[0].height, frames[0].width) == (22 * scale, 30 * scale)


class _Strict(torch.nn.Module):
    """Refuses inputs that are not a multiple of 8 and at least 16 pixels, like a window-attention net."""

    def forward(self, x):
        h, w = x.shape[-2:]
        if h % 8 or w % 8 or h < 16 or w < 16:
            raise RuntimeError(f"bad size {h}x{w}")
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")


def test_size_requirements_padded_in_the_graph():
    from sr_deploy.models.community import CommunityConfig, CommunitySR

    cfg = CommunityConfig(arch_name="strict", scale=2, in_channels=3, out_channels=3, size_multiple=8, size_minimum=16)
    model = CommunitySR(_Strict(), cfg)
    x = torch.rand(1, 3, 9, 21)
    y = model(x)
    assert y.shape == (1, 3, 18, 42)
    assert torch.equal(y, torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))  # crop, not resize


def test_size_requirements_padded_by_the_runner():
    """A graph without padding inside (TorchScript-exported, or a fixed size): the runner pads and crops."""
    from sr_deploy.descriptor import ModelDescriptor
    from sr_deploy.runtime.base import Runner

    class Strict(Runner):
        def _activate(self):
            pass

        def _infer(self, batch):
            with torch.inference_mode():
                return _Strict()(torch.from_numpy(batch)).numpy()

    for desc in (ModelDescriptor(name="s", scale=2, size_multiple=8, size_minimum=16),
                 ModelDescriptor(name="s", scale=2, fixed_hw=(16, 24), max_batch=1)):
        x = np.random.default_rng(0).integers(0, 256, (3, 9, 13, 3), dtype=np.uint8)
        with Strict(desc) as r:
            y = r.infer_u8(x)
        assert y.shape == (3, 18, 26, 3)
        assert np.array_equal(y, x.repeat(2, axis=1).repeat(2, axis=2))


def test_unknown_state_dict_is_one_line(tmp_path):
    path = tmp_path / "mystery.pth"
    torch.save({"encoder.w": torch.rand(4, 4), "decoder.w": torch.rand(4, 4)}, path)
    code, out = _cli("export", path, "-o", tmp_path / "m.onnx")
    assert code != 0 and len(out.splitlines()) == 1, out
    assert "no architecture spandrel knows" in out and "decoder.w" in out


def test_channel_changing_model_is_refused(tmp_path):
    from spandrel.architectures.Compact import Compact

    path = tmp_path / "gray_out.pth"
    torch.save(Compact(num_in_ch=3, num_out_ch=1, num_feat=8, num_conv=2, upscale=2).state_dict(), path)
    code, out = _cli("export", path, "-o", tmp_path / "m.onnx")
    assert code != 0 and len(out.splitlines()) == 1 and "srdeploy deploys models whose output has the input" in out, out


def test_pickle_payload_in_a_pth_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "RealESRGAN_x4plus.pth"
    path.write_bytes(pickle.dumps({"params_ema": Payload()}, protocol=2))
    code, out = _cli("export", path, "-o", tmp_path / "m.onnx")
    assert code != 0 and "Python objects beyond tensors" in out and len(out.splitlines()) == 1, out
    assert not marker.exists()


def test_truncated_safetensors_is_one_line(tmp_path):
    from spandrel.architectures.Compact import Compact

    full = tmp_path / "full.safetensors"
    _save(Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=2), full)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    code, out = _cli("export", cut, "-o", tmp_path / "m.onnx")
    assert code != 0 and out.startswith(f"error: {cut}") and len(out.splitlines()) == 1, out


def test_fp16_overflow_is_refused_by_the_gate(tmp_path):
    """Activations beyond fp16's 65504 (a community model trained without fp16 in mind): fp32 is exact and
    ONNX Runtime on the CPU even scores the fp16 graph well (it keeps intermediates in fp32), but a GPU
    would overflow; the gate refuses it, so `auto` can never pick it."""
    from spandrel.architectures.Compact import Compact

    from sr_deploy.errors import QualityGateError
    from sr_deploy.precision.convert import make_precision_onnx

    torch.manual_seed(0)
    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=2)
    with torch.no_grad():  # PReLU is positively homogeneous: x1e5 in, /1e5 out leaves fp32 unchanged
        first, second = net.body[0], net.body[2]
        first.weight.mul_(1e5)
        first.bias.mul_(1e5)
        second.weight.div_(1e5)
    _save(net, tmp_path / "big.pth")
    code, out = _cli("export", tmp_path / "big.pth", "-o", tmp_path / "big.onnx")
    assert code == 0, out
    with pytest.raises(QualityGateError):
        make_precision_onnx(tmp_path / "big.onnx", "fp16")
    assert not (tmp_path / "big.fp16.onnx").exists() and (tmp_path / "big.fp16.refused.json").exists()


@pytest.mark.slow
def test_dat_runs_through_pytorch(tmp_path):
    """DAT has no working ONNX (ONNX Runtime rejects its exported LayerNorm even at a fixed size): `auto`
    falls back to PyTorch, which runs an odd-sized image and a clip, matching the module.

    The refusal is taken from its memo, written here as a refused export writes it: trying both exporters on
    DAT takes over a minute of this suite, and the refusal itself (exporters, parity, memo) is tested on
    SwinIR above and in tests/export/test_onnx_export.py."""
    from spandrel.architectures.DAT import DAT

    from sr_deploy.export.onnx_export import DEFAULT_OPSET, refusal_memo
    from sr_deploy.fsutil import model_digest

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = DAT(upscale=2, img_size=16, embed_dim=24, split_size=[4, 8], depth=[2], num_heads=[2],
                  expansion_factor=2.0).eval()
    weights = tmp_path / "dat.pth"
    _save(net, weights)
    memo = refusal_memo(model_digest(weights), DEFAULT_OPSET)
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text("DAT cannot be exported with dynamic height and width (dynamo: ...; torchscript: ...)")
    img = tmp_path / "odd.png"
    x = pattern_image(37, 29, seed=3)
    cv2.imwrite(str(img), x[..., ::-1])
    code, out = _cli("run", img, "--model", weights, "-o", tmp_path / "up.png")
    assert code == 0, out
    assert "PyTorch, because this architecture has no dynamic-shape ONNX" in out
    model, _ = load_checkpoint(weights)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255)[0].permute(1, 2, 0).numpy()
    got = cv2.imread(str(tmp_path / "up.png"))[..., ::-1].astype(np.int16)
    assert got.shape == (74, 58, 3)
    assert np.abs(got - np.clip(np.rint(ref * 255), 0, 255).astype(np.int16)).max() <= 1
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=3, size=(30, 22), audio=False)
    code, out = _cli("run", clip, "--model", weights, "-o", tmp_path / "clip_up.mp4")
    assert code == 0, out
    with av.open(str(tmp_path / "clip_up.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 3


def test_spandrel_imports_for_the_users_own_code_in_a_fresh_interpreter():
    """`from sr_deploy import spandrel` works in a CPU install where `import spandrel` itself may not."""
    import subprocess
    import sys

    code = ("from sr_deploy import spandrel; import sys; "
            "print(spandrel.ModelLoader.__name__, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ModelLoader", "True"]
    light = subprocess.run([sys.executable, "-c", "import sr_deploy, sys; print('spandrel' in sys.modules)"],
                           capture_output=True, text=True)
    assert light.stdout.strip() == "False"
