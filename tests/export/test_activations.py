"""The peak activation memory read from an exported graph (export/activations.py), which sizes tiles."""

from __future__ import annotations

import pytest
from onnx import TensorProto, helper

from sr_deploy.descriptor import ModelDescriptor
from sr_deploy.engine.profile import activation_bytes_per_pixel
from sr_deploy.export.activations import PROBE, peak_bytes_per_pixel

ONE = ModelDescriptor(name="t", scale=1, in_channels=1, out_channels=1)


def _graph(nodes, out_shape=("h", "w"), weights=()):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, "h", "w"])
    y = helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, [1, 1, *out_shape])
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=list(weights)),
                             opset_imports=[helper.make_opsetid("", 18)])


def test_a_skip_stays_alive_across_the_nodes_between():
    """x feeds the last node, so it is alive beside every tensor made on the way: three fp32 values per
    pixel at every step from b on (a per-node input + output count says two at the chain's steps)."""
    chain = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["unread"]),
             helper.make_node("Relu", ["a"], ["b"]), helper.make_node("Relu", ["b"], ["c"]),
             helper.make_node("Add", ["x", "c"], ["d"])]  # "unread": made and never read, dead at once
    assert peak_bytes_per_pixel(_graph(chain), ONE) == 3 * 4
    # without the skip, a chain holds only a node's input and output
    plain = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Relu", ["b"], ["c"]), helper.make_node("Add", ["c", "c"], ["d"])]
    assert peak_bytes_per_pixel(_graph(plain), ONE) == 2 * 4
    # four channels made from one: the Concat's inputs and its 4-channel output
    wide = _graph([helper.make_node("Concat", ["x", "x", "x", "x"], ["w4"], axis=1),
                   helper.make_node("ReduceMax", ["w4", "ax"], ["d"], keepdims=1)],
                  weights=[helper.make_tensor("ax", TensorProto.INT64, [1], [1])])
    assert peak_bytes_per_pixel(wide, ONE) == (1 + 4) * 4  # weights ("ax") are not activations


def test_a_graph_with_a_shape_that_is_not_known_says_unknown_and_writes_nothing(tmp_path, monkeypatch):
    """NonZero's output size is known only when it runs, an operator of another domain has no inference:
    0 for both, and the descriptor's formula stands. ONNX Runtime's own entry point saves the model to
    ``sym_shape_infer_temp.onnx`` in the current folder when inference stops short; nothing is written here."""
    monkeypatch.chdir(tmp_path)
    g = _graph([helper.make_node("NonZero", ["x"], ["nz"]), helper.make_node("Cast", ["nz"], ["d"], to=1)])
    assert peak_bytes_per_pixel(g, ONE) == 0
    custom = _graph([helper.make_node("Foo", ["x"], ["a"], domain="my.ops"), helper.make_node("Relu", ["a"], ["d"])])
    custom.opset_import.append(helper.make_opsetid("my.ops", 1))
    assert peak_bytes_per_pixel(custom, ONE) == 0
    cyclic = _graph([helper.make_node("Relu", ["x"], ["d"]), helper.make_node("Relu", ["d"], ["d"])])
    assert peak_bytes_per_pixel(cyclic, ONE) == 0  # the inference raises: unknown, never a failed export
    assert list(tmp_path.iterdir()) == []
    assert activation_bytes_per_pixel(ONE.with_(activation_bytes=0)) == activation_bytes_per_pixel(ONE) > 0


def test_a_border_padded_graph_is_measured_at_its_padded_size():
    """A graph that pads its input by a computed amount (the Max() of waifu2x's minimum size) is followed
    through the computation: the padded tensor and the next one, each (PROBE + 2p)^2 / PROBE^2 of the
    input's area, are the peak (the small shape tensors add under a byte per pixel)."""
    import math

    p = 8
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Max", ["s", "floor"], ["m"]),  # shapes below 16 px pad up to it
             helper.make_node("Sub", ["m", "s"], ["extra"]),
             helper.make_node("Add", ["extra", "border"], ["after"]),
             helper.make_node("Concat", ["border", "after"], ["pads"], axis=0),
             helper.make_node("Pad", ["x", "pads"], ["xp"], mode="reflect"),
             helper.make_node("Relu", ["xp"], ["d"])]
    g = _graph(nodes, out_shape=("H", "W"), weights=[helper.make_tensor("floor", TensorProto.INT64, [4], [1, 1, 16, 16]),
                                                      helper.make_tensor("border", TensorProto.INT64, [4], [0, 0, p, p])])
    assert peak_bytes_per_pixel(g, ONE) == math.ceil(2 * 4 * (PROBE + 2 * p) ** 2 / PROBE ** 2)


def test_an_all_low_resolution_community_model_is_sized_by_its_own_graph(tmp_path):
    """SRVGG compact (animevideov3's architecture) runs every conv at the input's size: the graph's figure
    bounds its real layers, stays within 2x of them, and lets a 270x480 frame run whole on the host's 1 GiB,
    which the upsampler formula (15x more for animevideov3) did not."""
    import torch

    from sr_deploy.errors import ModelError
    from sr_deploy.export.onnx_export import export_onnx
    from sr_deploy.export.onnx_file import read_descriptor
    from tests.engine.test_engine_logic import _live_pair_bytes_per_pixel

    try:
        from sr_deploy.models.community import CommunityConfig, CommunitySR, import_spandrel

        import_spandrel()
        from spandrel.architectures.Compact import Compact
    except (ModelError, ImportError):
        pytest.skip("spandrel is not installed (see README: community models)")
    torch.manual_seed(0)
    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=16, num_conv=4, upscale=4).eval()
    model = CommunitySR(net, CommunityConfig(arch_name="RealESRGAN Compact", scale=4, in_channels=3, out_channels=3))
    desc = export_onnx(model, tmp_path / "c.onnx", name="c", check_parity=False).descriptor
    assert read_descriptor(tmp_path / "c.onnx").activation_bytes == desc.activation_bytes > 0
    real = _live_pair_bytes_per_pixel(net)
    assert real <= desc.activation_bytes <= 2 * real
    assert activation_bytes_per_pixel(desc) == desc.activation_bytes
    frame = 270 * 480
    assert frame * activation_bytes_per_pixel(desc) < 1 << 30 < frame * activation_bytes_per_pixel(
        desc.with_(activation_bytes=0))


def test_the_probe_size_follows_the_graphs_size_rules():
    from sr_deploy.export.activations import probe_size

    assert probe_size(ONE) == (PROBE, PROBE)
    assert probe_size(ONE.with_(size_multiple=12)) == (264, 264)  # PROBE rounded up to the multiple
    assert probe_size(ONE.with_(size_minimum=300)) == (300, 300)
    assert probe_size(ONE.with_(fixed_hw=(32, 40), max_batch=1)) == (32, 40)


@pytest.mark.parametrize("io", ["uint8-nhwc", "uint8-nhwc-planar"])
def test_a_fixed_size_graph_is_measured_at_its_size_and_a_pixel_graph_in_its_layout(io):
    """A graph exported at one size is measured there; a uint8 graph whose input is NHWC gets its probe in
    that order (a 3-channel NHWC input read as NCHW would feed the conv 256 channels, not 3)."""
    fixed = _graph([helper.make_node("Relu", ["x"], ["d"])])
    for d, v in zip(fixed.graph.input[0].type.tensor_type.shape.dim, (1, 1, 32, 40)):
        d.ClearField("dim_param")
        d.dim_value = v
    assert peak_bytes_per_pixel(fixed, ONE.with_(fixed_hw=(32, 40), max_batch=1)) == 2 * 4
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, [1, "h", "w", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, "h", "w"])
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Cast", ["t"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Conv", ["f", "w"], ["y"], kernel_shape=[1, 1])]
    pixels = helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=[
        helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 1, 1], [0.0] * 12)]), opset_imports=[helper.make_opsetid("", 18)])
    desc = ModelDescriptor(name="p", scale=1, io=io)
    # the Cast's float input and output, 3 channels each side: t (uint8, 3) + f (fp32, 12 bytes), then f + y (16)
    assert peak_bytes_per_pixel(pixels, desc) == 12 + 16


def test_a_graph_with_more_than_one_input_or_not_an_image_input_says_unknown():
    two = _graph([helper.make_node("Add", ["x", "z"], ["d"])])
    two.graph.input.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 1, "h", "w"]))
    assert peak_bytes_per_pixel(two, ONE) == 0
    flat = _graph([helper.make_node("Relu", ["x"], ["d"])])
    flat.graph.input[0].type.tensor_type.shape.dim.pop()
    assert peak_bytes_per_pixel(flat, ONE) == 0
