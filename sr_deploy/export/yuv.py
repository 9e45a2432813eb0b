"""Colour in the graph: a model form that takes and returns 4:2:0 YUV bytes (yuv420p, NV12, and their
10-bit forms yuv420p10le and P010) with the source's matrix and range.

A decoder hands out 4:2:0 YUV and an encoder takes it; the RGB path converts on the host at both ends,
the second time at the output's size (a 4K frame), and moves 3 bytes a pixel each way. Here the frame
crosses as it was decoded (1.5 bytes a pixel, or 3 at 10 bits where the RGB path moved 6) and the graph
does the conversions on the device: chroma upsampled (bilinear, centre-sited), the matrix, the model,
the inverse matrix, chroma averaged over 2x2, rounded into the output's code range. 10-bit sources stay
10-bit all the way (the uint8 RGB graph would round them to 8 bits).

Layouts, as FFmpeg names them and ``VideoFrame.to_ndarray`` / ``from_ndarray`` lay them out: one
``(3H/2, W)`` array per frame, the Y plane's H rows, then

    yuv420p, yuv420p10le   U plane then V plane (H/2 x W/2 each), flat; 10-bit codes in the low bits
    nv12, p010le           U and V interleaved (H/2 rows of W); P010 keeps its 10-bit codes in the high bits

Written by hand: the conversions are a few lines of arithmetic that must run inside the model's graph
(on the GPU, in TensorRT or torch), where swscale and OpenCV cannot go.
"""

from __future__ import annotations

import torch
from torch import nn

# the layouts, matrices and ranges are plain data in yuv_spec.py: a run decides its frame plan without PyTorch
from sr_deploy.export.yuv_spec import MATRICES, YuvSpec


def _rgb_from_ycc(kr: float, kb: float) -> torch.Tensor:
    kg = 1.0 - kr - kb
    return torch.tensor([[1.0, 0.0, 2 * (1 - kr)],
                         [1.0, -2 * kb * (1 - kb) / kg, -2 * kr * (1 - kr) / kg],
                         [1.0, 2 * (1 - kb), 0.0]], dtype=torch.float32)


def _ycc_from_rgb(kr: float, kb: float) -> torch.Tensor:
    kg = 1.0 - kr - kb
    return torch.tensor([[kr, kg, kb],
                         [-kr / (2 * (1 - kb)), -kg / (2 * (1 - kb)), 0.5],
                         [0.5, -kg / (2 * (1 - kr)), -kb / (2 * (1 - kr))]], dtype=torch.float32)


class YuvToRgb(nn.Module):
    """``(N, 3H/2, W)`` codes of ``spec`` → ``(N, 3, H, W)`` float RGB in [0, 1]."""

    def __init__(self, spec: YuvSpec) -> None:
        super().__init__()
        self.spec = spec
        y0, ys, c0, cs = spec.levels()
        div = float(1 << spec.shift)
        # code → normalized: (code / div - offset) / span, one scale and bias per channel
        self.register_buffer("scale", torch.tensor([1 / (div * ys), 1 / (div * cs), 1 / (div * cs)]).view(1, 3, 1, 1))
        self.register_buffer("bias", torch.tensor([-y0 / ys, -c0 / cs, -c0 / cs]).view(1, 3, 1, 1))
        self.register_buffer("matrix", _rgb_from_ycc(*MATRICES[spec.matrix]).view(3, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, rows, w = x.shape
        h = rows * 2 // 3
        x = x.float()
        y = x[:, :h].unsqueeze(1)
        c = x[:, h:]
        if self.spec.planar:
            c = c.reshape(n, 2, h // 2, w // 2)
        else:
            c = c.reshape(n, h // 2, w // 2, 2).permute(0, 3, 1, 2)
        c = nn.functional.interpolate(c, size=(h, w), mode="bilinear", align_corners=False)
        ycc = torch.cat((y, c), 1) * self.scale + self.bias
        return nn.functional.conv2d(ycc, self.matrix).clamp(0.0, 1.0)


class RgbToYuv(nn.Module):
    """``(N, 3, H, W)`` float RGB in [0, 1] → ``(N, 3H/2, W)`` codes of ``spec`` (H, W even)."""

    def __init__(self, spec: YuvSpec) -> None:
        super().__init__()
        self.spec = spec
        y0, ys, c0, cs = spec.levels()
        self.register_buffer("matrix", _ycc_from_rgb(*MATRICES[spec.matrix]).view(3, 3, 1, 1))
        self.register_buffer("span", torch.tensor([ys, cs, cs]).view(1, 3, 1, 1))
        self.register_buffer("offset", torch.tensor([y0, c0, c0]).view(1, 3, 1, 1))
        self.top = float((1 << spec.bits) - 1)
        self.mul = float(1 << spec.shift)
        self.dtype = torch.uint8 if spec.bits == 8 else torch.uint16

    def _codes(self, v: torch.Tensor) -> torch.Tensor:
        v = v.round().clamp(0.0, self.top)
        return (v * self.mul if self.mul != 1 else v).to(self.dtype)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        n, _, h, w = rgb.shape
        ycc = nn.functional.conv2d(rgb.float().clamp(0.0, 1.0), self.matrix) * self.span + self.offset
        y = self._codes(ycc[:, 0]).reshape(n, h * w)
        c = nn.functional.avg_pool2d(ycc[:, 1:], 2)  # chroma of each 2x2 block: their mean
        if self.spec.planar:
            c = self._codes(c).reshape(n, h * w // 2)
        else:
            c = self._codes(c).permute(0, 2, 3, 1).reshape(n, h * w // 2)
        return torch.cat((y, c), 1).reshape(n, h * 3 // 2, w)


class YuvModel(nn.Module):
    """A float RGB model (NCHW, [0, 1]) between the two conversions: YUV codes in, YUV codes out. The model
    runs under whatever autocast surrounds it; the conversions stay in fp32."""

    def __init__(self, net: nn.Module, inp: YuvSpec, out: YuvSpec) -> None:
        super().__init__()
        self.to_rgb, self.net, self.to_yuv = YuvToRgb(inp), net, RgbToYuv(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            rgb = self.to_rgb(x)
        y = self.net(rgb.contiguous(memory_format=torch.channels_last))
        with torch.autocast(x.device.type, enabled=False):
            return self.to_yuv(y.float())


YUV_FORM = 1  # the version of yuv_onnx's graph, in its cache name (a newer srdeploy never reuses an older form)


def _exported(module: nn.Module, example: torch.Tensor, dims: dict, opset: int):
    """``module`` as an ONNX model with dynamic ``dims`` (its one input and output named x and y)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(module, (example,), dynamo=True, dynamic_shapes=(dims,), opset_version=opset,
                                 input_names=["x"], output_names=["y"], verbose=False)
    return prog.model_proto


def yuv_onnx(onnx_path, inp: YuvSpec, out: YuvSpec):
    """The YUV-I/O form of a float-I/O srdeploy ONNX (fp32, fp16 or int8 inside): ``YuvToRgb(inp)``, the
    model, ``RgbToYuv(out)``, the two conversions exported from the same torch modules the torch runner
    runs (one implementation), joined by onnx.compose; written once into the cache, keyed by the source's
    hash and both specs. Input and output are ``(N, 3H/2, W)`` uint8 (uint16 at 10 bits)."""
    from pathlib import Path

    import onnx
    from onnx import compose

    from sr_deploy.export.onnx_file import load_onnx
    from sr_deploy.export.pixels import _set_descriptor, descriptor_of
    from sr_deploy.fsutil import atomic_path, cache_root, is_sealed, seal, sha256_file

    src = Path(onnx_path)
    tag = f"{inp.pix_fmt}-{out.pix_fmt}-m{inp.matrix}{'f' if inp.full_range else 'l'}"
    path = cache_root() / "onnx" / f"{src.name[:-5]}-{sha256_file(src)[:16]}.yuv-{tag}v{YUV_FORM}.onnx"
    if is_sealed(path):
        return path
    model = load_onnx(src, external_data=True)
    desc = descriptor_of(model)
    if desc.io != "float" or (desc.in_channels, desc.out_channels) != (3, 3) or desc.value_range != (0.0, 1.0):
        from sr_deploy.errors import ModelError

        raise ModelError(f"{src.name}: the YUV graph wraps a float-I/O RGB model in [0, 1] (this one: {desc.io}, "
                         f"{desc.in_channels}->{desc.out_channels} channels, range {desc.value_range})")
    def opset_of(m) -> int:
        return next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))

    opset = opset_of(model)
    dtype = torch.uint8 if inp.bits == 8 else torch.uint16
    pre = _exported(YuvToRgb(inp), torch.zeros(1, 24, 32, dtype=dtype), {0: "n", 1: "rows", 2: "w"}, opset)
    post = _exported(RgbToYuv(out), torch.zeros(1, 3, 16, 32), {0: "n", 2: "h", 3: "w"}, opset)
    # onnx.compose joins graphs of one opset and IR version: the model's
    pre, post = (onnx.version_converter.convert_version(m, opset) if opset_of(m) != opset else m
                 for m in (pre, post))
    for m in (pre, post):
        m.ir_version = model.ir_version
    body = compose.add_prefix(model, "m_")
    joined = compose.merge_models(compose.add_prefix(pre, "pre_"), body,
                                  io_map=[("pre_y", body.graph.input[0].name)])
    joined = compose.merge_models(joined, compose.add_prefix(post, "post_"),
                                  io_map=[(body.graph.output[0].name, "post_x")])
    del joined.metadata_props[:]
    _set_descriptor(joined, desc.with_(io=f"yuv-{tag}"))
    with atomic_path(path, overwrite=True) as tmp:
        onnx.save(joined, str(tmp))
    seal(path)
    return path
