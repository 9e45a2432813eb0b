"""One model's way from its file to what runs it, a step at a time (Polygraphy's loaders are the model):

    checkpoint or foreign weights (ncnn, spandrel) → fp32 ONNX → precision variant → pixel graph → engine

Each step is made once, cached by content and verified where it is made: the fp32 ONNX is keyed by the model
file's hash (and checked against torch when exported), a precision variant and a pixel graph by their ONNX's
hash (a variant is used only when its gate report says it is faithful to the fp32 model's output), an engine
by its key (ONNX hash, precision, profile, TensorRT, GPU) and by its own gate against the fp32 ONNX. `run`
(through runtime/select.py, which only chooses), `build-engine`, `triton`, `tune` and `bench` all take their
files from a ``ModelChain``; each step is kept on the object, so one command asks for it once."""

from __future__ import annotations

import json
import os
from pathlib import Path

from sr_deploy.errors import InputError, QualityGateError
from sr_deploy.fsutil import cache_root, is_sealed, seal
from sr_deploy.runtime.sources import (ModelSource, onnx_for, precision_sibling, report_is_faithful, resolve_model,
                                       variant_path)

ENGINE_GATE_DB = {"fp32": 50.0, "fp16": 40.0, "int8": 30.0}  # PSNR of an engine's output vs the fp32 ONNX's


class ModelChain:
    """The loader chain of one model (``source``, as `--model` resolved it)."""

    def __init__(self, source: ModelSource) -> None:
        self.source = source
        self._onnx: Path | None = None
        self._precision: dict[Path, str] = {}

    @classmethod
    def of(cls, spec: str | os.PathLike | None) -> "ModelChain":
        """A shipped or zoo model's name, a checkpoint, an ONNX or an engine (None: the default model)."""
        return cls(resolve_model(spec))

    def onnx(self) -> Path:
        """The fp32 ONNX: the file itself where an ONNX was given, else the checkpoint exported once into the
        cache (an architecture with no dynamic-shape export raises DynamicExportUnsupported, remembered)."""
        if self._onnx is None:
            self._onnx = onnx_for(self.source)
        return self._onnx

    def precision_of(self, path: Path) -> str:
        """The precision an ONNX's metadata says it holds (read once per file)."""
        if path not in self._precision:
            from sr_deploy.export.onnx_file import read_descriptor

            self._precision[path] = read_descriptor(path).precision
        return self._precision[path]

    def given_variant(self) -> bool:
        """A variant file given by path (NAME.fp16.onnx, NAME.int8.onnx): it runs as given, and `auto` picks
        among variants only for a model named as a whole (shipped name, checkpoint, fp32 ONNX)."""
        return self.source.kind == "onnx" and self.precision_of(self.source.path) != "fp32"

    def gated(self, precision: str) -> Path | None:
        """A ``precision`` variant made earlier whose gate report says it passed and is faithful to the fp32
        output: beside the model's file (a shipped model's INT8 sits with its weights), else beside the
        checkpoint's cached ONNX. None for a variant given by path, or where none passed."""
        if self.given_variant():
            return None
        found = precision_sibling(self.source.path, precision)
        if found is None and self.source.kind == "checkpoint":
            found = precision_sibling(self.onnx(), precision)
        return found

    def variant(self, precision: str | None, backend: str) -> Path:
        """The ONNX ``backend`` runs at ``precision`` (None: the model's own): the fp32 ONNX, or the fp16/int8
        file beside it or beside the checkpoint (made by `build-engine --fp16/--int8 --onnx-only`)."""
        base = self.onnx()
        if precision in ("fp16", "int8"):
            if self.precision_of(base) == precision:
                return base
            for sib in (variant_path(base, precision), variant_path(self.source.path, precision)):
                if sib.exists():
                    return sib
            if precision == "fp16" and backend == "openvino":
                from sr_deploy.runtime.openvino_runner import cpu_supports_fp16

                if cpu_supports_fp16():
                    return base  # computed in fp16 by OpenVINO's precision hint
                raise InputError(f"no fp16 ONNX beside {base}, and OpenVINO reports no native fp16 on this CPU "
                                 f"(AVX512-FP16/AMX-FP16) to compute the fp32 one in: use fp32, bf16 or int8")
            raise InputError(f"no {precision} ONNX beside {base}: make one with "
                             f"`srdeploy build-engine {base} --{precision} --onnx-only`")
        if precision == "bf16" and backend != "openvino":
            raise InputError(f"bf16 runs on the openvino (or torch) backend, not {backend}")
        return base

    def engine_onnx(self, precision: str | None = None, *, say=None) -> Path:
        """The ONNX an engine is built from: ``precision``'s variant as `variant` finds it, or by default fp16
        (what a datacenter GPU runs fastest, and what torch on CUDA defaults to), made once into the cache and
        gated like any variant (fidelity to the fp32 output on real photographs); fp32 where that variant was
        refused. An fp16 ONNX shipped or built beside the model and passed is used as it is; a variant given by
        path runs as given."""
        if precision is not None:
            return self.variant(precision, "tensorrt")
        from sr_deploy.fsutil import sha256_file

        fp32 = self.onnx()
        if self.precision_of(fp32) != "fp32":
            return fp32
        beside = self.gated("fp16")
        if beside is not None:
            return beside
        out = cache_root() / "onnx" / f"{fp32.name.split('.')[0]}-{sha256_file(fp32)[:16]}.fp16.onnx"
        report = out.with_suffix(".quality.json")
        if report.exists() and is_sealed(out):
            try:
                if report_is_faithful(json.loads(report.read_text()), "fp16"):
                    return out
            except (OSError, ValueError):
                pass
        if out.with_suffix(".refused.json").exists():
            return fp32
        from sr_deploy.precision.convert import make_precision_onnx

        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            rep = make_precision_onnx(fp32, "fp16", out=out)
        except QualityGateError as exc:
            if say:
                say(f"note: the fp16 variant was refused, the engine is fp32 ({str(exc).split(';')[0]})")
            return fp32
        seal(out)
        if say:
            say(f"note: {rep.line()}")
        return out

    def pixel_graph(self, onnx: Path | None = None, *, outscale: int | None = None, pixels: bool = True) -> Path:
        """The form an engine or a server takes, cached: ``onnx`` (default: the fp32 ONNX) with its output
        resampled to ``outscale`` in the graph (a whole number below the scale), then uint8 pixel I/O unless
        ``pixels`` is False (a graph that already takes pixels is refused: ModelError)."""
        from sr_deploy.export.pixels import deployed_onnx

        return deployed_onnx(self.onnx() if onnx is None else onnx, outscale=outscale, pixels=pixels)

    def reference(self, resized_to: int | None = None) -> Path | None:
        """The fp32 ONNX an engine's output is compared with: the model's own, or the fp32 sibling of a variant
        given by path (None where there is none), resampled like the engine when its graph resizes its output."""
        ref = self.onnx()
        if self.precision_of(ref) != "fp32":
            sibling = ref.with_name(f"{ref.name.split('.')[0]}.onnx")
            if not sibling.exists():
                return None
            ref = sibling
        if resized_to is not None:
            from sr_deploy.export.pixels import resampled_onnx

            ref = resampled_onnx(ref, resized_to)
        return ref

    def engine(self, precision: str | None = None, *, outscale: float | None = None, say=None):
        """The TensorRT runner of the model: its engine from the cache, built there on first use from the
        uint8-I/O form of ``engine_onnx(precision)`` (with ``outscale`` a whole number below the model's scale,
        the output area-resized on the GPU: a graph of its own, so an engine of its own), and checked once
        against the fp32 ONNX (``gate_engine``); raises QualityGateError where it drifts. Returns the runner
        and a line saying where it came from. Needs TensorRT and a GPU (select.tensorrt_ready)."""
        from sr_deploy.engine.build import build_engine, current_key, gpu_total_bytes
        from sr_deploy.engine.key import engine_path
        from sr_deploy.engine.profile import make_profile
        from sr_deploy.export.onnx_file import read_descriptor
        from sr_deploy.export.pixels import graph_outscale
        from sr_deploy.runtime.tensorrt_runner import TensorRTRunner

        base = self.engine_onnx(precision, say=say)
        desc = read_descriptor(base)
        if not desc.pixel_io:
            base = self.pixel_graph(base, outscale=graph_outscale(desc.scale, outscale))
            desc = read_descriptor(base)
        profile = make_profile(desc, memory_bytes=gpu_total_bytes())
        key = current_key(base, desc, profile)
        target = cache_root() / "tensorrt" / engine_path(base, key, desc).name
        reference = self.reference(desc.scale if desc.resizes_output else None)  # the gate compares like with like
        if target.exists() and target.with_suffix(".json").exists():
            runner, how = TensorRTRunner(target), "from the cache"
        else:
            if say:
                say(f"building the TensorRT {desc.precision} engine for {self.source.name} (first use on this GPU "
                    f"and TensorRT; cached in {target.parent})")
            build_engine(base, desc, profile, out=target)
            runner, how = TensorRTRunner(target), "built on first use"
        gate = gate_engine(runner, reference)
        if not gate["passed"]:
            raise QualityGateError(f"{target}: the {desc.precision} engine's output is {gate['psnr_vs_fp32_db']:.1f} "
                                   f"dB from the fp32 model's (gate {gate['min_psnr_db']:g} dB): not used; "
                                   f"try --precision fp32")
        return runner, f"TensorRT engine {how} ({desc.precision}, {gate['psnr_vs_fp32_db']:.1f} dB vs fp32 on its gate)"


def gate_engine(runner, reference: Path | None) -> dict:
    """Check an engine's output against the fp32 ONNX on ONNX Runtime (CPU) once, on generated images
    (edges, text, gradients, texture: no dataset is needed at run time), and record the verdict in the
    engine's sidecar so later runs reuse it. Catches what the ONNX-level gates cannot see: a TensorRT
    tactic or an fp16 overflow that only the built engine has. Returns the recorded verdict."""
    import numpy as np

    from sr_deploy.export.onnx_file import read_descriptor
    from sr_deploy.fsutil import atomic_path
    from sr_deploy.metrics import psnr
    from sr_deploy.runtime.ort_runner import OrtRunner
    from sr_deploy.synthetic import synthetic_images

    sidecar = runner.path.with_suffix(".json")
    data = json.loads(sidecar.read_text())
    if "gate" in data:
        return data["gate"]
    imgs = [im[:64, :96] for im in synthetic_images(count=3, size=(64, 96), seed=11)]
    min_db = ENGINE_GATE_DB.get(runner.precision, 30.0)
    if reference is None:  # nothing to compare against: the ONNX-level gate is all there is
        verdict = {"psnr_vs_fp32_db": float("inf"), "min_psnr_db": min_db, "passed": True, "images": 0}
    else:
        ref = OrtRunner(reference, read_descriptor(reference))
        scores = []
        with ref, runner:
            for im in imgs:
                a = ref.infer_u8(im[None])[0]
                b = runner.infer_u8(im[None])[0]
                scores.append(psnr(a.astype(np.float64), b.astype(np.float64)))
        worst = float(min(scores))
        verdict = {"psnr_vs_fp32_db": worst, "min_psnr_db": min_db, "passed": worst >= min_db, "images": len(imgs)}
    data["gate"] = verdict
    with atomic_path(sidecar) as tmp:
        tmp.write_text(json.dumps(data, indent=2))
    return verdict
