"""What `--model` names, as files: a shipped or zoo model, a checkpoint, an ONNX or an engine; the fp32 ONNX
exported once into the cache; precision variants beside it and whether their gate report is trusted.

Below runtime/select.py (which makes runners) and runtime/tune.py (which ranks them): both read models
through here, so neither needs the other to find a file."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from sr_deploy.errors import InputError, ModelError
from sr_deploy.fsutil import cache_root, is_sealed, model_digest, seal

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_MODEL = "srresnet_x4"
CHECKPOINT_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".param"}  # .param: ncnn (models/ncnn.py)


@dataclass(frozen=True)
class ModelSource:
    kind: str  # checkpoint | onnx | engine
    path: Path
    name: str


def shipped_models() -> dict[str, Path]:
    return {p.name.split(".")[0]: p for p in sorted(WEIGHTS_DIR.glob("*.safetensors"))}


def resolve_model(spec: str | os.PathLike | None) -> ModelSource:
    """A shipped model's name, a checkpoint, an ONNX file or an engine → ModelSource."""
    if spec is None:
        spec = DEFAULT_MODEL
    shipped = shipped_models()
    if str(spec) in shipped:
        return ModelSource("checkpoint", shipped[str(spec)], str(spec))
    from sr_deploy.models import zoo

    entry = zoo.find(str(spec))
    if entry is not None:
        found = zoo.zoo_path(entry)
        if found is None:
            raise InputError(f"{spec} is a zoo model whose package {entry.package} is not installed: {zoo.ZOO_HINT}")
        return ModelSource("checkpoint", found, entry.name)
    path = Path(spec)
    if not path.exists():
        if path.suffix or os.sep in str(spec):
            raise InputError(f"{path}: model file not found")
        names = ", ".join(shipped) or "none"
        raise InputError(f"no shipped model named {spec!r} (shipped: {names}; zoo: "
                         f"{', '.join(m.name for m in zoo.ZOO)}); pass a checkpoint, ncnn .param or ONNX path")
    if not path.is_file():  # a FIFO would block the first read until something writes to it
        raise InputError(f"{path}: not a regular file (a folder, FIFO, socket or device); pass a model file")
    suffix = path.suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        return ModelSource("checkpoint", path, path.stem)
    if suffix == ".onnx":
        from sr_deploy.export.onnx_file import read_descriptor

        read_descriptor(path)  # not ONNX, or not srdeploy's: one line now, before any command's work
        return ModelSource("onnx", path, path.name.split(".")[0])
    if suffix in (".engine", ".plan", ".trt"):
        return ModelSource("engine", path, path.name.split(".")[0])
    raise InputError(f"{path}: not a model file (expected .pt, .pth, .ckpt, .safetensors, an ncnn .param, .onnx or .engine)")




def model_identity(source: ModelSource, backend: str, precision: str | None, ensemble: bool = False) -> str:
    """What names a model's outputs in a resumable run's manifest: the file's hash and how it is run."""

    return f"{source.kind}:{model_digest(source.path)} backend={backend} precision={precision or 'default'}" + (
        " ensemble" if ensemble else "")


def onnx_for(source: ModelSource) -> Path:
    """The fp32 ONNX of a source: the file itself, or the checkpoint exported once into the cache."""
    if source.kind == "onnx":
        return source.path
    if source.kind != "checkpoint":
        raise ModelError(f"{source.path}: an engine has no ONNX to run on another backend")
    target = cache_root() / "onnx" / f"{source.name}-{model_digest(source.path)[:16]}.onnx"
    if not is_sealed(target):  # a refused dynamic export is remembered by export_checkpoint
        from sr_deploy.export.onnx_export import export_checkpoint  # PyTorch: only when there is no ONNX

        export_checkpoint(source.path, target, overwrite=True)
        seal(target)
    return target


def variant_path(path: Path, precision: str) -> Path:
    """``NAME.<precision>.onnx`` beside ``path`` (a checkpoint, or an ONNX of any precision)."""
    return path.with_name(f"{path.name.split('.')[0]}.{precision}.onnx")


def report_is_faithful(data: dict, precision: str) -> bool:
    """A gate report `auto` trusts: passed, and faithful to the fp32 model's own output (precision/convert.py
    MIN_FIDELITY_DB, MAX_P999_LEVELS). A report written before the fidelity gate has no such figure: the
    variant may pass ΔPSNR vs HR and still draw other lines than the model, so it is not trusted."""
    from sr_deploy.precision.convert import MAX_P999_LEVELS, MIN_FIDELITY_DB

    fid, p999 = data.get("fidelity_db"), data.get("p999_levels")
    if not data.get("passed") or not isinstance(fid, (int, float)) or not isinstance(p999, (int, float)):
        return False
    if precision not in MIN_FIDELITY_DB:  # a precision without a gate of its own is never trusted
        return False
    return fid >= MIN_FIDELITY_DB[precision] and p999 <= MAX_P999_LEVELS[precision]


def precision_sibling(path: Path, precision: str) -> Path | None:
    """``NAME.<precision>.onnx`` beside an fp32 ONNX or a checkpoint, if it exists and its gate report
    says it passed and is faithful to the fp32 output (``report_is_faithful``)."""
    cand = variant_path(path, precision)
    report = cand.with_suffix(".quality.json")
    if cand.exists() and report.exists():
        try:
            data = json.loads(report.read_text())
        except (OSError, ValueError):
            return None
        if isinstance(data, dict) and report_is_faithful(data, precision):
            return cand
    return None
