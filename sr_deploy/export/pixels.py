"""Pixels in the graph: wrap a float-I/O srdeploy ONNX so that it takes and returns uint8 RGB; and
area-resize its output to a whole factor below the model's scale (``--outscale`` 3, 2 or 1 of a x4 model).

The float model takes NCHW float32 in [0, 1]. The wrapped graph takes uint8
(NHWC by default, the layout decoders and image readers produce) and does the
transpose, the cast and the 1/255 scale inside; on the way out it scales by
255, rounds half to even (as ``np.rint`` does on the host path), clamps to
[0, 255] and casts back to uint8. So a runner moves bytes, a 1080p output
frame is 6.2 MB instead of 24.9 MB, and no backend spends a float pass on
the host. It is a plain ONNX rewrite, so it applies unchanged to the fp32,
fp16 (I/O kept fp32) and int8 Q/DQ variants and runs on every backend.
"""

from __future__ import annotations

import os
from pathlib import Path

from sr_deploy.descriptor import METADATA_KEY, ModelDescriptor
from sr_deploy.errors import ModelError

# nhwc-planar: NHWC in, planes (NCHW) out, for the CPU runners, which interleave the planes on the host
# (cv2.merge): the graph's own transpose of the output bytes cost OpenVINO 24 ms of a 244 ms light_x4 frame
# at 270x480 on a 2-core AVX2 EPYC, cv2.merge 1.1 ms (numpy's transpose 14.5)
LAYOUTS = ("nhwc", "nchw", "nhwc-planar")
PIXEL_INPUT, PIXEL_OUTPUT = "pixels", "pixels_out"
# The versions of the two rewrites, carried in their cache names: a cache file made by an older srdeploy's
# rewrite is never reused by a newer one (the cache outlives upgrades; the key is otherwise the source's hash)
PIXELS_FORM = 1  # wrap_uint8_io
RESAMPLE_FORM = 2  # resample_output (clamp, then AveragePool or Conv + DepthToSpace; 1: AveragePool only)


def io_name(layout: str) -> str:
    return f"uint8-{layout}"


def wrap_uint8_io(proto, *, layout: str = "nhwc"):
    """Return a copy of ``proto`` (a float-I/O srdeploy ONNX) with uint8 I/O in ``layout``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np

    if layout not in LAYOUTS:
        raise ModelError(f"pixel layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    desc = descriptor_of(proto)
    if desc.io != "float":
        raise ModelError(f"this ONNX already has {desc.io} I/O")
    if len(proto.graph.input) != 1 or len(proto.graph.output) != 1:
        raise ModelError("expected one input and one output in an srdeploy ONNX")
    src_in, src_out = proto.graph.input[0], proto.graph.output[0]
    if src_in.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ModelError("the model's input is not float32; wrap the float-I/O ONNX")
    lo, hi = desc.value_range
    if (lo, hi) != (0.0, 1.0):
        raise ModelError(f"uint8 I/O needs a [0, 1] model, this one's value range is {desc.value_range}")

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    inner_in, inner_out = src_in.name, src_out.name
    del g.input[:]
    del g.output[:]
    c_in, c_out = desc.in_channels, desc.out_channels
    nhwc_in, nhwc_out = layout in ("nhwc", "nhwc-planar"), layout == "nhwc"
    dims_in = ["batch", "height", "width", c_in] if nhwc_in else ["batch", c_in, "height", "width"]
    dims_out = (["batch", "out_height", "out_width", c_out] if nhwc_out
                else ["batch", c_out, "out_height", "out_width"])
    g.input.append(helper.make_tensor_value_info(PIXEL_INPUT, TensorProto.UINT8, dims_in))
    g.output.append(helper.make_tensor_value_info(PIXEL_OUTPUT, TensorProto.UINT8, dims_out))
    g.initializer.extend([numpy_helper.from_array(np.array(255.0, dtype=np.float32), "px_255"),
                          numpy_helper.from_array(np.array(0.0, dtype=np.float32), "px_0")])
    pre, post = [], []
    cur = PIXEL_INPUT
    if nhwc_in:  # transpose the bytes, not the floats: 4x less memory traffic
        pre.append(helper.make_node("Transpose", [cur], ["px_nchw"], perm=[0, 3, 1, 2], name="px_in_transpose"))
        cur = "px_nchw"
    pre.append(helper.make_node("Cast", [cur], ["px_float"], to=TensorProto.FLOAT, name="px_in_cast"))
    pre.append(helper.make_node("Div", ["px_float", "px_255"], [inner_in], name="px_in_scale"))
    post.append(helper.make_node("Mul", [inner_out, "px_255"], ["px_out_scaled"], name="px_out_scale"))
    post.append(helper.make_node("Round", ["px_out_scaled"], ["px_out_round"], name="px_out_round"))
    post.append(helper.make_node("Clip", ["px_out_round", "px_0", "px_255"], ["px_out_clip"], name="px_out_clip"))
    final = "px_out_nchw" if nhwc_out else PIXEL_OUTPUT
    post.append(helper.make_node("Cast", ["px_out_clip"], [final], to=TensorProto.UINT8, name="px_out_cast"))
    if nhwc_out:
        post.append(helper.make_node("Transpose", [final], [PIXEL_OUTPUT], perm=[0, 2, 3, 1], name="px_out_transpose"))
    nodes = pre + list(g.node) + post
    del g.node[:]
    g.node.extend(nodes)
    # the old I/O are intermediate values now; their declared shapes still hold
    g.value_info.extend([src_in, src_out])
    _set_descriptor(out, desc.with_(io=io_name(layout)))
    onnx.checker.check_model(out)
    return out


def graph_outscale(scale: int, outscale: float | None) -> int | None:
    """The whole ``outscale`` below the model's ``scale`` (a x4 model at --outscale 3, 2 or 1): the area
    resize to it is a fixed linear map of each block of the output, which the graph itself can apply
    (resample_output); None for any other factor (the host resizes)."""
    if outscale is None or not 1 <= outscale < scale or abs(outscale - round(outscale)) > 1e-9:
        return None
    return int(round(outscale))


def area_weights(src: int, dst: int) -> "np.ndarray":
    """(dst, src) weights of an area resize of ``src`` pixels to ``dst`` (dst <= src): each output pixel the
    mean of the input it covers, a pixel cut by its edge counted by the share it covers, which is what
    OpenCV's INTER_AREA computes when shrinking. Rows sum to 1."""
    import numpy as np

    w = np.zeros((dst, src), dtype=np.float64)
    step = src / dst
    for j in range(dst):
        lo, hi = j * step, (j + 1) * step
        for i in range(int(lo), min(src, int(np.ceil(hi - 1e-12)))):
            w[j, i] = min(hi, i + 1) - max(lo, i)
    return w / step


def area_kernel(scale: int, to_scale: int, channels: int) -> tuple[int, int, "np.ndarray"]:
    """(q, p, weight) of the area resize from ``scale`` to ``to_scale``: each q x q block of the input
    becomes a p x p block; ``weight`` (channels·p², 1, q, q) is the per-channel (grouped) convolution that
    computes it, its outputs in CRD order (channel, then row and column within the block), as a
    depth-to-space or pixel shuffle of block size p expects."""
    import math

    import numpy as np

    common = math.gcd(scale, to_scale)
    q, p = scale // common, to_scale // common
    a = area_weights(q, p)
    block = np.einsum("yi,xj->yxij", a, a).reshape(p * p, 1, q, q)  # output (dy, dx) ← input (i, j)
    return q, p, np.tile(block, (channels, 1, 1, 1)).astype(np.float32)


def resample_output(proto, to_scale: int):
    """A copy of ``proto`` (a float-I/O srdeploy ONNX) whose output is area-resized to ``to_scale`` times
    the input (a whole number below the model's scale): a x4 model that gives x3, x2 or x1 frames.

    This is what ``--outscale`` at a whole factor asks for, done on the float output inside the graph,
    before the uint8 wrap rounds it: on a GPU fewer bytes come back over PCIe (9/16 at x3, 1/4 at x2)
    and the host resizes nothing; everywhere the result is rounded once instead of twice. With
    g = gcd(scale, to_scale), each q x q block of the full output (q = scale / g; the output's height
    and width are whole numbers of blocks, since q divides the scale) becomes a p x p block (p =
    to_scale / g). Where p is 1 that is an AveragePool; else a convolution per channel (q x q kernel,
    stride q, p² outputs holding ``area_weights``) and a DepthToSpace (CRD, as the model's own pixel
    shuffle exports). By hand because ONNX's Resize has no area mode (its antialiased linear mode is a
    tent, not a box) and TensorRT's resize layer has no antialiasing: a conv and a depth-to-space are
    layers every backend runs exactly."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    desc = descriptor_of(proto)
    if desc.io != "float":
        raise ModelError(f"resample the float-I/O ONNX, not one with {desc.io} I/O")
    if graph_outscale(desc.scale, to_scale) is None:
        raise ModelError(f"cannot resample a x{desc.scale} model's output to x{to_scale} in its graph "
                         f"(a whole factor below the scale is needed)")
    if len(proto.graph.output) != 1:
        raise ModelError("expected one output in an srdeploy ONNX")
    q, p, weight = area_kernel(desc.scale, to_scale, desc.out_channels)
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    src_out = g.output[0]
    inner = f"{src_out.name}_full"
    for node in g.node:  # the model's last node now writes the full-scale output under another name
        node.output[:] = [inner if o == src_out.name else o for o in node.output]
    # clamped to the value range first, as the image the host would resize is: a model's overshoot at
    # an edge must not darken or lighten its neighbours in the average
    lo, hi = desc.value_range
    g.initializer.extend([numpy_helper.from_array(np.array(lo, dtype=np.float32), "px_rs_lo"),
                          numpy_helper.from_array(np.array(hi, dtype=np.float32), "px_rs_hi")])
    g.node.append(helper.make_node("Clip", [inner, "px_rs_lo", "px_rs_hi"], [f"{inner}_clip"],
                                   name="px_out_resample_clip"))
    if p == 1:
        g.node.append(helper.make_node("AveragePool", [f"{inner}_clip"], [src_out.name], kernel_shape=[q, q],
                                       strides=[q, q], name="px_out_pool"))
    else:
        g.initializer.append(numpy_helper.from_array(weight, "px_rs_weight"))
        g.node.append(helper.make_node("Conv", [f"{inner}_clip", "px_rs_weight"], [f"{inner}_blocks"],
                                       kernel_shape=[q, q], strides=[q, q], group=desc.out_channels,
                                       name="px_out_resample"))
        g.node.append(helper.make_node("DepthToSpace", [f"{inner}_blocks"], [src_out.name], blocksize=p,
                                       mode="CRD", name="px_out_resample_shuffle"))
    dims = src_out.type.tensor_type.shape.dim
    for d, name in zip(dims[2:], ("resampled_height", "resampled_width")):  # no longer the full-scale sizes
        d.ClearField("dim_value")
        d.dim_param = name
    _set_descriptor(out, desc.resampled(to_scale))
    onnx.checker.check_model(out)
    return out


def resampled_onnx(onnx_path: str | os.PathLike, to_scale: int) -> Path:
    """The form of ``onnx_path`` with its output area-resized to ``to_scale`` (``resample_output``),
    written once into the cache, keyed by the source's hash."""
    import onnx

    from sr_deploy.export.onnx_file import load_onnx
    from sr_deploy.fsutil import atomic_path, cache_root, is_sealed, seal, sha256_file

    src = Path(onnx_path)
    out = cache_root() / "onnx" / f"{src.name[:-5]}-{sha256_file(src)[:16]}.to{to_scale}v{RESAMPLE_FORM}.onnx"
    if not is_sealed(out):
        resampled = resample_output(load_onnx(src, external_data=True), to_scale)
        with atomic_path(out, overwrite=True) as tmp:
            onnx.save(resampled, str(tmp))
        seal(out)
    return out


def descriptor_of(proto) -> ModelDescriptor:
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            return ModelDescriptor.from_json(entry.value)
    raise ModelError("ONNX model has no srdeploy metadata; export it with `srdeploy export CHECKPOINT`")


def _set_descriptor(proto, desc: ModelDescriptor) -> None:
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            entry.value = desc.to_json()
            return
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, desc.to_json()


def uint8_onnx(onnx_path: str | os.PathLike, *, layout: str = "nhwc", out: str | os.PathLike | None = None,
               overwrite: bool = True) -> Path:
    """Write the uint8-I/O form of ``onnx_path`` (default: into the cache, keyed by the source's hash)."""
    import onnx

    from sr_deploy.fsutil import atomic_path, cache_root, is_sealed, seal, sha256_file

    src = Path(onnx_path)
    cached = out is None
    if cached:
        out = cache_root() / "onnx" / f"{src.name[:-5]}-{sha256_file(src)[:16]}.{io_name(layout)}v{PIXELS_FORM}.onnx"
        if is_sealed(out):
            return Path(out)
    from sr_deploy.export.onnx_file import load_onnx

    proto = load_onnx(src, external_data=True)
    wrapped = wrap_uint8_io(proto, layout=layout)
    with atomic_path(out, overwrite=overwrite or cached) as tmp:
        onnx.save(wrapped, str(tmp))
    if cached:
        seal(out)
    return Path(out)


def deployed_onnx(onnx_path: str | os.PathLike, *, outscale: int | None = None, pixels: bool = True) -> Path:
    """The form an engine or a server takes (both cached): the output resampled to ``outscale`` in the graph
    (``graph_outscale``), then uint8 pixel I/O unless ``pixels`` is False."""
    path = resampled_onnx(onnx_path, outscale) if outscale else Path(onnx_path)
    return uint8_onnx(path) if pixels else path
