"""Reading srdeploy's ONNX files: the descriptor in their metadata, their reflect-padding minimum, the
model itself with its external weights checked. No PyTorch here: every run reads its model through this
module, and importing torch cost a CPU video run 1 s of its 5 (light_x4, 48 frames at 270x480)."""

from __future__ import annotations

import os
from pathlib import Path

from sr_deploy.descriptor import METADATA_KEY, ModelDescriptor
from sr_deploy.errors import ModelError


def read_descriptor(path: str | os.PathLike) -> ModelDescriptor:
    """The srdeploy descriptor stored in an ONNX file; a clear error when it has none."""
    proto = load_onnx(path)
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            try:
                desc = ModelDescriptor.from_json(entry.value)
            except ModelError as exc:
                raise ModelError(f"{path}: {exc}; export the model again with `srdeploy export`") from None
            least = reflect_minimum(proto)
            # graphs exported before the descriptor carried it (light_x4's first release) say 0
            return desc.with_(size_minimum=least) if least > desc.size_minimum else desc
    raise ModelError(f"{path}: ONNX model has no srdeploy metadata; export it with `srdeploy export CHECKPOINT`")


def reflect_minimum(proto) -> int:
    """The smallest height and width the graph's reflect padding runs on (pad + 1; 0 without any).

    ONNX Runtime, OpenVINO and TensorRT all refuse a reflect pad as wide as the input, so a 2x2 image
    through a 5x5 reflect-padded conv failed inside the backend. Read from constant ``pads`` only.
    """
    from onnx import numpy_helper

    consts = {t.name: t for t in proto.graph.initializer}
    consts.update({n.output[0]: a.t for n in proto.graph.node if n.op_type == "Constant"
                   for a in n.attribute if a.name == "value"})
    least = 0
    for n in proto.graph.node:
        if n.op_type != "Pad" or not any(a.name == "mode" and a.s == b"reflect" for a in n.attribute):
            continue
        pads = [list(a.ints) for a in n.attribute if a.name == "pads"]  # opset < 11 kept them here
        if not pads and len(n.input) > 1 and n.input[1] in consts:
            pads = [numpy_helper.to_array(consts[n.input[1]]).tolist()]
        if pads and pads[0]:
            least = max(least, int(max(pads[0])) + 1)
    return least


def load_onnx(path: str | os.PathLike, *, external_data: bool = False):
    """The ModelProto of ``path``, or one clear line when it is missing, not ONNX, or its external
    weights are missing or point outside its folder."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: ONNX file not found")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types
        raise ModelError(f"{path}: not a readable ONNX model ({exc.__class__.__name__})") from exc
    _check_external_data(path, proto)
    if external_data:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(proto, str(path.resolve().parent))
    return proto


def _check_external_data(path: Path, proto) -> None:
    """Weights stored outside the .onnx must be files inside its folder, and present: ONNX Runtime and
    onnx refuse anything else with a traceback deep in a session; here it is one line, before any work."""
    from onnx.external_data_helper import uses_external_data

    folder = path.resolve().parent
    for tensor in proto.graph.initializer:
        if not uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(folder):
            raise ModelError(f"{path}: weight {tensor.name!r} points outside the model's folder ({location!r}); "
                             f"srdeploy reads external data only from files beside the model")
        if not target.is_file():
            raise ModelError(f"{path}: weight file {location!r} of {tensor.name!r} is missing beside the model")
