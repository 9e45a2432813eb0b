"""Peak activation memory of an exported graph, per input pixel, read from the graph itself.

The profile and the runners size batches and tiles by it (engine/profile.activation_bytes_per_pixel). A
formula from the descriptor (channels, scale) fits the pixel-shuffle networks trained here but not every
community architecture: SRVGG compact (Real-ESRGAN's animevideov3) runs every convolution at the input's
size, so the upsampler bound overstated it 15x and tiled its 270x480 video frames on ONNX Runtime (0.9 →
1.4 frames/s end to end), and Real-CUGAN (unpadded convolutions on a border-padded input, a U-Net) holds
1.2x more than the bound said. Shape inference gives every intermediate tensor's shape at a probe size (ONNX Runtime's symbolic inference:
onnx's own stops at the Max() of the pad that graphs cropping their border compute); a sweep over the
nodes in their (topological) order gives the bytes alive at each step, as a sequential executor holds them. No
library computes this liveness figure (ONNX Runtime's memory planner works inside a session and reports
no peak), so it is written here: twenty lines over the graph's node list.
"""

from __future__ import annotations

import math

from sr_deploy.descriptor import ModelDescriptor

# input side of the shape probe (only shapes are computed, so its size costs nothing): activations scale
# with the area, a padded border does not, and at 256 px Real-CUGAN's 18-pixel border adds 30%, not 2.4x
PROBE = 256


def probe_size(desc: ModelDescriptor) -> tuple[int, int]:
    """The input size the graph is measured at: its fixed size, or PROBE rounded up to its multiple."""
    if desc.fixed_hw:
        return tuple(desc.fixed_hw)  # type: ignore[return-value]
    m = max(1, desc.size_multiple)
    side = max(math.ceil(PROBE / m) * m, desc.size_minimum)
    return side, side


def peak_bytes_per_pixel(proto, desc: ModelDescriptor) -> int:
    """Peak bytes of activations alive at once per input pixel (batch 1), or 0 where any tensor's shape
    stays unknown after shape inference (the descriptor's formula then stands)."""
    import onnx
    from onnx import helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    h, w = probe_size(desc)
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    if len(inputs) != 1 or len(inputs[0].type.tensor_type.shape.dim) != 4:
        return 0
    dims = inputs[0].type.tensor_type.shape.dim
    nhwc = desc.io in ("uint8-nhwc", "uint8-nhwc-planar")
    for d, v in zip(dims, (1, h, w, desc.in_channels) if nhwc else (1, desc.in_channels, h, w)):
        d.ClearField("dim_param")
        d.dim_value = v
    try:
        model = _infer_shapes(model)
    except Exception:  # noqa: BLE001 - any failure of the inference means "unknown", never a failed export
        return 0
    graph = model.graph
    size: dict[str, int] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        t = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else 0 for d in t.shape.dim]
        if t.elem_type and all(s > 0 for s in shape):
            size[vi.name] = math.prod(shape) * helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize
    birth = {i.name: -1 for i in graph.input if i.name not in weights}
    last: dict[str, int] = {}
    for k, node in enumerate(graph.node):
        for name in node.input:
            last[name] = k
        for name in node.output:
            if name:
                if name not in size:
                    return 0
                birth[name] = k
    for o in graph.output:
        last[o.name] = len(graph.node)
    n = len(graph.node)
    change = [0] * (n + 3)  # step 0: the input; step k+1: node k; a tensor lives from its birth to its last use
    for name, b in birth.items():
        change[b + 1] += size[name]
        change[max(last.get(name, b), b) + 2] -= size[name]  # a tensor nothing reads dies where it is made
    peak = alive = 0
    for c in change[:n + 2]:
        alive += c
        peak = max(peak, alive)
    return math.ceil(peak / (h * w))


def _infer_shapes(model):
    """ONNX Runtime's symbolic shape inference, driven the way its ``infer_shapes`` does it, except that a
    graph it cannot complete is returned as far as it went (its unknown shapes make the caller say 0):
    ``infer_shapes`` then writes ``sym_shape_infer_temp.onnx`` (with the model's weights) into the current
    folder, which a user's export must never leave behind."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    inference = SymbolicShapeInference(2**31 - 1, False, False, 0)
    inference._preprocess(model)
    while inference.run_:
        inference._infer_impl()
    inference._update_output_from_vi()
    return inference.out_mp_
