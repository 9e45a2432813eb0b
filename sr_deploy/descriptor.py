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
    # a graph that averages the model's output over reduce x reduce blocks (export/pixels.pool_output, for
    # `--outscale`): ``scale`` is the graph's, the network itself works at scale * reduce
    reduce: int = 1

    def reduced(self, k: int) -> "ModelDescriptor":
        """The descriptor of this model's graph with its output averaged over k x k blocks (export/pixels.
        pool_output, or the torch runner's AvgPool): the scale over k, the network's own scale kept."""
        return self.with_(scale=self.scale // k, reduce=self.reduce * k)

    @property
    def model_scale(self) -> int:
        """The scale the network itself upscales by (``scale`` before the graph's output averaging)."""
        return self.scale * max(1, self.reduce)

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
