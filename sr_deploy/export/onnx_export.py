"""Export a generator to a BN-folded, dynamic-shape ONNX with the srdeploy descriptor in its metadata."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sr_deploy.descriptor import METADATA_KEY, ModelDescriptor
from sr_deploy.errors import DynamicExportUnsupported, ModelError  # noqa: F401 - re-exported
from sr_deploy.export.activations import peak_bytes_per_pixel
from sr_deploy.export.fold import inference_form
# ONNX files are read without PyTorch (onnx_file.py); the names stay importable from here
from sr_deploy.export.onnx_file import load_onnx, read_descriptor, reflect_minimum  # noqa: F401
from sr_deploy.export.trace import trace_dynamo
from sr_deploy.fsutil import atomic_path, model_digest

DEFAULT_OPSET = 18
PARITY_SIZES = ((17, 23), (31, 45))  # deliberately not multiples of 8
PARITY_TOL = 1e-4


@dataclass(frozen=True)
class ExportReport:
    path: Path
    descriptor: ModelDescriptor
    max_abs_diff: float
    sizes: tuple[tuple[int, int], ...]


def descriptor_for(model: nn.Module, *, name: str, source_sha256: str = "") -> ModelDescriptor:
    cfg = model.config  # type: ignore[attr-defined]
    return ModelDescriptor(name=name, scale=cfg.scale, in_channels=cfg.in_channels,
                           out_channels=getattr(cfg, "out_channels", cfg.in_channels),
                           size_multiple=getattr(cfg, "size_multiple", 1), size_minimum=getattr(cfg, "size_minimum", 0),
                           half_safe=getattr(cfg, "half_safe", True),
                           arch=cfg.to_dict(),
                           source_sha256=source_sha256)


def export_onnx(model: nn.Module, out: str | os.PathLike, *, name: str, source_sha256: str = "",
                opset: int = DEFAULT_OPSET, overwrite: bool = True, check_parity: bool = True,
                shape: tuple[int, int] | None = None) -> ExportReport:
    """Fold BN, export with dynamic batch/height/width (or, with ``shape``, one fixed HxW and batch 1),
    write metadata, check the graph and parity."""
    import onnx

    if opset < 17:
        raise ModelError(f"opset {opset} is too old: srdeploy exports opset 17 or newer")
    if opset > onnx.defs.onnx_opset_version():
        raise ModelError(f"opset {opset} is newer than this onnx {onnx.__version__} knows "
                         f"(up to {onnx.defs.onnx_opset_version()})")
    model = model.eval()
    folded = inference_form(model)
    desc = descriptor_for(model, name=name, source_sha256=source_sha256)
    desc = desc.with_(receptive_field=receptive_field(model, desc))
    community = getattr(model.config, "arch", "") == "community"  # type: ignore[attr-defined]
    if shape:
        desc = desc.with_(fixed_hw=tuple(shape), max_batch=1)
        proto = _guarded_export(model, desc, opset, shape) if community else trace_dynamo(folded, desc, opset, shape)
    elif community:
        proto, desc = _community_dynamic(model, desc, opset, name)
    else:
        proto = trace_dynamo(folded, desc, opset, None)
    wrote = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if wrote != opset:  # PyTorch's version converter falls back to its own opset with only a warning
        raise ModelError(f"opset {opset}: PyTorch {torch.__version__} could not convert to it and wrote opset "
                         f"{wrote} instead; pass another --opset (nothing was written)")
    desc = desc.with_(activation_bytes=peak_bytes_per_pixel(proto, desc))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, desc.to_json()
    onnx.checker.check_model(proto, full_check=True)
    if not community and any(n.op_type == "BatchNormalization" for n in proto.graph.node):
        raise ModelError("exported graph still holds BatchNormalization nodes")
    out = Path(out)
    sizes = (tuple(shape),) if shape else PARITY_SIZES
    batch = 1 if desc.max_batch == 1 else 2
    with atomic_path(out, overwrite=overwrite) as tmp:
        onnx.save(proto, str(tmp))
        diff = parity(model, tmp, sizes=sizes, batch=batch) if check_parity else float("nan")
        if check_parity and not diff <= PARITY_TOL:
            raise ModelError(f"ONNX output differs from torch by {diff:.2e} (max abs), more than {PARITY_TOL:g}"
                             + ("" if shape else "; an architecture whose graph depends on the input size may "
                                "export correctly with --shape HxW"))
    return ExportReport(out, desc, diff, sizes)


RF_PROBE = 128  # probe side in input pixels: radii up to 96 can be seen (the cut sits at 3/4 of the width)
RF_VISIBLE = 0.5 / 255  # an output change below half a level rounds away


def _probe_images(c: int, n: int) -> list[torch.Tensor]:
    """Two textures a model responds to (a denoiser wipes out a lone impulse): smooth noise, and blocks."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    noise = F.avg_pool2d(torch.rand(1, c, n + 4, n + 4, generator=g), 5, stride=1)
    noise = 0.1 + 0.8 * (noise - noise.min()) / (noise.max() - noise.min())
    blocks = torch.rand(1, c, n // 8, n // 8, generator=g).repeat_interleave(8, 2).repeat_interleave(8, 3)
    return [noise, 0.1 + 0.8 * blocks]


def receptive_field(model: nn.Module, desc: ModelDescriptor) -> int:
    """The model's effective receptive field radius in input pixels, measured the way tiles feel it: the
    output of the image cut at a column against the whole image's, and the farthest output column (in input
    pixels from the cut) that still differs by half a level. The theoretical field of deep networks (Real-
    ESRGAN x4plus: hundreds of pixels) is far wider than what they use; tiles need the used one."""
    if desc.fixed_hw or desc.size_multiple > 8:
        return 0
    n, s = RF_PROBE, desc.scale
    cut = 3 * n // 4
    radius = 0
    with torch.inference_mode():
        for img in _probe_images(desc.in_channels, n):
            whole = model(img)[..., : cut * s]
            part = model(img[..., :cut].contiguous())
            err = (whole - part).abs().amax(dim=(0, 1, 2))  # per output column
            cols = torch.nonzero(err >= RF_VISIBLE).flatten()
            if cols.numel():
                radius = max(radius, int(torch.ceil((cut * s - cols.min().float()) / s).item()))
    # a graph that pads its own border (Real-CUGAN, waifu2x: ncnn.py NcnnConfig.pad) computes its edge from
    # reflected pixels, far from what the neighbouring tile sees, and the blend still weighs part of that
    # edge: waifu2x UpConv7 (pad 7) measured 5 here and tiled 3 levels off the whole frame, 1 at 14
    pad = int(getattr(getattr(model, "config", None), "pad", 0) or 0)
    return max(radius, 2 * pad)


def _community_dynamic(model: nn.Module, desc: ModelDescriptor, opset: int, name: str):
    """A community architecture with dynamic height/width: torch.export first, then the TorchScript
    tracer (SPAN crashes the first and exports cleanly with the second); each graph must match torch at
    two odd sizes, since a tracer can bake one input size into reshapes and still "succeed"."""
    import tempfile

    import onnx

    reasons = []
    for exporter in ("dynamo", "torchscript"):
        try:
            proto = _guarded_export(model, desc, opset, None, exporter=exporter)
            d = desc.with_(max_batch=1) if _static_batch(proto) else desc  # OmniSR: batch specialised to 1
            with tempfile.TemporaryDirectory() as tmp:
                onnx.save(proto, f"{tmp}/m.onnx")
                diff = parity(model, f"{tmp}/m.onnx", batch=1 if d.max_batch == 1 else 2)
            if diff <= PARITY_TOL:
                return proto, d
            reasons.append(f"{exporter}: output differs by {diff:.1e} at other sizes")
        except Exception as exc:  # noqa: BLE001 - ModelError from the child, or ONNX Runtime's own on a baked shape
            text = str(exc).splitlines()[0][:160] if str(exc) else exc.__class__.__name__
            if "ONNXRuntimeError" in text:
                text = "the graph fails at other input sizes (the example's size was baked in)"
            reasons.append(f"{exporter}: {text}")
    raise DynamicExportUnsupported(f"{desc.arch.get('arch_name', name)} cannot be exported with dynamic height and width "
                     f"({'; '.join(reasons)}); export a fixed input size (srdeploy export WEIGHTS --shape HxW, e.g. 128x128) "
                     f"and run that ONNX: larger frames are tiled to it; or run the weights with --backend torch")


def _guarded_export(model: nn.Module, desc: ModelDescriptor, opset: int, shape: tuple[int, int] | None,
                    exporter: str = "dynamo"):
    """A community model's export, in a child process (export/isolated.py says why)."""
    from sr_deploy.export.isolated import export_isolated

    return export_isolated(model, desc.to_json(), opset, shape, exporter)


def _static_batch(proto) -> bool:
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    return dim.HasField("dim_value") and dim.dim_value == 1


def parity(model: nn.Module, onnx_path: str | os.PathLike, sizes=PARITY_SIZES, batch: int = 2) -> float:
    """Max abs difference between the (unfolded) torch model and ONNX Runtime over ``sizes``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3  # a graph that fails here is reported by the caller, in one line
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for h, w in sizes:
        x = torch.rand(batch, model.config.in_channels, h, w, generator=gen)  # type: ignore[attr-defined]
        with torch.inference_mode():
            ref = model.eval()(x).numpy()
        try:
            got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own error types
            raise ModelError(f"ONNX Runtime cannot run the exported graph at {h}x{w} "
                             f"({str(exc).splitlines()[0][:200]})") from exc
        if got.shape != ref.shape:
            raise ModelError(f"ONNX output shape {got.shape} != torch {ref.shape} for input {h}x{w}")
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike | None = None, *,
                      opset: int = DEFAULT_OPSET, overwrite: bool = False,
                      shape: tuple[int, int] | None = None) -> ExportReport:
    """Load a checkpoint and export it beside itself (or to ``out``). A dynamic export these weights were
    refused is refused again at once, for ``export`` and ``run`` alike (``refusal_memo``)."""
    from sr_deploy.errors import SRDeployError
    from sr_deploy.models.checkpoint import load_checkpoint

    checkpoint = Path(checkpoint)
    digest = model_digest(checkpoint)
    memo = refusal_memo(digest, opset) if shape is None else None
    if memo is not None and memo.is_file():
        raise DynamicExportUnsupported(memo.read_text().strip())
    model, _ = load_checkpoint(checkpoint)
    out = Path(out) if out else checkpoint.with_suffix(".onnx")
    try:
        return export_onnx(model, out, name=checkpoint.stem, source_sha256=digest,
                           opset=opset, overwrite=overwrite, shape=shape)
    except DynamicExportUnsupported as exc:
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
            with atomic_path(memo) as tmp:  # type: ignore[arg-type]
                tmp.write_text(str(exc))
        except (OSError, SRDeployError):
            pass  # not remembered: the next export tries again
        raise


def refusal_memo(digest: str, opset: int) -> Path:
    """Where a refused dynamic export of the weights with SHA-256 ``digest`` is remembered. The attempt
    takes from half a minute to several (two exporters, each in a child process, then a parity check), and
    its verdict holds until the weights, torch (whose exporter decides) or the opset change: all in the name."""
    from sr_deploy.fsutil import cache_root

    return cache_root() / "onnx" / "refused" / f"{digest[:16]}-torch{torch.__version__}-opset{opset}.txt"
