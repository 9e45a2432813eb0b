"""Pixels in the graph: wrap a float-I/O srdeploy ONNX so that it takes and returns uint8 RGB; and
average its output over k x k blocks (``--outscale`` at a divisor of the model's scale).

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

LAYOUTS = ("nhwc", "nchw")
PIXEL_INPUT, PIXEL_OUTPUT = "pixels", "pixels_out"
# The versions of the two rewrites, carried in their cache names: a cache file made by an older srdeploy's
# rewrite is never reused by a newer one (the cache outlives upgrades; the key is otherwise the source's hash)
PIXELS_FORM = 1  # wrap_uint8_io
POOL_FORM = 1  # pool_output (clamp, then AveragePool)


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
    dims_in = ["batch", "height", "width", c_in] if layout == "nhwc" else ["batch", c_in, "height", "width"]
    dims_out = (["batch", "out_height", "out_width", c_out] if layout == "nhwc"
                else ["batch", c_out, "out_height", "out_width"])
    g.input.append(helper.make_tensor_value_info(PIXEL_INPUT, TensorProto.UINT8, dims_in))
    g.output.append(helper.make_tensor_value_info(PIXEL_OUTPUT, TensorProto.UINT8, dims_out))
    g.initializer.extend([numpy_helper.from_array(np.array(255.0, dtype=np.float32), "px_255"),
                          numpy_helper.from_array(np.array(0.0, dtype=np.float32), "px_0")])
    pre, post = [], []
    cur = PIXEL_INPUT
    if layout == "nhwc":  # transpose the bytes, not the floats: 4x less memory traffic
        pre.append(helper.make_node("Transpose", [cur], ["px_nchw"], perm=[0, 3, 1, 2], name="px_in_transpose"))
        cur = "px_nchw"
    pre.append(helper.make_node("Cast", [cur], ["px_float"], to=TensorProto.FLOAT, name="px_in_cast"))
    pre.append(helper.make_node("Div", ["px_float", "px_255"], [inner_in], name="px_in_scale"))
    post.append(helper.make_node("Mul", [inner_out, "px_255"], ["px_out_scaled"], name="px_out_scale"))
    post.append(helper.make_node("Round", ["px_out_scaled"], ["px_out_round"], name="px_out_round"))
    post.append(helper.make_node("Clip", ["px_out_round", "px_0", "px_255"], ["px_out_clip"], name="px_out_clip"))
    final = PIXEL_OUTPUT if layout == "nchw" else "px_out_nchw"
    post.append(helper.make_node("Cast", ["px_out_clip"], [final], to=TensorProto.UINT8, name="px_out_cast"))
    if layout == "nhwc":
        post.append(helper.make_node("Transpose", [final], [PIXEL_OUTPUT], perm=[0, 2, 3, 1], name="px_out_transpose"))
    nodes = pre + list(g.node) + post
    del g.node[:]
    g.node.extend(nodes)
    # the old I/O are intermediate values now; their declared shapes still hold
    g.value_info.extend([src_in, src_out])
    _set_descriptor(out, desc.with_(io=io_name(layout)))
    onnx.checker.check_model(out)
    return out


def graph_reduction(scale: int, outscale: float | None) -> int:
    """k when ``outscale`` is the model's ``scale`` over a whole k > 1 (a x4 model at --outscale 2 or 1): the
    area resize is then a k x k average that the graph itself can do (pool_output); else 1."""
    if outscale is None or outscale <= 0 or outscale >= scale:
        return 1
    k = scale / outscale
    return int(round(k)) if abs(k - round(k)) < 1e-9 and scale % int(round(k)) == 0 else 1


def pool_output(proto, k: int):
    """A copy of ``proto`` (a float-I/O srdeploy ONNX) whose output is averaged over ``k`` x ``k`` blocks
    (AveragePool, stride k): a x4 model that gives x2 (k = 2) or x1 (k = 4) frames.

    This is what ``--outscale`` at a divisor of the model's scale asks for (an area resize: for a whole
    factor, each output pixel the mean of the k x k it covers, as OpenCV's INTER_AREA), done on the
    float output inside the graph, before the uint8 wrap rounds it: on a GPU, k² times fewer bytes come
    back over PCIe and the host resizes nothing; everywhere, the rounding, clamping and cast run on
    k² times fewer values, and the result is rounded once instead of twice. The output is always a
    whole number of blocks (height and width are input sizes times the scale, which k divides)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    desc = descriptor_of(proto)
    if desc.io != "float":
        raise ModelError(f"pool the float-I/O ONNX, not one with {desc.io} I/O")
    if k < 2 or desc.scale % k:
        raise ModelError(f"cannot average a x{desc.scale} model's output over {k}x{k} blocks "
                         f"(a divisor of the scale above 1 is needed)")
    if len(proto.graph.output) != 1:
        raise ModelError("expected one output in an srdeploy ONNX")
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
    g.initializer.extend([numpy_helper.from_array(np.array(lo, dtype=np.float32), "px_pool_lo"),
                          numpy_helper.from_array(np.array(hi, dtype=np.float32), "px_pool_hi")])
    g.node.append(helper.make_node("Clip", [inner, "px_pool_lo", "px_pool_hi"], [f"{inner}_clip"],
                                   name="px_out_pool_clip"))
    g.node.append(helper.make_node("AveragePool", [f"{inner}_clip"], [src_out.name], kernel_shape=[k, k],
                                   strides=[k, k], name="px_out_pool"))
    dims = src_out.type.tensor_type.shape.dim
    for d, name in zip(dims[2:], ("pooled_height", "pooled_width")):  # NCHW: no longer the full-scale sizes
        d.ClearField("dim_value")
        d.dim_param = name
    _set_descriptor(out, desc.reduced(k))
    onnx.checker.check_model(out)
    return out


def pooled_onnx(onnx_path: str | os.PathLike, k: int) -> Path:
    """The form of ``onnx_path`` with its output averaged over ``k`` x ``k`` blocks (``pool_output``),
    written once into the cache, keyed by the source's hash."""
    import onnx

    from sr_deploy.export.onnx_export import load_onnx
    from sr_deploy.fsutil import atomic_path, cache_root, sha256_file

    src = Path(onnx_path)
    out = cache_root() / "onnx" / f"{src.name[:-5]}-{sha256_file(src)[:16]}.pool{k}v{POOL_FORM}.onnx"
    if not out.exists():
        pooled = pool_output(load_onnx(src, external_data=True), k)
        with atomic_path(out, overwrite=True) as tmp:
            onnx.save(pooled, str(tmp))
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

    from sr_deploy.fsutil import atomic_path, cache_root, sha256_file

    src = Path(onnx_path)
    if out is None:
        out = cache_root() / "onnx" / f"{src.name[:-5]}-{sha256_file(src)[:16]}.{io_name(layout)}v{PIXELS_FORM}.onnx"
        if Path(out).exists():
            return Path(out)
    from sr_deploy.export.onnx_export import load_onnx

    proto = load_onnx(src, external_data=True)
    wrapped = wrap_uint8_io(proto, layout=layout)
    with atomic_path(out, overwrite=overwrite) as tmp:
        onnx.save(wrapped, str(tmp))
    return Path(out)


def deployed_onnx(onnx_path: str | os.PathLike, *, reduce: int = 1, pixels: bool = True) -> Path:
    """The form an engine or a server takes (both cached): the output averaged by ``reduce`` in the graph
    (``graph_reduction``), then uint8 pixel I/O unless ``pixels`` is False."""
    path = pooled_onnx(onnx_path, reduce) if reduce > 1 else Path(onnx_path)
    return uint8_onnx(path) if pixels else path
