"""ncnn models (.param + .bin) as PyTorch modules: the model zoos of Real-ESRGAN-ncnn-vulkan and video2x.

The .param file is a layer graph and the .bin holds each layer's weights in the graph's order. Rather
than map every zoo's graph onto an architecture by hand, the graph itself is run: each ncnn layer type
srdeploy supports becomes the matching torch operation, so any graph built from those layers (Real-
ESRGAN's RRDBNet and SRVGGNetCompact, including the animevideov3 x2/x3 files whose x4 network ends in a
bicubic downscale) exports to ONNX like srdeploy's own generators. A layer type outside that set, a
.bin that is shorter or longer than the graph's weights, or a graph that is not image-to-image is
refused in one line that names the layer.

Written by hand because no library reads ncnn's format into PyTorch (pnnx goes the other way, ncnn's
Python package runs graphs but does not expose their weights). The .bin layout follows ncnn's
``ModelBinFromDataReader::load``: a weight blob starts with a 4-byte tag (fp16, int8, fp32, a 256-entry
quantization table, or raw fp32), biases and slopes are raw fp32.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sr_deploy.errors import ModelError

MAGIC = "7767517"
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_FP32 = 0x0002C056
MAX_LAYERS = 100_000
MAX_CHANNELS = 65_536


@dataclass(frozen=True)
class Layer:
    kind: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict = field(default_factory=dict)

    def p(self, key: int, default=None):
        return self.params.get(key, default)


def parse_param(text: str, origin: str = "model.param") -> list[Layer]:
    """The layers of an ncnn .param text; one ModelError line when it is not one."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0] != MAGIC:
        raise ModelError(f"{origin}: not an ncnn .param file (its first line is not the magic {MAGIC})")
    try:
        layer_count, _blob_count = (int(v) for v in lines[1].split())
    except (IndexError, ValueError):
        raise ModelError(f"{origin}: the second line must hold the layer and blob counts") from None
    if not 0 < layer_count <= MAX_LAYERS or layer_count != len(lines) - 2:
        raise ModelError(f"{origin}: declares {layer_count} layers but holds {len(lines) - 2}")
    layers = []
    for ln in lines[2:]:
        parts = ln.split()
        try:
            kind, name, n_in, n_out = parts[0], parts[1], int(parts[2]), int(parts[3])
            ins, outs = tuple(parts[4:4 + n_in]), tuple(parts[4 + n_in:4 + n_in + n_out])
            if len(ins) != n_in or len(outs) != n_out:
                raise ValueError
            params = _parse_params(parts[4 + n_in + n_out:])
        except (IndexError, ValueError):
            raise ModelError(f"{origin}: cannot read the layer line {ln[:80]!r}") from None
        layers.append(Layer(kind, name, ins, outs, params))
    return layers


def _parse_params(items: list[str]) -> dict:
    params: dict = {}
    for item in items:
        key, _, value = item.partition("=")
        k = int(key)
        if k <= -23300:  # an array parameter: -23300 - id, then count,v1,v2,...
            vals = value.split(",")
            count = int(vals[0])
            if count != len(vals) - 1:
                raise ValueError
            params[-23300 - k] = [_number(v) for v in vals[1:]]
        else:
            params[k] = _number(value)
    return params


def _number(text: str):
    return float(text) if re.search(r"[.eE]", text) else int(text)


class BlobReader:
    """Reads the .bin in the graph's order and counts every byte."""

    def __init__(self, data: bytes, origin: str) -> None:
        self.data, self.pos, self.origin = data, 0, origin

    def _take(self, n: int, layer: Layer) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ModelError(f"{self.origin}: the .bin ends inside layer {layer.name} ({layer.kind}): it is shorter "
                             f"than the .param's weights; the two files do not belong together")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def raw(self, count: int, layer: Layer) -> np.ndarray:
        return np.frombuffer(self._take(4 * count, layer), dtype="<f4").astype(np.float32)

    def tagged(self, count: int, layer: Layer) -> tuple[np.ndarray, str]:
        """A weight blob with its storage tag; returns the float values and the storage kind."""
        head = self._take(4, layer)
        tag = int.from_bytes(head, "little")
        if tag == TAG_FP16:
            vals = np.frombuffer(self._take(_align4(2 * count), layer)[:2 * count], dtype="<f2")
            return vals.astype(np.float32), "fp16"
        if tag == TAG_INT8:
            vals = np.frombuffer(self._take(_align4(count), layer)[:count], dtype=np.int8)
            return vals.astype(np.float32), "int8"
        if tag == TAG_FP32 or tag == 0:
            return self.raw(count, layer), "fp32"
        if sum(head) != 0:  # ncnn's quantized form: a 256-entry table, then one byte per weight
            table = self.raw(256, layer)
            index = np.frombuffer(self._take(_align4(count), layer)[:count], dtype=np.uint8)
            return table[index], "table"
        raise ModelError(f"{self.origin}: unknown weight storage tag {tag:#010x} in layer {layer.name}")

    def finish(self) -> None:
        left = len(self.data) - self.pos
        if left:
            raise ModelError(f"{self.origin}: the .bin holds {left} bytes more than the .param's weights; "
                             f"the two files do not belong together")


def _align4(n: int) -> int:
    return (n + 3) // 4 * 4


class NcnnGraph(nn.Module):
    """An ncnn graph run layer by layer in torch (NCHW; ncnn's channel axis 0 is torch's 1)."""

    def __init__(self, layers: list[Layer], weights: dict[str, dict[str, torch.Tensor]], storage: set[str]) -> None:
        super().__init__()
        self.layers = layers
        self.storage = storage
        self.keys: set[str] = set()
        for lname, tensors in weights.items():
            for tname, t in tensors.items():
                self.register_buffer(_key(lname, tname), t)  # buffers: inference weights, exported as constants
                self.keys.add(_key(lname, tname))
        self.input_name = next(o for lay in layers if lay.kind == "Input" for o in lay.outputs)
        self.output_name = _graph_output(layers)
        # each blob is dropped after its last reader: a deep graph (x4plus: 1782 blobs) would otherwise hold
        # every activation of the frame at once
        last = {i: k for k, lay in enumerate(layers) for i in lay.inputs}
        self.free_after = [[b for b in set(lay.inputs) if last[b] == k and b != self.output_name]
                           for k, lay in enumerate(layers)]

    def w(self, layer: Layer, what: str) -> torch.Tensor | None:
        key = _key(layer.name, what)
        return getattr(self, key) if key in self.keys else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blobs = {self.input_name: x}
        for k, lay in enumerate(self.layers):
            if lay.kind == "Input":
                continue
            args = [blobs[i] for i in lay.inputs]
            for b in self.free_after[k]:
                del blobs[b]
            out = _RUN[lay.kind](self, lay, args)
            if lay.kind == "Split":
                for o in lay.outputs:
                    blobs[o] = out
            else:
                blobs[lay.outputs[0]] = out
        return blobs[self.output_name]


def _key(layer: str, what: str) -> str:
    # attribute names cannot hold dots; a hash keeps any layer name valid and unique
    return "l" + hashlib.sha1(layer.encode()).hexdigest()[:16] + "_" + what


def _graph_output(layers: list[Layer]) -> str:
    consumed = {i for lay in layers for i in lay.inputs}
    produced = [o for lay in layers for o in lay.outputs if o not in consumed]
    if len(produced) != 1:
        raise ModelError(f"the graph has {len(produced)} outputs ({', '.join(produced[:4])}); srdeploy runs "
                         f"image-to-image graphs with one output")
    return produced[0]


# ---- the layer types srdeploy runs: (load weights from the .bin, run in torch) ----

def _conv_load(lay: Layer, rd: BlobReader, storage: set[str]) -> dict[str, torch.Tensor]:
    out_c, kw = int(lay.p(0, 0)), int(lay.p(1, 0))
    kh = int(lay.p(11, kw))
    size = int(lay.p(6, 0))
    groups = int(lay.p(7, 1)) if lay.kind == "ConvolutionDepthWise" else 1
    if lay.p(19, 0):
        raise ModelError(f"layer {lay.name} ({lay.kind}) takes its weights at run time; srdeploy needs them in the .bin")
    if not (0 < out_c <= MAX_CHANNELS and 0 < kw <= 64 and 0 < kh <= 64 and size > 0) or size % (out_c * kw * kh):
        raise ModelError(f"layer {lay.name} ({lay.kind}): weight size {size} does not fit {out_c} outputs of {kh}x{kw}")
    in_c = size // (out_c * kw * kh) * groups
    vals, kind = rd.tagged(size, lay)
    storage.add(kind)
    tensors = {}
    bias = rd.raw(out_c, lay) if lay.p(5, 0) else None
    scale_term = int(lay.p(8, 0))
    if kind == "int8":
        if not scale_term:
            raise ModelError(f"layer {lay.name} ({lay.kind}): int8 weights without their scales")
        wscale = rd.raw(out_c if groups == 1 else groups, lay)
        rd.raw(1 if groups == 1 else groups, lay)  # the input's activation scale: srdeploy runs activations in float
        per = np.repeat(wscale, size // wscale.size)
        vals = vals / np.where(per == 0, 1.0, per)
    elif scale_term:
        raise ModelError(f"layer {lay.name} ({lay.kind}) declares int8 scales for float weights")
    if lay.kind == "Deconvolution":
        # ncnn keeps a deconvolution's weights as (out, in, kh, kw); torch's conv_transpose wants (in, out, ...)
        tensors["weight"] = torch.from_numpy(vals.reshape(out_c, in_c, kh, kw).transpose(1, 0, 2, 3).copy())
    else:
        tensors["weight"] = torch.from_numpy(vals.reshape(out_c, in_c // groups, kh, kw).copy())
    if bias is not None:
        tensors["bias"] = torch.from_numpy(bias.copy())
    return tensors


def _pads(lay: Layer) -> tuple[int, int, int, int]:
    left = int(lay.p(4, 0))
    top = int(lay.p(14, left))
    right = int(lay.p(15, left))
    bottom = int(lay.p(16, top))
    if min(left, top, right, bottom) < 0:
        raise ModelError(f"layer {lay.name} ({lay.kind}): 'same' padding (-233/-234) is not supported")
    return left, right, top, bottom


def _activate(lay: Layer, x: torch.Tensor) -> torch.Tensor:
    kind, args = int(lay.p(9, 0)), lay.p(10, [])
    if kind == 0:
        return x
    if kind == 1:
        return F.relu(x)
    if kind == 2:
        return F.leaky_relu(x, float(args[0]))
    if kind == 3:
        return torch.clamp(x, float(args[0]), float(args[1]))
    if kind == 4:
        return torch.sigmoid(x)
    raise ModelError(f"layer {lay.name}: activation type {kind} is not supported")


def _conv_run(g: NcnnGraph, lay: Layer, args):
    kw = int(lay.p(1))
    kh = int(lay.p(11, kw))
    dw = int(lay.p(2, 1))
    dh = int(lay.p(12, dw))
    sw = int(lay.p(3, 1))
    sh = int(lay.p(13, sw))
    left, right, top, bottom = _pads(lay)
    x = args[0]
    groups = int(lay.p(7, 1)) if lay.kind == "ConvolutionDepthWise" else 1
    if lay.kind == "Deconvolution":
        y = F.conv_transpose2d(x, g.w(lay, "weight"), g.w(lay, "bias"), stride=(sh, sw), dilation=(dh, dw))
        oph, opw = int(lay.p(19, 0)), int(lay.p(18, 0))
        if oph or opw:
            y = F.pad(y, (0, opw, 0, oph))
        h, w = y.shape[-2], y.shape[-1]
        y = y[..., top:h - bottom, left:w - right]
    else:
        if left or right or top or bottom:
            x = F.pad(x, (left, right, top, bottom), value=float(lay.p(18, 0.0)))
        y = F.conv2d(x, g.w(lay, "weight"), g.w(lay, "bias"), stride=(sh, sw), dilation=(dh, dw), groups=groups)
    return _activate(lay, y)


def _prelu_load(lay: Layer, rd: BlobReader, storage: set[str]) -> dict[str, torch.Tensor]:
    n = int(lay.p(0, 0))
    if not 0 < n <= MAX_CHANNELS:
        raise ModelError(f"layer {lay.name} (PReLU): {n} slopes")
    return {"slope": torch.from_numpy(rd.raw(n, lay).copy())}


def _prelu_run(g: NcnnGraph, lay: Layer, args):
    return F.prelu(args[0], g.w(lay, "slope"))


def _relu_run(g: NcnnGraph, lay: Layer, args):
    slope = float(lay.p(0, 0.0))
    return F.leaky_relu(args[0], slope) if slope else F.relu(args[0])


def _eltwise_run(g: NcnnGraph, lay: Layer, args):
    op, coeffs = int(lay.p(0, 1)), lay.p(1, [])
    if op == 0:
        out = args[0]
        for a in args[1:]:
            out = out * a
        return out
    if op == 1:
        c = [float(v) for v in coeffs] or [1.0] * len(args)
        out = args[0] * c[0] if c[0] != 1.0 else args[0]
        for a, k in zip(args[1:], c[1:]):
            out = out + (a * k if k != 1.0 else a)
        return out
    if op == 2:
        out = args[0]
        for a in args[1:]:
            out = torch.maximum(out, a)
        return out
    raise ModelError(f"layer {lay.name} (Eltwise): operation {op} is not supported")


_BINARY = {0: torch.add, 1: torch.sub, 2: torch.mul, 3: torch.div, 4: torch.maximum, 5: torch.minimum,
           7: lambda a, b: b - a, 8: lambda a, b: b / a}


def _per_channel(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ncnn's broadcast of a per-channel vector (a pooled and InnerProduct'ed (N, C) blob) over an image."""
    if a.dim() == 4 and b.dim() == 2:
        b = b[:, :, None, None]
    elif a.dim() == 2 and b.dim() == 4:
        a = a[:, :, None, None]
    return a, b


def _binary_run(g: NcnnGraph, lay: Layer, args):
    op = int(lay.p(0, 0))
    if op not in _BINARY:
        raise ModelError(f"layer {lay.name} (BinaryOp): operation {op} is not supported")
    if lay.p(1, 0):
        return _BINARY[op](args[0], torch.tensor(float(lay.p(2, 0.0)), dtype=args[0].dtype))
    return _BINARY[op](*_per_channel(args[0], args[1]))


def _pooling_run(g: NcnnGraph, lay: Layer, args):
    """Global pooling only (the squeeze-and-excitation blocks of Real-CUGAN and waifu2x CUNet): (N, C)."""
    kind = int(lay.p(0, 0))
    if not lay.p(4, 0) or kind not in (0, 1):
        raise ModelError(f"layer {lay.name} (Pooling): only global max or average pooling is supported")
    x = args[0]
    return x.mean(dim=(2, 3)) if kind == 1 else x.amax(dim=(2, 3))


def _innerproduct_load(lay: Layer, rd: BlobReader, storage: set[str]) -> dict[str, torch.Tensor]:
    out_n, size = int(lay.p(0, 0)), int(lay.p(2, 0))
    if lay.p(8, 0):
        raise ModelError(f"layer {lay.name} (InnerProduct): int8 weights are not supported")
    if not (0 < out_n <= MAX_CHANNELS and size > 0) or size % out_n:
        raise ModelError(f"layer {lay.name} (InnerProduct): weight size {size} does not fit {out_n} outputs")
    vals, kind = rd.tagged(size, lay)
    storage.add(kind)
    tensors = {"weight": torch.from_numpy(vals.reshape(out_n, size // out_n).copy())}
    if lay.p(1, 0):
        tensors["bias"] = torch.from_numpy(rd.raw(out_n, lay).copy())
    return tensors


def _innerproduct_run(g: NcnnGraph, lay: Layer, args):
    x = args[0].flatten(1)
    w = g.w(lay, "weight")
    if x.shape[1] != w.shape[1]:
        raise ModelError(f"layer {lay.name} (InnerProduct): takes {w.shape[1]} values, gets {x.shape[1]}")
    return _activate(lay, F.linear(x, w, g.w(lay, "bias")))


def _scale_load(lay: Layer, rd: BlobReader, storage: set[str]) -> dict[str, torch.Tensor]:
    n = int(lay.p(0, 0))
    if n == -233:  # the scales come from a second input blob
        return {}
    if not 0 < n <= MAX_CHANNELS:
        raise ModelError(f"layer {lay.name} (Scale): {n} scales")
    tensors = {"scale": torch.from_numpy(rd.raw(n, lay).copy())}
    if lay.p(1, 0):
        tensors["bias"] = torch.from_numpy(rd.raw(n, lay).copy())
    return tensors


def _scale_run(g: NcnnGraph, lay: Layer, args):
    if int(lay.p(0, 0)) == -233:
        if len(args) != 2:
            raise ModelError(f"layer {lay.name} (Scale): takes its scales from a second input, and has none")
        a, b = _per_channel(args[0], args[1])
        return a * b
    y = args[0] * g.w(lay, "scale")[None, :, None, None]
    bias = g.w(lay, "bias")
    return y if bias is None else y + bias[None, :, None, None]


_NCNN_AXIS = {0: 1, 1: 2, 2: 3, -3: 1, -2: 2, -1: 3}  # ncnn's (c, h, w) axes of an image blob, in NCHW


def _crop_run(g: NcnnGraph, lay: Layer, args):
    """Both of ncnn's forms: starts/ends/axes arrays (pnnx's slices), and offsets with an output size or a
    reference blob whose size the output takes (waifu2x CUNet's skip connections)."""
    x = args[0]
    if lay.p(9) is not None:
        starts, ends = lay.p(9, []), lay.p(10, [])
        axes = lay.p(11, list(range(len(starts))))
        if not (len(starts) == len(ends) == len(axes)) or any(a not in _NCNN_AXIS for a in axes):
            raise ModelError(f"layer {lay.name} (Crop): starts, ends and axes do not describe an image crop")
        index = [slice(None)] * 4
        for a, lo, hi in zip(axes, starts, ends):
            index[_NCNN_AXIS[a]] = slice(int(lo), None if int(hi) >= 2**30 else int(hi))
        return x[tuple(index)]
    woff, hoff, coff = int(lay.p(0, 0)), int(lay.p(1, 0)), int(lay.p(2, 0))
    if len(args) == 2:
        ref = args[1]
        outc, outh, outw = ref.shape[1], ref.shape[-2], ref.shape[-1]
    else:
        outw, outh, outc = int(lay.p(3, 0)), int(lay.p(4, 0)), int(lay.p(5, 0))
        w2, h2, c2 = int(lay.p(6, 0)), int(lay.p(7, 0)), int(lay.p(8, 0))
        outw = outw or x.shape[-1] - woff - w2
        outh = outh or x.shape[-2] - hoff - h2
        outc = outc or x.shape[1] - coff - c2
    return x[:, coff:coff + outc, hoff:hoff + outh, woff:woff + outw]


def _concat_run(g: NcnnGraph, lay: Layer, args):
    axis = int(lay.p(0, 0))
    if axis not in (0, -3):
        raise ModelError(f"layer {lay.name} (Concat): only the channel axis is supported, not {axis}")
    return torch.cat(args, dim=1)


def _pixelshuffle_run(g: NcnnGraph, lay: Layer, args):
    r = int(lay.p(0, 1))
    if int(lay.p(1, 0)) != 0:
        raise ModelError(f"layer {lay.name} (PixelShuffle): mode {lay.p(1)} (DCR) is not supported")
    return F.pixel_shuffle(args[0], r)


def _interp_run(g: NcnnGraph, lay: Layer, args):
    mode = {1: "nearest", 2: "bilinear", 3: "bicubic"}.get(int(lay.p(0, 0)))
    if mode is None or lay.p(5, 0):
        raise ModelError(f"layer {lay.name} (Interp): resize type {lay.p(0)} is not supported")
    oh, ow = int(lay.p(3, 0)), int(lay.p(4, 0))
    kwargs = {} if mode == "nearest" else {"align_corners": bool(lay.p(6, 0))}
    if oh and ow:
        return F.interpolate(args[0], size=(oh, ow), mode=mode, **kwargs)
    sh, sw = float(lay.p(1, 1.0)), float(lay.p(2, 1.0))
    return F.interpolate(args[0], scale_factor=(sh, sw), mode=mode, **kwargs)


def _no_weights(lay: Layer, rd: BlobReader, storage: set[str]) -> dict[str, torch.Tensor]:
    return {}


def _split_run(g: NcnnGraph, lay: Layer, args):
    return args[0]


_LOAD = {"Convolution": _conv_load, "ConvolutionDepthWise": _conv_load, "Deconvolution": _conv_load,
         "PReLU": _prelu_load, "InnerProduct": _innerproduct_load, "Scale": _scale_load}
_RUN = {"Convolution": _conv_run, "ConvolutionDepthWise": _conv_run, "Deconvolution": _conv_run,
        "PReLU": _prelu_run, "ReLU": _relu_run, "Eltwise": _eltwise_run, "BinaryOp": _binary_run,
        "Concat": _concat_run, "PixelShuffle": _pixelshuffle_run, "Interp": _interp_run, "Split": _split_run,
        "Pooling": _pooling_run, "InnerProduct": _innerproduct_run, "Scale": _scale_run, "Crop": _crop_run}
SUPPORTED = ("Input",) + tuple(_RUN)


def _arch_name(layers: list[Layer]) -> str:
    kinds = [lay.kind for lay in layers]
    if "Concat" in kinds and kinds.count("Eltwise") >= 3:
        return "RRDBNet"
    if "PReLU" in kinds and "PixelShuffle" in kinds:
        return "SRVGGNetCompact"
    if "Pooling" in kinds and "InnerProduct" in kinds and "Crop" in kinds:
        return "waifu2x CUNet" if "Scale" in kinds else "RealCUGAN"
    if set(kinds) <= {"Input", "Convolution", "Deconvolution"} and "Deconvolution" in kinds:
        return "waifu2x UpConv7"
    return "ncnn graph"


@dataclass(frozen=True)
class NcnnConfig:
    """What srdeploy's descriptor needs, measured on the graph (scale from a probe, not from a file name)."""

    arch_name: str
    scale: int
    in_channels: int = 3
    out_channels: int = 3
    weights: str = "fp32"  # how the .bin stored the weights: fp16 | fp32 | int8 | table (mixed: comma-joined)
    size_multiple: int = 1
    size_minimum: int = 0
    half_safe: bool = True
    bf16_safe: bool = True
    arch: str = "ncnn"
    # graphs that consume a border (Real-CUGAN, waifu2x: unpadded convolutions) take an input their host
    # programs pad by ``pad`` on every side (reflect), bottom and right further to a multiple of ``align``;
    # the output's top-left scale*h x scale*w is the image. Measured by the probe, not read from file names
    pad: int = 0
    align: int = 1
    # Real-CUGAN's x4 graphs leave out the input, nearest-upsampled, that realcugan-ncnn-vulkan adds
    # to their output on the host (realcugan.cpp, its x4 post-processing)
    add_nearest_input: bool = False

    def to_dict(self) -> dict:
        return {"arch": self.arch, "arch_name": self.arch_name, "scale": self.scale,
                "in_channels": self.in_channels, "out_channels": self.out_channels, "weights": self.weights}


class NcnnSR(nn.Module):
    """An ncnn super-resolution graph with srdeploy's config; takes and returns RGB in [0, 1]."""

    def __init__(self, graph: NcnnGraph, config: NcnnConfig) -> None:
        super().__init__()
        self.net = graph  # not "graph": an exported GraphModule's own attribute of that name would shadow it
        self.config = config

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if not cfg.pad:
            return self.net(x)
        h, w = x.shape[-2], x.shape[-1]
        p, a = cfg.pad, cfg.align
        # reflect, as the host programs pad (ncnn's copy_make_border type 2 is torch's reflect), the bottom
        # and right further to the alignment; reflecting needs more pixels than it pads, so an image
        # smaller than pad + align is first grown to that by repeating its edge (a no-op otherwise: one
        # graph for every size, no branch to bake in at export)
        least = p + a
        x0 = F.pad(x, (0, torch.sym_max(w, least) - w, 0, torch.sym_max(h, least) - h), mode="replicate")
        h0, w0 = x0.shape[-2], x0.shape[-1]
        eh, ew = (h0 + a - 1) // a * a - h0, (w0 + a - 1) // a * a - w0
        xp = F.pad(x0, (p, p + ew, p, p + eh), mode="reflect")
        y = self.net(xp)[..., : h * cfg.scale, : w * cfg.scale]
        if cfg.add_nearest_input:
            y = y + F.interpolate(x, scale_factor=cfg.scale, mode="nearest")
        return y


def load_ncnn(param: str | Path) -> NcnnSR:
    """The ncnn model ``param`` (with ``.bin`` beside it) as a torch module, checked on a probe."""
    param = Path(param)
    binf = param.with_suffix(".bin")
    if not param.is_file():
        raise ModelError(f"{param}: ncnn .param file not found")
    if not binf.is_file():
        raise ModelError(f"{param}: its weights {binf.name} are not beside it (an ncnn model is a .param and a .bin)")
    try:
        text = param.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ModelError(f"{param}: not an ncnn .param file (not text; binary .param.bin files are not supported)") from None
    layers = parse_param(text, str(param))
    bad = next((lay for lay in layers if lay.kind not in SUPPORTED), None)
    if bad is not None:
        what = " (a classifier's layer)" if bad.kind in ("Softmax", "ArgMax") else ""
        raise ModelError(f"{param}: layer {bad.name} is of type {bad.kind}{what}, which srdeploy does not run "
                         f"(it runs {', '.join(SUPPORTED)})")
    inputs = [lay for lay in layers if lay.kind == "Input"]
    if len(inputs) != 1:
        raise ModelError(f"{param}: the graph has {len(inputs)} inputs; srdeploy runs graphs with one image input")
    known = {o for lay in layers for o in lay.outputs}
    missing = next(((lay, i) for lay in layers for i in lay.inputs if i not in known), None)
    if missing:
        raise ModelError(f"{param}: layer {missing[0].name} reads blob {missing[1]!r}, which no layer makes")
    reader = BlobReader(binf.read_bytes(), str(binf))
    storage: set[str] = set()
    weights = {}
    for lay in layers:
        if lay.kind in _LOAD:
            weights[lay.name] = _LOAD[lay.kind](lay, reader, storage)
    reader.finish()
    try:
        graph = NcnnGraph(layers, weights, storage).eval()
    except ModelError as exc:
        raise ModelError(f"{param}: {exc}") from None
    in_c = _input_channels(layers, weights)
    arch = _arch_name(layers)
    pad, align = _border(graph, in_c, param)
    if pad:
        scale, out_c = _probe_padded(graph, in_c, pad, align, param)
    else:
        scale, out_c = _probe(graph, in_c, param)
    cfg = NcnnConfig(arch_name=arch, scale=scale, in_channels=in_c, out_channels=out_c,
                     weights=",".join(sorted(storage)) or "none", pad=pad, align=align,
                     add_nearest_input=arch == "RealCUGAN" and scale == 4)
    if in_c != 3 or out_c != 3:
        raise ModelError(f"{param}: the graph takes {in_c} channels and returns {out_c}; srdeploy runs RGB (3) models")
    return NcnnSR(graph, cfg).eval()


def _input_channels(layers: list[Layer], weights: dict) -> int:
    graph_in = next(o for lay in layers if lay.kind == "Input" for o in lay.outputs)
    aliases = {graph_in}
    for lay in layers:  # the first convolution that reads the input (through Splits) says its channels
        if lay.kind == "Split" and lay.inputs[0] in aliases:
            aliases.update(lay.outputs)
        elif lay.kind in _LOAD and lay.inputs[0] in aliases and "weight" in weights.get(lay.name, {}):
            w = weights[lay.name]["weight"]
            return int(w.shape[0] if lay.kind == "Deconvolution" else w.shape[1])
    return 3


def _run_shape(graph: NcnnGraph, in_c: int, h: int, w: int) -> tuple[int, int, int] | None:
    try:
        with torch.inference_mode():
            y = graph(torch.rand(1, in_c, h, w, generator=torch.Generator().manual_seed(0)))
    except (RuntimeError, ModelError):
        return None
    return (int(y.shape[1]), int(y.shape[-2]), int(y.shape[-1])) if y.dim() == 4 else None


def _border(graph: NcnnGraph, in_c: int, origin: Path) -> tuple[int, int]:
    """(pad, align) of a graph that consumes a border: its output on an N-pixel side is scale*N - 2*scale*pad
    (Real-CUGAN x2: 2N - 72, pad 18; waifu2x UpConv7: 2N - 28, pad 7), measured on two sizes; align is the
    least multiple its unpadded side must be (the U-Nets' downsamplings). (0, 1) for a graph that keeps
    the size whole, or one too small to tell."""
    a, b = _run_shape(graph, in_c, 64, 72), _run_shape(graph, in_c, 72, 80)
    if a is None or b is None or (b[1] - a[1]) % 8 or b[1] == a[1]:
        return 0, 1
    s = (b[1] - a[1]) // 8
    consumed = s * 64 - a[1]
    if consumed <= 0 or consumed % (2 * s) or s * 72 - a[2] != consumed:
        return 0, 1
    pad = consumed // (2 * s)
    for align in (1, 2, 4, 8):
        sizes = [(align * k, align * (k + 1)) for k in (13, 17)]
        got = [(_run_shape(graph, in_c, h + 2 * pad, w + 2 * pad), (s * h, s * w)) for h, w in sizes]
        if all(shape is not None and shape[1:] == want for shape, want in got):
            return pad, align
    raise ModelError(f"{origin}: the graph consumes a {pad}-pixel border but no alignment of its input up to 8 "
                     f"gives a whole-number upscale")


def _probe_padded(graph: NcnnGraph, in_c: int, pad: int, align: int, origin: Path) -> tuple[int, int]:
    got = _run_shape(graph, in_c, align * 13 + 2 * pad, align * 17 + 2 * pad)
    if got is None:
        raise ModelError(f"{origin}: the graph does not run on a padded {align * 13}x{align * 17} image")
    return got[1] // (align * 13), got[0]


def _probe(graph: NcnnGraph, in_c: int, origin: Path) -> tuple[int, int]:
    """The scale and channels the graph really returns, on two input sizes."""
    scales = set()
    out_c = 0
    for h, w in ((16, 24), (20, 12)):
        try:
            with torch.inference_mode():
                y = graph(torch.rand(1, in_c, h, w, generator=torch.Generator().manual_seed(0)))
        except ModelError as exc:
            raise ModelError(f"{origin}: {exc}") from None
        except RuntimeError as exc:
            raise ModelError(f"{origin}: the graph does not run on a {h}x{w} image "
                             f"({str(exc).splitlines()[0][:120]})") from None
        if y.dim() != 4:
            raise ModelError(f"{origin}: the graph returns {tuple(y.shape[1:])} values, not an image (a classifier's "
                             f"graph?); srdeploy runs super-resolution graphs")
        if y.shape[-2] % h or y.shape[-1] % w or y.shape[-2] // h != y.shape[-1] // w:
            raise ModelError(f"{origin}: a {h}x{w} input gives {tuple(y.shape[1:])}, not a whole-number upscale "
                             f"of the image; srdeploy runs super-resolution graphs")
        scales.add(y.shape[-2] // h)
        out_c = int(y.shape[1])
    if len(scales) != 1:
        raise ModelError(f"{origin}: the graph's scale depends on the input size ({sorted(scales)})")
    return scales.pop(), out_c
