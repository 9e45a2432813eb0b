"""Resolve `--model` and `--backend` into a Runner, and say why it was chosen."""

from __future__ import annotations

from sr_deploy.errors import (BackendUnavailable, DynamicExportUnsupported, InputError, QualityGateError,
                              SRDeployError)
from sr_deploy.runtime.base import Runner
from sr_deploy.runtime.chain import ModelChain
# the model-file names are re-exported: callers resolve and run models through this one module
from sr_deploy.runtime.sources import (CHECKPOINT_SUFFIXES, DEFAULT_MODEL, WEIGHTS_DIR, ModelSource,  # noqa: F401
                                       model_identity, onnx_for, precision_sibling, resolve_model, shipped_models)

BACKENDS = ("auto", "torch", "onnxruntime", "openvino", "tensorrt")


def gpu_available() -> bool:
    """A CUDA GPU that PyTorch can use (torch is imported only where a driver may be)."""
    from sr_deploy.machine import nvidia_driver_present

    if not nvidia_driver_present():
        return False
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
    onnx_path = ModelChain(source).variant(precision, backend)
    from sr_deploy.export.onnx_file import read_descriptor

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
    chain = ModelChain(source)
    if source.kind == "checkpoint":
        try:
            chain.onnx()
        except DynamicExportUnsupported as exc:  # a community architecture: PyTorch runs any size
            runner, _ = make_runner(source, "torch", precision)
            return runner, f"CPU only; PyTorch, because this architecture has no dynamic-shape ONNX ({exc.args[0].split(' (')[0]})"
    given_variant = chain.given_variant()  # runs as given: no ranking, no other variant
    if precision is None and not given_variant:
        from sr_deploy.runtime import tune

        if tune.enabled():
            background = measure and tune.retime_in_background()
            ranking, how = tune.cached_ranking(source, background=background)
            if ranking is None and background:
                # never timed here (or the ranking is for another machine): this run follows the fixed rules
                # below at once; the runners are timed once it ends (16 s for light_x4 on a 2-core EPYC)
                try:
                    pid, log = tune.time_after_exit(source)
                    later = (f"the CPU runners are timed once it ends (process {pid}, log {log}; "
                             "`srdeploy tune` times them now)")
                except OSError as exc:  # a cache folder that cannot be written: the run goes on
                    later = f"the CPU runners could not be timed after it ({exc.strerror or exc})"
                _note(f"note: {how}; this run follows the fixed rules, and {later}")
            elif ranking is None and measure:
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
        int8 = chain.gated("int8")
        from sr_deploy.machine import cpu_has_vnni

        # without measuring, OpenVINO INT8 only where the CPU has INT8 dot products: without them it
        # was measured to lose accuracy the ONNX Runtime gate does not see (tune.FIDELITY_MARGIN_DB)
        if int8 is not None and cpu_has_vnni():
            from sr_deploy.export.onnx_file import read_descriptor

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


def cached_engine_runner(source: ModelSource, precision: str | None, *, say=None,
                         outscale: float | None = None) -> tuple[Runner, str]:
    """The TensorRT runner for ``source``: its engine from the cache, built there on first use and gated
    (runtime/chain.py ``ModelChain.engine``); default precision fp16 where its variant passed, else fp32."""
    if not tensorrt_ready():
        from sr_deploy.engine.build import tensorrt_available

        missing = "a CUDA GPU" if tensorrt_available() else "TensorRT (pip install 'srdeploy[gpu]' on a GPU machine)"
        raise BackendUnavailable(f"the tensorrt backend needs TensorRT and an NVIDIA GPU; {missing} is missing here. "
                                 f"On this machine `--backend auto` runs the fastest CPU backend")
    return ModelChain(source).engine(precision, outscale=outscale, say=say)


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
