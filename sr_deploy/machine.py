"""The machine: CPU model and flags (the one native-bf16 probe), memory, versions, peak RSS."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def default_threads() -> int:
    """Threads a CPU runner uses when none is asked for: ``$SRDEPLOY_THREADS``, else 0 (the library's
    choice: all cores). Ray workers sharing a machine get their share this way (media/distributed.py)."""
    try:
        return max(0, int(os.environ.get("SRDEPLOY_THREADS", "0") or 0))
    except ValueError:
        return 0


def cpu_has_vnni() -> bool:
    """INT8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX-INT8). Without them x86 INT8 kernels
    multiply through 16-bit saturating adds, which OpenVINO does not compensate for (runtime/tune.py)."""
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def cpu_has_bf16() -> bool:
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


# where a Linux NVIDIA driver (or WSL's GPU bridge) is, one of these exists
NVIDIA_DEVICE_FILES = ("/dev/nvidiactl", "/proc/driver/nvidia", "/dev/dxg")


def nvidia_driver_present() -> bool:
    """False where a CUDA GPU cannot be: Linux without the driver's device files. Asked before PyTorch is
    imported to find out, which cost a CPU video run 1 s of its 5 (elsewhere True: ask torch)."""
    return not sys.platform.startswith("linux") or any(os.path.exists(p) for p in NVIDIA_DEVICE_FILES)


def cpu_name(cpuinfo: str | None = None) -> str:
    """The CPU's model name with its family and model numbers: a cloud CPU's model name can be as bare as
    "AMD EPYC", which names a Zen 4 (family 25) and a Zen 5 (family 26) alike, and figures measured on the
    two differ (OpenVINO bf16 srresnet_x4 at 270x480: 1.41 and 1.32 frames/s)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read(1 << 16)  # the first processor's block is all that is read
        except OSError:
            return platform.processor()
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor()
    if fields.get("cpu family") and fields.get("model"):
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def machine_info() -> dict:
    cpu = cpu_name()
    total = _physical_memory_bytes()
    mem_gb = round(total / 2**30, 1) if total else None
    versions = {}
    for pkg in ("srdeploy", "torch", "onnxruntime", "openvino", "av", "tensorrt"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    gpu = None
    try:
        if nvidia_driver_present():
            import torch

            if torch.cuda.is_available():
                gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    flags = cpu_flags()
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb, "gpu": gpu, "python": platform.python_version(),
            "os": platform.platform(), "isa": sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8", "amx_fp16"}),
            "versions": versions}


def fp32_peak_gflops() -> tuple[float, str] | None:
    """A nominal fp32 peak for this CPU and how it was reckoned: cores x FMA lanes x 2 FLOP x two FMA
    units x clock (/proc/cpuinfo's current MHz; a VM's nominal clock). AVX-512 counts 16 lanes, AVX2+FMA 8.
    Nominal, not measured: parts with one AVX-512 FMA unit or lower AVX clocks reach less."""
    flags = cpu_flags()
    lanes = 16 if "avx512f" in flags else 8 if {"avx2", "fma"} <= flags else 4 if "sse2" in flags else 0
    mhz = 0.0
    try:
        with open("/proc/cpuinfo") as f:
            mhz = max((float(l.split(":", 1)[1]) for l in f if l.startswith("cpu MHz")), default=0.0)
    except (OSError, ValueError):
        pass
    cores = os.cpu_count() or 1
    if not lanes or not mhz:
        return None
    peak = cores * lanes * 2 * 2 * mhz / 1000
    return peak, f"{cores} cores x {lanes} fp32 lanes x 2 (FMA) x 2 units x {mhz / 1000:.2f} GHz"


def available_memory_bytes() -> int:
    """Memory the kernel can hand out now without swapping (MemAvailable), else total physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return _physical_memory_bytes() or 8 << 30


def _physical_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) for this process, where Linux allows it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
