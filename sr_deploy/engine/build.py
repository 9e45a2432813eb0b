"""Build a TensorRT engine from an srdeploy ONNX. Thin by design: all policy lives in profile.py and key.py.

Precision lives in the ONNX (fp16 weights/compute, or int8 Q/DQ), so the
network is created strongly typed where TensorRT has that mode (10.x; 11.x
always is). Only an older TensorRT without strong typing gets the
FP16/INT8 builder flags, and only if it still has them.
"""

from __future__ import annotations

from pathlib import Path

from sr_deploy.descriptor import ModelDescriptor
from sr_deploy.engine.key import EngineKey, engine_path, make_key, write_sidecar
from sr_deploy.engine.profile import Profile
from sr_deploy.errors import BackendUnavailable, ModelError
from sr_deploy.fsutil import atomic_path, cache_root, sha256_file


def tensorrt_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


def gpu_identity() -> tuple[str, str]:
    """(GPU name, compute capability 'major.minor') of device 0, via cuda-python or torch."""
    from sr_deploy.cuda import cudart as _cudart

    try:
        cudart = _cudart()
    except BackendUnavailable:
        cudart = None
    if cudart is not None:
        err, prop = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
            return name.strip("\x00 "), f"{prop.major}.{prop.minor}"
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailable("no CUDA GPU here")
    major, minor = torch.cuda.get_device_capability(0)
    return torch.cuda.get_device_name(0), f"{major}.{minor}"


def gpu_total_bytes() -> int | None:
    """Total memory of GPU 0 (cuda-python, else torch); None where it cannot be read. The profile is sized
    from it, not from the free memory of the moment: a busy GPU must not change the engine key."""
    try:
        from sr_deploy.cuda import check_cuda, cudart

        _free, total = check_cuda(cudart().cudaMemGetInfo(), "cudaMemGetInfo")
        return int(total)
    except Exception:  # noqa: BLE001 - fall back to torch, then to "unknown"
        pass
    try:
        import torch

        return int(torch.cuda.get_device_properties(0).total_memory) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001
        return None


def require_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable("TensorRT is not installed here (pip install 'srdeploy[gpu]' on a GPU machine)") from exc
    return trt


def current_key(onnx_path: Path, desc: ModelDescriptor, profile: Profile) -> EngineKey:
    trt = require_tensorrt()
    gpu, cc = gpu_identity()
    return make_key(sha256_file(onnx_path), desc.precision, profile, tensorrt=trt.__version__, gpu=gpu,
                    compute_capability=cc)


def timing_cache_path(tensorrt: str, gpu: str, compute_capability: str) -> Path:
    """One timing cache per TensorRT version and GPU: another's tactics are useless or refused."""
    safe = "".join(ch if ch.isalnum() else "-" for ch in gpu).strip("-")
    return cache_root() / "tensorrt" / f"timing-trt{tensorrt}-{safe}-sm{compute_capability.replace('.', '')}.cache"


def build_engine(onnx_path: Path, desc: ModelDescriptor, profile: Profile, *, out: Path | None = None,
                 workspace_gb: float = 4.0, overwrite: bool = True) -> Path:
    """Build (or reuse) the engine for this ONNX, profile, TensorRT and GPU; returns its path."""
    trt = require_tensorrt()
    key = current_key(onnx_path, desc, profile)
    out = out or engine_path(onnx_path, key, desc)
    if out.exists() and not overwrite:
        return out
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    strongly_typed = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    if strongly_typed and int(trt.__version__.split(".")[0]) < 11:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"{onnx_path}: TensorRT cannot parse this ONNX ({errors})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if not strongly_typed:
        flag = {"fp16": "FP16", "int8": "INT8"}.get(desc.precision)
        if flag and hasattr(trt.BuilderFlag, flag):
            config.set_flag(getattr(trt.BuilderFlag, flag))
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(network.get_input(0).name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(opt_profile)
    from filelock import FileLock

    cache_file = timing_cache_path(key.tensorrt, key.gpu, key.compute_capability)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    # builds in parallel processes share the cache: read under the lock, build without it (minutes, during
    # which other builds go on), then merge what they wrote meanwhile with ours under it again
    lock = FileLock(str(cache_file) + ".lock")
    with lock:
        read = cache_file.read_bytes() if cache_file.exists() else b""
    cache = config.create_timing_cache(read)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        # a cache TensorRT refuses (another version, corrupt) is dropped and rebuilt, never fatal
        cache = config.create_timing_cache(b"")
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
            raise ModelError("TensorRT refused an empty timing cache")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(f"{onnx_path}: TensorRT failed to build an engine (see the messages above)")
    ours = config.get_timing_cache()
    with lock:
        now = cache_file.read_bytes() if cache_file.exists() else b""
        merged = ours
        if now and now != read:  # another build wrote it since we read it: keep both builds' timings
            theirs = config.create_timing_cache(now)
            if theirs is not None and theirs.combine(ours, False):
                merged = theirs
        with atomic_path(cache_file) as tmp:
            tmp.write_bytes(bytes(merged.serialize()))
    with atomic_path(out) as tmp:
        tmp.write_bytes(bytes(serialized))
    write_sidecar(out, key, desc)
    return out
