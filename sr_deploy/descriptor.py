"""The model descriptor that travels with a model through every stage.

ONNX metadata, engine sidecars and checkpoints all carry it, so tiling,
profiles and the runtime derive what they need from one place.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

METADATA_KEY = "srdeploy"


@dataclass(frozen=True)
class ModelDescriptor:
    """What a deployment stage needs to know about a super-resolution model."""

    name: str
    scale: int
    in_channels: int = 3
    out_channels: int = 3
    value_range: tuple[float, float] = (0.0, 1.0)
    size_multiple: int = 1
    size_minimum: int = 0  # inputs smaller than this are padded to it (and cropped after) by the runners
    half_safe: bool = True
    precision: str = "fp32"
    arch: dict = field(default_factory=dict)
    source_sha256: str = ""
    io: str = "float"  # float (NCHW float32 in value_range) | uint8-nhwc | uint8-nchw | uint8-nhwc-planar (export/pixels.py)
    # a graph exported with a fixed input size (architectures that cannot export dynamic height/width):
    # runners pad smaller inputs to it and crop; media tiles larger frames to it
    fixed_hw: tuple[int, int] | None = None
    max_batch: int = 0  # 0: any batch; 1: a graph whose batch dimension is fixed
    # a graph whose output is area-resampled to ``scale`` from the network's own, larger scale (export/pixels.
    # resample_output, for `--outscale`): ``network_scale`` is the network's (0: the same as ``scale``)
    network_scale: int = 0
    # measured at export (export/onnx_export.receptive_field): how far, in input pixels, a pixel's change
    # still moves the output by a visible amount; tiles overlap by twice this (media/tiling.py). 0: unknown
    receptive_field: int = 0
    # measured at export (export/activations.py): the peak bytes of activations alive at once per input
    # pixel of the float graph, from its own shapes; sizes batches and tiles. 0: unknown (the formula in
    # engine/profile.activation_bytes_per_pixel stands)
    activation_bytes: int = 0

    def resampled(self, to_scale: int) -> "ModelDescriptor":
        """The descriptor of this model's graph with its output area-resampled to ``to_scale`` (export/pixels.
        resample_output, or the torch runner's module): the graph's scale changes, the network's is kept."""
        return self.with_(scale=to_scale, network_scale=self.model_scale)

    @property
    def model_scale(self) -> int:
        """The scale the network itself upscales by (``scale`` before the graph's output resampling)."""
        return self.network_scale or self.scale

    @property
    def resizes_output(self) -> bool:
        """True for a graph that area-resizes the network's output to another scale (``--outscale``)."""
        return self.model_scale != self.scale

    @property
    def pixel_io(self) -> bool:
        """True when the graph takes and returns uint8 pixels."""
        return self.io.startswith("uint8")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelDescriptor":
        """The descriptor a file carries, validated: it is untrusted input (a file's metadata can say
        anything), so a wrong type or a value out of range is one ``ModelError`` line, never a traceback."""
        from sr_deploy.errors import ModelError

        try:
            data = json.loads(text)
        except (TypeError, ValueError):
            raise ModelError("its srdeploy descriptor is not JSON") from None
        if not isinstance(data, dict):
            raise ModelError(f"its srdeploy descriptor is a JSON {type(data).__name__}, not an object")
        problem = _check(data)
        if problem:
            raise ModelError(f"its srdeploy descriptor is not valid: {problem}")
        known = {f.name for f in fields(cls)}
        if data.get("reduce", 1) > 1:  # the older form: an averaging factor k (cached graphs, engine sidecars)
            data["network_scale"] = data["scale"] * data["reduce"]
        data = {k: v for k, v in data.items() if k in known}
        if "value_range" in data:
            data["value_range"] = tuple(data["value_range"])
        if data.get("fixed_hw"):
            data["fixed_hw"] = tuple(data["fixed_hw"])
        return cls(**data)

    def with_(self, **changes) -> "ModelDescriptor":
        data = asdict(self)
        data.update(changes)
        data["value_range"] = tuple(data["value_range"])
        if data.get("fixed_hw"):
            data["fixed_hw"] = tuple(data["fixed_hw"])
        return ModelDescriptor(**data)


_INTS = {"scale": (1, 16), "in_channels": (1, 4), "out_channels": (1, 4), "size_multiple": (1, 1024),
         "size_minimum": (0, 8192), "max_batch": (0, 4096), "network_scale": (0, 16), "receptive_field": (0, 4096),
         "activation_bytes": (0, 1 << 24), "reduce": (1, 16)}
_IOS = ("float", "uint8-nhwc", "uint8-nchw", "uint8-nhwc-planar")
_PRECISIONS = ("fp32", "fp16", "bf16", "int8")


def _check(data: dict) -> str:
    """What is wrong with a descriptor's fields ('' when nothing): types and ranges a graph can have."""
    for key in ("name", "scale"):
        if key not in data:
            return f"{key!r} is missing"
    if not isinstance(data["name"], str):
        return "'name' is not a string"
    for key, (lo, hi) in _INTS.items():
        if key in data and (isinstance(data[key], bool) or not isinstance(data[key], int) or not lo <= data[key] <= hi):
            return f"{key!r} is {data[key]!r}, not a whole number from {lo} to {hi}"
    if data.get("io", "float") not in _IOS:
        return f"'io' is {data.get('io')!r}, not one of {', '.join(_IOS)}"
    if data.get("precision", "fp32") not in _PRECISIONS:
        return f"'precision' is {data.get('precision')!r}, not one of {', '.join(_PRECISIONS)}"
    vr = data.get("value_range", [0.0, 1.0])
    if (not isinstance(vr, list) or len(vr) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                           for v in vr) or not vr[0] < vr[1]):
        return f"'value_range' is {vr!r}, not [low, high]"
    hw = data.get("fixed_hw")
    if hw is not None and (not isinstance(hw, list) or len(hw) != 2
                           or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 16384 for v in hw)):
        return f"'fixed_hw' is {hw!r}, not [height, width] of positive sizes"
    if not isinstance(data.get("arch", {}), dict):
        return "'arch' is not an object"
    if not isinstance(data.get("half_safe", True), bool):
        return "'half_safe' is not true or false"
    return ""
