"""Resolve `--model` and `--backend` into a Runner, and say why it was chosen."""

from __future__ import annotations

import json
from pathlib import Path

from sr_deploy.errors import BackendUnavailable, InputError, QualityGateError, SRDeployError
from sr_deploy.fsutil import cache_root, is_sealed, seal
from sr_deploy.runtime.base import Runner
# the model-file names are re-exported: callers resolve and run models through this one module
from sr_deploy.runtime.sources import (CHECKPOINT_SUFFIXES, DEFAULT_MODEL, WEIGHTS_DIR, ModelSource,  # noqa: F401
                                       model_identity, onnx_for, precision_sibling, report_is_faithful,
                                       resolve_model, shipped_models, variant_path)

BACKENDS = ("auto", "torch", "onnxruntime", "openvino", "tensorrt")


def gpu_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def make_runner(source: ModelSource, backend: str = "auto", precision: str | None = None, *,
                cuda_graph: bool = False, outscale: float | None = None, ensemble: bool = False,
                measure: bool = True) -> tuple[Runner, str]:
    """Build the runner for ``source`` on ``backend``; returns it and a one-line reason. The one recipe of
    a run's runner (model, outscale, CUDA graph, ensemble) for `run`, the Ray workers and bench.

    ``cuda_graph``: replay the model as a captured CUDA graph (TensorRT, or torch on CUDA).
    ``ensemble``: the x8 self-ensemble around it (runtime/ensemble.py).
    ``outscale``: the run's output factor; where it is a whole number below the model's scale, the runner
    area-resizes its output to it in its graph (its ``scale`` is then the outscale; export/pixels.graph_outscale).
    ``measure``: `auto` may time the candidates when no ranking is cached (False: it follows a cached
    ranking only, else the fixed rules; `srdeploy info` says what a run would pick without a minute of timing)."""
    from sr_deploy.export.pixels import graph_outscale

    runner, why = _make_runner(source, backend, precision, outscale, measure)
    to_scale, full = graph_outscale(runner.scale, outscale), runner.scale
    if to_scale is not None and runner.resample_output(to_scale):
        why += f"; the x{full} output area-resized to x{to_scale} in the graph (--outscale)"
    if cuda_graph:
        if not (runner.on_gpu or runner.backend == "tensorrt") or not hasattr(runner, "cuda_graph"):
            raise InputError(f"--cuda-graph needs a GPU runner (tensorrt, or torch on CUDA); this one is {runner.describe()}")
        runner.cuda_graph = True
        why += "; CUDA graph"
    if ensemble:
        from sr_deploy.runtime.ensemble import EnsembleRunner

        runner = EnsembleRunner(runner)
        why += "; x8 self-ensemble (flips and rotations averaged)"
    return runner, why


def _make_runner(source: ModelSource, backend: str = "auto", precision: str | None = None,
                 outscale: float | None = None, measure: bool = True) -> tuple[Runner, str]:
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; pick one of {', '.join(BACKENDS)}")
    if source.kind == "engine":
        if backend not in ("auto", "tensorrt"):
            raise InputError(f"{source.path}: a TensorRT engine runs only on the tensorrt backend")
        from sr_deploy.runtime.tensorrt_runner import TensorRTRunner

        return TensorRTRunner(source.path), "a TensorRT engine was given"
    if backend == "auto":
        return _auto(source, precision, outscale, measure)
    if backend == "torch":
        if source.kind != "checkpoint":
            raise InputError(f"{source.path}: the torch backend needs a checkpoint (.pt/.safetensors), not ONNX")
        from sr_deploy.export.onnx_export import descriptor_for
        from sr_deploy.models.checkpoint import load_checkpoint
        from sr_deploy.runtime.torch_runner import TorchRunner

        if precision not in (None, "fp32", "bf16", "fp16"):
            raise InputError(f"the torch backend runs fp32, bf16 or fp16 (CUDA), not {precision}; "
                             f"int8 runs on openvino, onnxruntime or tensorrt")
        if precision == "fp16" and not gpu_available():
            raise InputError("torch fp16 needs a CUDA GPU; on the CPU use --precision bf16 (native-bf16 CPUs) or fp32")
        model, _ = load_checkpoint(source.path)
        return TorchRunner(model, descriptor_for(model, name=source.name), precision=precision or "fp32"), "asked for"
    if backend == "tensorrt":
        return cached_engine_runner(source, precision, outscale=outscale)
    onnx_path = _onnx_at_precision(source, precision, backend)
    from sr_deploy.export.onnx_export import read_descriptor

    desc = read_descriptor(onnx_path)
    if backend == "onnxruntime":
        from sr_deploy.runtime.ort_runner import OrtRunner

        if precision not in (None, desc.precision):
            raise InputError(f"onnxruntime runs the ONNX's own precision ({desc.precision}), not {precision}")
        return OrtRunner(onnx_path, desc), "asked for"
    from sr_deploy.runtime.openvino_runner import OpenVINORunner

    if not OpenVINORunner.available():
        raise BackendUnavailable("openvino is not installed: pip install 'srdeploy[openvino]'")
    ov_precision = precision if precision in ("bf16", "fp16") else None
    return OpenVINORunner(onnx_path, desc, precision=ov_precision), "asked for"


def _onnx_at_precision(source: ModelSource, precision: str | None, backend: str) -> Path:
    base = onnx_for(source)
    if precision in ("fp16", "int8"):
        from sr_deploy.export.onnx_export import read_descriptor

        if read_descriptor(base).precision == precision:
            return base
        # beside the fp32 ONNX, or beside the checkpoint (a shipped model's INT8 sits with its weights)
        for sib in (variant_path(base, precision), variant_path(source.path, precision)):
            if sib.exists():
                return sib
        if precision == "fp16" and backend == "openvino":
            from sr_deploy.runtime.openvino_runner import cpu_supports_fp16

            if cpu_supports_fp16():
                return base  # computed in fp16 by OpenVINO's precision hint
            raise InputError(f"no fp16 ONNX beside {base}, and OpenVINO reports no native fp16 on this CPU "
                             f"(AVX512-FP16/AMX-FP16) to compute the fp32 one in: use fp32, bf16 or int8")
        raise InputError(f"no {precision} ONNX beside {base}: make one with `srdeploy build-engine {base} --{precision} --onnx-only`")
    if precision == "bf16" and backend != "openvino":
        raise InputError(f"bf16 runs on the openvino (or torch) backend, not {backend}")
    return base


def _onnx_precision(path: Path) -> str:
    from sr_deploy.export.onnx_export import read_descriptor

    return read_descriptor(path).precision


def _note(line: str) -> None:
    import sys

    print(line, file=sys.stderr)


def _auto(source: ModelSource, precision: str | None, outscale: float | None = None,
          measure: bool = True) -> tuple[Runner, str]:
    """TensorRT engine > ONNX Runtime CUDA > fastest CPU runner installed, at a precision that passed its gate."""
    from sr_deploy.runtime.openvino_runner import OpenVINORunner
    from sr_deploy.runtime.ort_runner import OrtRunner

    if tensorrt_ready() and source.kind in ("checkpoint", "onnx"):
        try:
            runner, why = cached_engine_runner(source, precision, say=_note, outscale=outscale)
            return runner, f"a GPU and TensorRT are present: {why}"
        except QualityGateError as exc:  # auto never runs an engine that failed its gate
            _note(f"note: {exc}")
    if gpu_available() and source.kind == "checkpoint":
        from sr_deploy.export.onnx_export import descriptor_for
        from sr_deploy.models.checkpoint import load_checkpoint
        from sr_deploy.runtime.torch_runner import TorchRunner

        model, _ = load_checkpoint(source.path)
        desc = descriptor_for(model, name=source.name)
        prec = precision or ("fp16" if desc.half_safe else "fp32")
        return (TorchRunner(model, desc, precision=prec),
                f"a GPU without TensorRT: PyTorch on CUDA, {prec}, frames pipelined on CUDA streams")
    if gpu_available():
        try:
            if "CUDAExecutionProvider" in OrtRunner.providers("auto"):
                runner, _ = make_runner(source, "onnxruntime", precision)
                return runner, "a GPU is present and onnxruntime has its CUDA provider (build an engine for more speed)"
        except BackendUnavailable:
            pass
    if source.kind == "checkpoint":
        from sr_deploy.export.onnx_export import DynamicExportUnsupported

        try:
            onnx_for(source)
        except DynamicExportUnsupported as exc:  # a community architecture: PyTorch runs any size
            runner, _ = make_runner(source, "torch", precision)
            return runner, f"CPU only; PyTorch, because this architecture has no dynamic-shape ONNX ({exc.args[0].split(' (')[0]})"
    # a variant file given by path (NAME.fp16.onnx, NAME.int8.onnx) runs as given: `auto` picks
    # among variants only for a model named as a whole (shipped name, checkpoint, fp32 ONNX)
    given_variant = source.kind == "onnx" and _onnx_precision(source.path) != "fp32"
    if precision is None and not given_variant:
        from sr_deploy.runtime import tune

        if tune.enabled():
            ranking, how = tune.cached_ranking(source, background=measure and tune.retime_in_background())
            if ranking is None and measure:
                _note(f"note: {how}")
                ranking, how = tune.measure(source, say=_note), "measured just now"
            for r in ranking or ():
                try:
                    runner, _ = make_runner(source, r["backend"], r["precision"])
                except SRDeployError:
                    continue
                if r.get("streams", 1) > 1:  # frames in flight, as timed (OpenVINO CPU streams)
                    runner.streams = int(r["streams"])
                return runner, f"CPU only; fastest here by measurement ({how}): {tune.describe(ranking)}"
    if precision is None and OpenVINORunner.available():
        from sr_deploy.runtime.openvino_runner import cpu_supports_bf16
        int8 = None if given_variant else precision_sibling(source.path, "int8")
        if int8 is None and source.kind == "checkpoint":
            int8 = precision_sibling(onnx_for(source), "int8")
        from sr_deploy.machine import cpu_has_vnni

        # without measuring, OpenVINO INT8 only where the CPU has INT8 dot products: without them it
        # was measured to lose accuracy the ONNX Runtime gate does not see (tune.FIDELITY_MARGIN_DB)
        if int8 is not None and cpu_has_vnni():
            from sr_deploy.export.onnx_export import read_descriptor

            return (OpenVINORunner(int8, read_descriptor(int8)),
                    "CPU only; OpenVINO on the INT8 Q/DQ ONNX (it passed the gate, faithful to the fp32 output) is fastest")
        if cpu_supports_bf16() and not given_variant:
            runner, _ = make_runner(source, "openvino", "bf16")
            return runner, "CPU only; OpenVINO bf16 (this CPU has native bf16; no INT8 ONNX that passed the fidelity gate ships beside the model)"
    if OpenVINORunner.available():
        runner, _ = make_runner(source, "openvino", precision)
        return runner, "CPU only; OpenVINO is the fastest CPU runner installed"
    from sr_deploy.machine import cpu_has_bf16

    if precision is None and source.kind == "checkpoint" and cpu_has_bf16():
        # measured on a 2-core AVX512-BF16 CPU (benchmarks/results/): torch bf16 runs a frame in about
        # half of ONNX Runtime fp32's time at ΔPSNR ≤ 0.01 dB; ORT's CPU provider has no bf16 kernels
        runner, _ = make_runner(source, "torch", "bf16")
        return runner, "CPU only; OpenVINO is not installed, so PyTorch bf16 (this CPU has native bf16)"
    runner, _ = make_runner(source, "onnxruntime", precision)
    return runner, "CPU only; OpenVINO is not installed, so ONNX Runtime"


def tensorrt_ready() -> bool:
    from sr_deploy.engine.build import tensorrt_available

    return tensorrt_available() and gpu_available()


def default_engine_onnx(source: ModelSource, *, say=None) -> Path:
    """The ONNX a TensorRT engine is built from by default: fp16 (what a datacenter GPU runs fastest, and
    what torch on CUDA defaults to), made once into the cache and gated like any variant (fidelity to the
    fp32 output on real photographs); fp32 where the fp16 variant was refused. An fp16 ONNX shipped or
    built beside the model and passed is used as it is; a variant given by path runs as given."""
    from sr_deploy.export.onnx_export import read_descriptor
    from sr_deploy.fsutil import sha256_file

    fp32 = onnx_for(source)
    if read_descriptor(fp32).precision != "fp32":
        return fp32
    beside = precision_sibling(fp32, "fp16") or (precision_sibling(source.path, "fp16")
                                                  if source.kind == "checkpoint" else None)
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


def cached_engine_runner(source: ModelSource, precision: str | None, *, say=None,
                         outscale: float | None = None) -> tuple[Runner, str]:
    """The TensorRT runner for ``source``: its engine from the cache, built there on first use.

    The engine is built from the uint8-I/O form of the model's ONNX at the asked precision
    (default: fp16, gated and made once into the cache by default_engine_onnx; fp32 where refused) and keyed by
    that ONNX's hash, the precision, the profile, TensorRT's version and the GPU: a new TensorRT or
    GPU gets a new engine, never a mismatched one. With ``outscale`` a whole number below the model's scale,
    the engine area-resizes its output to it on the GPU (a graph of its own, so an engine of its own).
    """
    if not tensorrt_ready():
        from sr_deploy.engine.build import tensorrt_available

        missing = "a CUDA GPU" if tensorrt_available() else "TensorRT (pip install 'srdeploy[gpu]' on a GPU machine)"
        raise BackendUnavailable(f"the tensorrt backend needs TensorRT and an NVIDIA GPU; {missing} is missing here. "
                                 f"On this machine `--backend auto` runs the fastest CPU backend")
    from sr_deploy.engine.build import build_engine, current_key, gpu_total_bytes
    from sr_deploy.engine.key import engine_path
    from sr_deploy.engine.profile import make_profile
    from sr_deploy.export.onnx_export import read_descriptor
    from sr_deploy.runtime.tensorrt_runner import TensorRTRunner

    if precision is None:
        base = default_engine_onnx(source, say=say)
    else:
        base = _onnx_at_precision(source, precision, "tensorrt")
    desc = read_descriptor(base)
    if not desc.pixel_io:
        from sr_deploy.export.pixels import deployed_onnx, graph_outscale

        base = deployed_onnx(base, outscale=graph_outscale(desc.scale, outscale))
        desc = read_descriptor(base)
    profile = make_profile(desc, memory_bytes=gpu_total_bytes())
    key = current_key(base, desc, profile)
    target = cache_root() / "tensorrt" / engine_path(base, key, desc).name
    reference = onnx_for(source)
    if read_descriptor(reference).precision != "fp32":  # a precision ONNX given by path: its fp32 sibling
        sibling = reference.with_name(f"{reference.name.split('.')[0]}.onnx")
        reference = sibling if sibling.exists() else None
    if reference is not None and desc.resizes_output:  # the gate compares like with like
        from sr_deploy.export.pixels import resampled_onnx

        reference = resampled_onnx(reference, desc.scale)
    if target.exists() and target.with_suffix(".json").exists():
        runner = TensorRTRunner(target)
        how = "from the cache"
    else:
        if say:
            say(f"building the TensorRT {desc.precision} engine for {source.name} (first use on this GPU and "
                f"TensorRT; cached in {target.parent})")
        build_engine(base, desc, profile, out=target)
        runner, how = TensorRTRunner(target), "built on first use"
    gate = gate_engine(runner, reference)
    if not gate["passed"]:
        raise QualityGateError(f"{target}: the {desc.precision} engine's output is {gate['psnr_vs_fp32_db']:.1f} dB "
                               f"from the fp32 model's (gate {gate['min_psnr_db']:g} dB): not used; try --precision fp32")
    return runner, f"TensorRT engine {how} ({desc.precision}, {gate['psnr_vs_fp32_db']:.1f} dB vs fp32 on its gate)"


ENGINE_GATE_DB = {"fp32": 50.0, "fp16": 40.0, "int8": 30.0}  # PSNR of the engine's output vs the fp32 ONNX's


def gate_engine(runner: Runner, reference: Path | None) -> dict:
    """Check an engine's output against the fp32 ONNX on ONNX Runtime (CPU) once, on generated images
    (edges, text, gradients, texture: no dataset is needed at run time), and record the verdict in the
    engine's sidecar so later runs reuse it. Catches what the ONNX-level gates cannot see: a TensorRT
    tactic or an fp16 overflow that only the built engine has. Returns the recorded verdict."""
    import numpy as np

    from sr_deploy.export.onnx_export import read_descriptor
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
    from sr_deploy.fsutil import atomic_path

    with atomic_path(sidecar) as tmp:
        tmp.write_text(json.dumps(data, indent=2))
    return verdict


def available_backends() -> list[str]:
    """Backends whose libraries import here (and, for tensorrt, with a GPU)."""
    import importlib.util

    have = ["torch"]
    if importlib.util.find_spec("onnxruntime"):
        have.append("onnxruntime")
    if importlib.util.find_spec("openvino"):
        have.append("openvino")
    if importlib.util.find_spec("tensorrt") and gpu_available():
        have.append("tensorrt")
    return have
