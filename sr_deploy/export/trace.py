"""The two ways a module becomes an ONNX graph: torch.export (dynamo) and the TorchScript tracer."""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from sr_deploy.descriptor import ModelDescriptor


def trace_torchscript(folded: nn.Module, desc: ModelDescriptor, opset: int):
    """torch.onnx's TorchScript tracer with dynamic axes (the exporter community tools have long used)."""
    import io

    import onnx

    buf = io.BytesIO()
    # the output's spatial axes are named apart from the input's: the same name would tell ONNX Runtime
    # they are equal (and it then re-uses buffers of the wrong size)
    axes, out_axes = {0: "batch", 2: "height", 3: "width"}, {0: "batch", 2: "out_height", 3: "out_width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(folded, (torch.rand(1, desc.in_channels, 24, 24),), buf, dynamo=False,
                          opset_version=opset, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": axes, "output": out_axes})
    return onnx.load_from_string(buf.getvalue())


def trace_dynamo(folded: nn.Module, desc: ModelDescriptor, opset: int, shape: tuple[int, int] | None):
    """torch.onnx's dynamo exporter; dynamic batch, height and width unless ``shape`` fixes them."""
    example = torch.rand(1, desc.in_channels, *(shape or (24, 24)))
    dims = None if shape else ({0: torch.export.Dim("batch", min=1, max=256),
                                2: torch.export.Dim("height", min=8, max=8192),
                                3: torch.export.Dim("width", min=8, max=8192)},)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch").setLevel(logging.ERROR)
        program = torch.onnx.export(folded, (example,), dynamo=True, opset_version=opset, verbose=False,
                                    input_names=["input"], output_names=["output"],
                                    dynamic_shapes=dims, optimize=True)
    return program.model_proto
