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
    io: str = "float"  # float (NCHW float32 in value_range) | uint8-nhwc | uint8-nchw (export/pixels.py)
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
        data = json.loads(text)
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
