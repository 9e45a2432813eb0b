"""A strict stand-in ``tensorrt`` and a simulated CUDA runtime, to run the builder and runner for real.

Names: every public attribute the stand-in answers must be a name of the real
TensorRT bindings of that major version. The names are read from the compiled
module inside the real wheels (``tensorrt-cu12-bindings`` 10.x and 11.x, which
.ci/install downloads into .venv/api-wheels without installing them): an
identifier string in the binary, or the tail of one (the linker merges
``Logger`` into ``ILogger``), or a name defined in the wheel's Python files.
A name the real module lacks raises AttributeError, as the real module would,
so ``hasattr(trt.BuilderFlag, "FP16")`` is False on 11.x.

Behaviour: the "engine" is the ONNX itself, run by ONNX Runtime when the
simulated stream reaches the enqueued work. The simulated CUDA runtime
executes queued copies and kernels as late as the events allow, so a buffer
reused while in flight produces a wrong frame.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
WHEELS = Path(os.environ.get("SRDEPLOY_API_WHEELS", ROOT / ".venv" / "api-wheels"))
IDENT = re.compile(rb"[A-Za-z_][A-Za-z0-9_]{1,}")


def find_wheel(major: int) -> Path | None:
    found = sorted(WHEELS.glob(f"tensorrt_cu1*_bindings-{major}.*.whl"))
    return found[-1] if found else None


def bindings_names(wheel: Path) -> tuple[str, set[str], set[str]]:
    """(version, whole identifier strings, their proper tails) of the real bindings in ``wheel``."""
    version = wheel.name.split("-")[1]
    whole: set[str] = set()
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            if info.filename.endswith(".so"):
                data = z.read(info)
                for chunk in data.split(b"\0"):
                    if IDENT.fullmatch(chunk):
                        whole.add(chunk.decode())
            elif info.filename.endswith(".py"):
                text = z.read(info).decode()
                for a, b in re.findall(r"(?:def|class)\s+([A-Za-z_]\w*)|^([A-Za-z_]\w*)\s*=", text, re.M):
                    whole.add(a or b)
    tails = {w[i:] for w in whole for i in range(1, len(w) - 1) if w[i:][0].isalpha()}
    return version, whole, tails


class StrictMeta(type):
    """Class attributes (``trt.Logger.WARNING``) are checked too."""

    def __getattribute__(cls, name):
        if not name.startswith("_") and name not in type.__getattribute__(cls, "_names"):
            raise AttributeError(f"tensorrt {type.__getattribute__(cls, '_version')} has no attribute {name!r}")
        return type.__getattribute__(cls, name)


class Strict(metaclass=StrictMeta):
    """Public attributes must be names of the real bindings."""

    _names: set[str] = set()
    _version = ""

    def __getattribute__(self, name):
        if not name.startswith("_") and name not in type(self)._names:
            raise AttributeError(f"tensorrt {type(self)._version} has no attribute {name!r}")
        return object.__getattribute__(self, name)


# ----------------------------------------------------------------------------- simulated CUDA runtime
class SimError(int):
    """cuda-python returns error enums; 0 is success."""

    @property
    def name(self) -> str:
        return "cudaSuccess" if self == 0 else f"cudaError({int(self)})"


OK = SimError(0)


class _Kind:
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class _Capture:
    cudaStreamCaptureModeThreadLocal = 1
    cudaStreamCaptureModeGlobal = 0


class SimCudart:
    """The subset of ``cuda.bindings.runtime`` the pipeline uses, on host memory, with lazy streams."""

    cudaMemcpyKind = _Kind
    cudaStreamCaptureMode = _Capture
    cudaStreamNonBlocking = 1
    cudaEventDisableTiming = 2

    def __init__(self) -> None:
        self.buffers: dict[int, ctypes.Array] = {}
        self.device_ptrs: set[int] = set()
        self.streams: dict[int, list] = {}
        self.events: dict[int, list[int]] = {}  # event -> [last recorded generation, completed generation]
        self.next_handle = 1
        self.pending_h2d = 0
        self.max_pending_h2d = 0
        self.executed: list[tuple] = []
        self.live = 0

    def _buf(self, n: int) -> int:
        b = (ctypes.c_ubyte * max(1, n))()
        addr = ctypes.addressof(b)
        self.buffers[addr] = b
        self.live += 1
        return addr

    def cudaMallocHost(self, n):
        return OK, self._buf(n)

    def cudaMalloc(self, n):
        p = self._buf(n)
        self.device_ptrs.add(p)
        return OK, p

    def _in_use(self, p: int) -> bool:
        return any(op[0] == "copy" and p in (op[1], op[2]) for q in self.streams.values() for op in q)

    def cudaFreeHost(self, p):
        assert not self._in_use(int(p)), "memory freed while a queued copy still uses it"
        del self.buffers[int(p)]
        self.live -= 1
        return (OK,)

    def cudaFree(self, p):
        self.device_ptrs.discard(int(p))
        return self.cudaFreeHost(p)

    def _handle(self) -> int:
        self.next_handle += 1
        return self.next_handle

    def cudaStreamCreateWithFlags(self, flags):
        h = self._handle()
        self.streams[h] = []
        self.live += 1
        return OK, h

    def cudaStreamDestroy(self, s):
        assert not self.streams.pop(int(s)), "stream destroyed with work queued"
        self.live -= 1
        return (OK,)

    def cudaEventCreateWithFlags(self, flags):
        h = self._handle()
        self.events[h] = [0, 0]
        self.live += 1
        return OK, h

    def cudaEventDestroy(self, e):
        del self.events[int(e)]
        self.live -= 1
        return (OK,)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        if kind == _Kind.cudaMemcpyHostToDevice:
            assert int(dst) in self.device_ptrs and int(src) not in self.device_ptrs
            self.pending_h2d += 1
            self.max_pending_h2d = max(self.max_pending_h2d, self.pending_h2d)
        else:
            assert int(src) in self.device_ptrs and int(dst) not in self.device_ptrs
        self.streams[int(stream)].append(("copy", int(dst), int(src), int(n), kind))
        return (OK,)

    def enqueue(self, stream: int, fn, label: str = "kernel") -> None:
        self.streams[int(stream)].append(("call", fn, label))

    def cudaEventRecord(self, e, s):
        ev = self.events[int(e)]
        ev[0] += 1
        self.streams[int(s)].append(("record", int(e), ev[0]))
        return (OK,)

    def cudaStreamWaitEvent(self, s, e, flags):
        self.streams[int(s)].append(("wait", int(e), self.events[int(e)][0]))
        return (OK,)

    def _step(self, stream: int) -> None:
        op = self.streams[stream][0]
        if op[0] == "wait":
            self._complete(op[1], op[2])
        self.streams[stream].pop(0)
        if op[0] == "copy":
            ctypes.memmove(op[1], op[2], op[3])
            if op[4] == _Kind.cudaMemcpyHostToDevice:
                self.pending_h2d -= 1
        elif op[0] == "call":
            op[1]()
        elif op[0] == "record":
            self.events[op[1]][1] = max(self.events[op[1]][1], op[2])
        self.executed.append((stream, op[0]))

    def _complete(self, e: int, gen: int) -> None:
        """Run just enough queued work for event ``e`` to reach generation ``gen``."""
        while self.events[e][1] < gen:
            s = next(s for s, q in self.streams.items() if any(o[0] == "record" and o[1] == e for o in q))
            self._step(s)

    def cudaEventSynchronize(self, e):
        self._complete(int(e), self.events[int(e)][0])
        return (OK,)

    def cudaStreamSynchronize(self, s):
        while self.streams[int(s)]:
            self._step(int(s))
        return (OK,)

    # CUDA graphs: a captured enqueue replays the same kernel
    def cudaStreamBeginCapture(self, s, mode):
        self.capturing = (int(s), len(self.streams[int(s)]))
        return (OK,)

    def cudaStreamEndCapture(self, s):
        s, start = self.capturing
        ops = self.streams[s][start:]
        del self.streams[s][start:]
        return OK, ("graph", ops)

    def cudaGraphInstantiate(self, graph, flags):
        self.live += 2  # graph and exec
        return OK, ("exec", graph[1])

    def cudaGraphLaunch(self, graph_exec, s):
        self.streams[int(s)].extend(graph_exec[1])
        return (OK,)

    def cudaGraphExecDestroy(self, graph_exec):
        self.live -= 1
        return (OK,)

    def cudaGraphDestroy(self, graph):
        self.live -= 1
        return (OK,)


# ----------------------------------------------------------------------------- stand-in tensorrt
MAGIC = b"SRDEPLOY-STANDIN-ENGINE\n"

ENUMS = {
    "BuilderFlag": ["FP16", "BF16", "INT8", "TF32", "STRICT_TYPES", "REFIT", "STRIP_PLAN", "FP8"],
    "NetworkDefinitionCreationFlag": ["EXPLICIT_BATCH", "STRONGLY_TYPED"],
    "MemoryPoolType": ["WORKSPACE", "TACTIC_SHARED_MEMORY"],
    "TensorIOMode": ["NONE", "INPUT", "OUTPUT"],
    "DataType": ["FLOAT", "HALF", "BF16", "INT8", "INT32", "INT64", "UINT8", "BOOL", "FP8"],
}
ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 2: "UINT8", 3: "INT8"}
TRT_TO_NP = {"FLOAT": np.float32, "HALF": np.float16, "UINT8": np.uint8, "INT8": np.int8}


def make_tensorrt(wheel: Path, sim: SimCudart, calls: list | None = None):
    """The stand-in module for the bindings in ``wheel``; ``calls`` collects (method, args) for assertions."""
    version, whole, tails = bindings_names(wheel)
    names = whole | tails
    calls = calls if calls is not None else []
    major = int(version.split(".")[0])

    def strict(cls):
        return type(cls.__name__, (cls,), {"_names": names, "_version": version})

    class EnumValue(int):
        pass

    def enum(name):
        members = {m: EnumValue(i) for i, m in enumerate(ENUMS[name]) if m in whole | tails}
        members = {m: v for m, v in members.items() if m in names}
        if name == "BuilderFlag" and major >= 11:
            # 11.x removed the precision flags: 'INT8' survives as a tail of 'UINT8' in the strings, so the
            # name check alone cannot see it; the 11.x API reference is explicit
            members.pop("INT8", None)
            members.pop("FP16", None)
        obj = strict(type(name, (Strict,), {}))()
        for m, v in members.items():
            object.__setattr__(obj, m, v)
        return obj

    enums = {n: enum(n) for n in ENUMS}
    dt = enums["DataType"]

    @strict
    class Logger(Strict):
        WARNING, ERROR, INFO = 2, 1, 3

        def __init__(self, severity=2):
            pass

    @strict
    class OptimizationProfile(Strict):
        def __init__(self):
            self._shapes = {}

        def set_shape(self, name, min, opt, max):
            calls.append(("set_shape", name, tuple(min), tuple(opt), tuple(max)))
            self._shapes[name] = (tuple(min), tuple(opt), tuple(max))
            return True

    @strict
    class TimingCache(Strict):
        def __init__(self, data):
            self._data = bytes(data)

        def serialize(self):
            return self._data or f"timing cache of tensorrt {version}".encode()

        def combine(self, other, ignore_mismatch):
            calls.append(("combine", ignore_mismatch))
            self._data = self.serialize() + b" + " + other.serialize()
            return True

    @strict
    class BuilderConfig(Strict):
        def __init__(self):
            self._flags, self._profiles, self._cache = set(), [], None

        def set_memory_pool_limit(self, pool, size):
            calls.append(("set_memory_pool_limit", int(pool), size))

        def set_flag(self, flag):
            self._flags.add(int(flag))

        def add_optimization_profile(self, p):
            self._profiles.append(p)
            return len(self._profiles) - 1

        def create_timing_cache(self, data):
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            calls.append(("set_timing_cache", ignore_mismatch))
            # like TensorRT: a cache from another version (or garbage) is refused when mismatches are not ignored
            if cache._data and not cache._data.startswith(f"timing cache of tensorrt {version}".encode()) \
                    and not ignore_mismatch:
                return False
            self._cache = cache
            return True

        def get_timing_cache(self):
            return self._cache

    @strict
    class Network(Strict):
        def __init__(self, flags):
            self._flags, self._onnx = flags, None

        @property
        def num_inputs(self):
            return 1

        def get_input(self, i):
            return self._inp

    @strict
    class Tensor(Strict):
        def __init__(self, name):
            self._n = name

        @property
        def name(self):
            return self._n

    @strict
    class OnnxParser(Strict):
        def __init__(self, network, logger):
            self._network, self._errors = network, []

        def parse_from_file(self, path):
            import onnx

            try:
                proto = onnx.load(str(path))
            except Exception as exc:  # noqa: BLE001
                self._errors.append(str(exc))
                return False
            self._network._onnx = Path(path).read_bytes()
            self._network._inp = Tensor(proto.graph.input[0].name)
            return True

        @property
        def num_errors(self):
            return len(self._errors)

        def get_error(self, i):
            return self._errors[i]

    @strict
    class Builder(Strict):
        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            calls.append(("create_network", flags))
            return Network(flags)

        def create_builder_config(self):
            return BuilderConfig()

        def create_optimization_profile(self):
            return OptimizationProfile()

        def build_serialized_network(self, network, config):
            (p,) = config._profiles
            header = json.dumps({"version": version, "profile": {k: v for k, v in p._shapes.items()},
                                 "flags": sorted(config._flags)}).encode()
            return MAGIC + header + b"\n" + network._onnx

    @strict
    class Engine(Strict):
        def __init__(self, header, onnx_bytes):
            import onnxruntime as ort

            self._header = header
            self._session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
            i, o = self._session.get_inputs()[0], self._session.get_outputs()[0]
            import onnx

            proto = onnx.load_from_string(onnx_bytes)
            self._io = [(i.name, enums["TensorIOMode"].INPUT, proto.graph.input[0].type.tensor_type.elem_type),
                       (o.name, enums["TensorIOMode"].OUTPUT, proto.graph.output[0].type.tensor_type.elem_type)]

        @property
        def num_io_tensors(self):
            return 2

        def get_tensor_name(self, i):
            return self._io[i][0]

        def get_tensor_mode(self, name):
            return next(m for n, m, _ in self._io if n == name)

        def get_tensor_dtype(self, name):
            t = next(e for n, _, e in self._io if n == name)
            return getattr(dt, ONNX_TO_TRT[t])

        def create_execution_context(self):
            return Context(self)

    @strict
    class Context(Strict):
        def __init__(self, engine):
            self._engine, self._addr, self._shape = engine, {}, None

        def set_input_shape(self, name, shape):
            mn, _, mx = self._engine._header["profile"][name]
            if len(shape) != len(mn) or not all(a <= v <= b for a, v, b in zip(mn, shape, mx)):
                return False
            self._shape = tuple(int(v) for v in shape)
            # the output shape, as TensorRT would infer it: run the graph once on zeros
            inp = self._engine._session.get_inputs()[0]
            np_in = TRT_TO_NP[ONNX_TO_TRT[self._engine._io[0][2]]]
            self._out_shape = self._engine._session.run(None, {inp.name: np.zeros(self._shape, np_in)})[0].shape
            return True

        def get_tensor_shape(self, name):
            return self._shape if name == self._engine._io[0][0] else self._out_shape

        def set_tensor_address(self, name, ptr):
            if name not in (self._engine._io[0][0], self._engine._io[1][0]):
                return False
            self._addr[name] = int(ptr)
            return True

        def execute_async_v3(self, stream_handle):
            (in_name, _, in_t), (out_name, _, out_t) = self._engine._io
            src, dst = self._addr[in_name], self._addr[out_name]
            shape, out_shape = self._shape, self._out_shape
            in_np, out_np = TRT_TO_NP[ONNX_TO_TRT[in_t]], TRT_TO_NP[ONNX_TO_TRT[out_t]]

            def kernel():  # reads the device input when the stream gets here, not at enqueue
                n = int(np.prod(shape)) * np.dtype(in_np).itemsize
                x = np.frombuffer((ctypes.c_ubyte * n).from_address(src), dtype=in_np).reshape(shape).copy()
                y = np.ascontiguousarray(self._engine._session.run(None, {in_name: x})[0].astype(out_np))
                assert y.shape == out_shape
                ctypes.memmove(dst, y.ctypes.data, y.nbytes)

            sim.enqueue(int(stream_handle), kernel, "execute_async_v3")
            calls.append(("execute_async_v3", int(stream_handle)))
            return True

    @strict
    class Runtime(Strict):
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            data = bytes(data)
            if not data.startswith(MAGIC):
                return None
            header, _, onnx_bytes = data[len(MAGIC):].partition(b"\n")
            return Engine(json.loads(header), onnx_bytes)

    def nptype(t):
        return TRT_TO_NP[next(k for k in TRT_TO_NP if getattr(dt, k, None) == t)]

    mod = strict(type("tensorrt", (Strict,), {}))()
    for k, v in {"__version__": version, "Logger": Logger, "Builder": Builder, "Runtime": Runtime,
                 "OnnxParser": OnnxParser, "nptype": nptype, **enums}.items():
        object.__setattr__(mod, k, v)
    return mod
