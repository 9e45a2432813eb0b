"""Engine keys: an engine is valid only for the profile, precision, TensorRT and GPU it was built with."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from sr_deploy.descriptor import ModelDescriptor
from sr_deploy.engine.profile import Profile
from sr_deploy.errors import EngineMismatch, ModelError
from sr_deploy.fsutil import atomic_path


@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    precision: str
    profile: dict
    tensorrt: str
    gpu: str
    compute_capability: str

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def engine_path(onnx_path: Path, key: EngineKey, desc: ModelDescriptor | None = None) -> Path:
    """``NAME.<precision>.<sm>.<digest>.engine`` beside the ONNX; ``NAME.x2.<precision>...`` for a graph
    that resamples its output to x2 (``--outscale``), so that the name says what the engine returns."""
    name = onnx_path.name.split(".")[0]
    if desc is not None and desc.resizes_output:
        name += f".x{desc.scale}"
    return onnx_path.with_name(f"{name}.{key.precision}.sm{key.compute_capability.replace('.', '')}.{key.digest()}.engine")


def sidecar_path(engine: Path) -> Path:
    return engine.with_suffix(".json")


def write_sidecar(engine: Path, key: EngineKey, desc: ModelDescriptor) -> Path:
    path = sidecar_path(engine)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"key": asdict(key), "descriptor": json.loads(desc.to_json())}, indent=2))
    return path


def read_sidecar(engine: Path) -> tuple[EngineKey, ModelDescriptor]:
    path = sidecar_path(engine)
    if not path.is_file():
        raise ModelError(f"{engine}: no sidecar {path.name} beside the engine; rebuild it with `srdeploy build-engine`")
    try:
        data = json.loads(path.read_text())
        key = EngineKey(**data["key"])
        desc = ModelDescriptor.from_json(json.dumps(data["descriptor"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path}: not a srdeploy engine sidecar ({exc.__class__.__name__})") from exc
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    return key, desc


def check_key(stored: EngineKey, *, tensorrt: str, gpu: str, compute_capability: str, engine: Path,
              onnx_hint: str = "MODEL.onnx") -> None:
    """Raise EngineMismatch naming what differs and the command that rebuilds the engine."""
    diffs = []
    if stored.tensorrt != tensorrt:
        diffs.append(f"TensorRT {stored.tensorrt} (built) vs {tensorrt} (installed)")
    if stored.compute_capability != compute_capability or stored.gpu != gpu:
        diffs.append(f"GPU {stored.gpu} sm{stored.compute_capability} (built) vs {gpu} sm{compute_capability} (here)")
    if diffs:
        flag = "--int8 --calib DIR" if stored.precision == "int8" else f"--{stored.precision}" if stored.precision != "fp32" else ""
        command = " ".join(part for part in ("srdeploy build-engine", onnx_hint, flag) if part)
        raise EngineMismatch(f"{engine}: engine does not match this machine: {'; '.join(diffs)}; "
                             f"rebuild with `{command}`")


def make_key(onnx_sha256: str, precision: str, profile: Profile, *, tensorrt: str, gpu: str,
             compute_capability: str) -> EngineKey:
    return EngineKey(onnx_sha256, precision, profile.to_dict(), tensorrt, gpu, compute_capability)
