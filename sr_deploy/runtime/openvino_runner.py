"""Runner on OpenVINO's CPU plugin: fp32, bf16 (precision hint) and Q/DQ INT8 ONNX."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sr_deploy.descriptor import ModelDescriptor
from sr_deploy.errors import BackendUnavailable
from sr_deploy.runtime.base import OnnxFileRunner
from sr_deploy.machine import default_threads

HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
_CAPS: set[str] | None = None


def cache_dir() -> Path:
    from sr_deploy.fsutil import cache_root

    return cache_root() / "openvino"


def compute_precisions() -> set[str]:
    """The precisions OpenVINO's CPU plugin computes natively here, asked of the runtime itself
    (OPTIMIZATION_CAPABILITIES: BF16 on AVX512-BF16/AMX, FP16 on AVX512-FP16/AMX-FP16), not read from a
    table of CPU flags. Without OpenVINO: fp32, plus bf16 where the CPU flags say so."""
    global _CAPS
    if _CAPS is None:
        try:
            import openvino as ov

            caps = {str(c).upper() for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")}
            _CAPS = {"fp32"} | {p for p, c in (("bf16", "BF16"), ("fp16", "FP16")) if c in caps}
        except Exception:  # noqa: BLE001 - no OpenVINO, or a plugin that cannot answer
            from sr_deploy.machine import cpu_has_bf16

            _CAPS = {"fp32"} | ({"bf16"} if cpu_has_bf16() else set())
    return set(_CAPS)


def cpu_supports_bf16() -> bool:
    """Native bf16, as OpenVINO reports it (compute_precisions); elsewhere bf16 is emulated and slow."""
    return "bf16" in compute_precisions()


def cpu_supports_fp16() -> bool:
    """Native fp16 compute (AVX512-FP16 / AMX-FP16), as OpenVINO reports it."""
    return "fp16" in compute_precisions()


class OpenVINORunner(OnnxFileRunner):
    """``precision`` is the compute precision: for an fp32 ONNX, fp32 or bf16 (the hint);
    an fp16 or int8 ONNX runs as stored, its non-quantized parts in f32.
    OpenVINO may default to bf16 on capable CPUs, so the hint is always set explicitly."""

    backend = "openvino"
    # its uint8 graph returns planes, interleaved on the host: OpenVINO's Transpose of the output bytes was
    # 24-30 ms of a 250 ms light_x4 frame at 270x480 (2-core AVX2 EPYC), cv2.merge 1.1 ms; bit-identical.
    # ONNX Runtime's transpose costs nothing measurable there, so it keeps the NHWC graph
    u8_layout = "nhwc-planar"
    # measured peak RSS growth per LR pixel, srresnet_x4 fp32 (runtime/base.py Runner.work_factor): 5.3-5.6 KB
    # against the estimate's 8.9 KB. It decides tiling: at 1.0, srresnet_x4's 270x480 video frames ran as
    # tiles blended on the host (bf16 end to end 0.69 frames/s against 1.3 whole, AVX512-BF16 EPYC)
    work_factor = 0.65

    def __init__(self, onnx_path: str | os.PathLike, descriptor: ModelDescriptor, *, precision: str | None = None,
                 threads: int = 0, pixels: bool = True) -> None:
        precision = precision or descriptor.precision
        if precision not in HINTS:
            raise ValueError(f"openvino precision must be one of {', '.join(HINTS)}, got {precision}")
        super().__init__(descriptor, precision)
        self.path, self.threads = Path(onnx_path), threads or default_threads()
        self.pixels = pixels  # infer_u8 runs the uint8-I/O form of the graph (export/pixels.py)
        # frames in flight (OpenVINO CPU streams, stream_u8): set from tune's ranking; None: SRDEPLOY_OV_STREAMS
        # (a number or auto), else one request at a time on every core
        self.streams: int | None = None

    def bytes_per_pixel(self) -> float:
        """Activations in bf16 (the bf16 hint, and INT8's float layers where the CPU has bf16) take half."""
        half = self.precision in ("bf16", "fp16") or (self.precision == "int8" and cpu_supports_bf16())
        return super().bytes_per_pixel() * (0.5 if half else 1.0)

    @staticmethod
    def available() -> bool:
        try:
            import openvino  # noqa: F401
        except ImportError:
            return False
        return True

    def _activate(self) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendUnavailable("openvino is not installed: pip install 'srdeploy[openvino]'") from exc
        if self.precision == "bf16" and not cpu_supports_bf16():
            raise BackendUnavailable("this CPU has no native bf16 (AVX512-BF16/AMX): use fp32 or int8")
        hint = HINTS[self.precision]
        if self.precision == "fp16" and not cpu_supports_fp16():
            if self.descriptor.precision != "fp16":
                raise BackendUnavailable("OpenVINO reports no native fp16 on this CPU (AVX512-FP16/AMX-FP16): "
                                         "use fp32, bf16 or int8")
            hint = "f32"  # an fp16 ONNX's weights, computed in f32
        if self.precision == "int8" and cpu_supports_bf16():
            # the layers left in float (first/last conv, PReLU, pixel shuffle) run in bf16 where the CPU
            # has it natively: measured 199 vs 291 ms per 128x128 frame, +0.006 dB ΔPSNR on Set5
            hint = "bf16"
        self.hint = hint
        self.core = ov.Core()
        cache = cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        self.core.set_property({"CACHE_DIR": str(cache)})
        self.config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            self.config["INFERENCE_NUM_THREADS"] = self.threads
        self._requests: dict[bool, object] = {}
        self._stream_requests: list | None = None  # made by _in_flight on first use
        self.request = self._request(self.descriptor.pixel_io)

    def _graph(self, u8: bool) -> Path:
        return self._u8_graph() if u8 else self.path

    def _request(self, u8: bool):
        """An infer request on the float graph or on its uint8-I/O form, compiled on first use."""
        if u8 not in self._requests:
            self._requests[u8] = self.core.compile_model(str(self._graph(u8)), "CPU", self.config).create_infer_request()
        return self._requests[u8]

    def _deactivate(self) -> None:
        del self.request
        self._requests.clear()
        self._stream_requests = None

    def _in_flight(self) -> list:
        """Infer requests of a uint8 graph compiled with ``SRDEPLOY_OV_STREAMS`` CPU streams (``auto``:
        OpenVINO's THROUGHPUT choice), each stream on its share of the cores, so that several frames are
        computed at once. An empty list (the default): one request at a time on every core.

        Off by default because it is a per-machine choice: on a 2-core AVX2 EPYC two streams ran light_x4
        and srresnet_x4 at 270x480 3-6% slower than one request on both cores (same output, bit for bit),
        while vs-mlrt measured two streams 20% faster on a 2-core AMX Xeon (issue 40)."""
        if self._stream_requests is None:
            wanted = (str(self.streams) if self.streams is not None
                      else os.environ.get("SRDEPLOY_OV_STREAMS", "").strip().lower())
            requests: list = []
            if wanted not in ("", "0", "1"):
                config = {k: v for k, v in self.config.items() if k != "PERFORMANCE_HINT"}
                if wanted == "auto":
                    config["PERFORMANCE_HINT"] = "THROUGHPUT"
                else:
                    config["NUM_STREAMS"] = int(wanted)
                compiled = self.core.compile_model(str(self._graph(True)), "CPU", config)
                n = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")) if wanted == "auto" else int(wanted)
                requests = [compiled.create_infer_request() for _ in range(n)] if n > 1 else []
            self._stream_requests = requests
        return self._stream_requests

    def stream_u8(self, batches):
        """``infer_u8`` over a stream of batches with several in flight (``_in_flight``), outputs in order;
        batches the graph must pad or split go one at a time, in their turn."""
        from collections import deque

        if not self.active:
            self.activate()
        if not (self.pixels or self.descriptor.pixel_io):
            yield from super().stream_u8(batches)
            return
        requests = self._in_flight()
        if not requests:
            yield from super().stream_u8(batches)
            return
        pending: deque = deque()  # (batch, request), oldest first

        def oldest():
            b, req = pending.popleft()
            req.wait()
            return self._checked(b, self._u8_out(np.array(req.get_output_tensor(0).data, copy=True)), 1)

        free = deque(requests)
        for b in batches:
            fits = (b.dtype == np.uint8 and b.ndim == 4 and self._fit(b, 1)[1] is None
                    and not (self.descriptor.max_batch and len(b) > self.descriptor.max_batch))
            if not fits:
                while pending:
                    yield oldest()
                yield self.infer_u8(b)  # padded, split or refused with infer_u8's own message
                continue
            if not free:
                req = pending[0][1]
                yield oldest()
                free.append(req)
            req = free.popleft()
            b = np.ascontiguousarray(b)
            req.start_async({0: b})
            pending.append((b, req))
        while pending:
            yield oldest()

    def describe(self) -> str:
        extra = " (float layers bf16)" if self.precision == "int8" and getattr(self, "hint", "") == "bf16" else ""
        return f"openvino {self.precision}{extra}"

    def _graph_runner(self, path: Path):
        key = str(path)
        if key not in self._requests:
            self._requests[key] = self.core.compile_model(key, "CPU", self.config).create_infer_request()
        req = self._requests[key]

        def run(batch: np.ndarray) -> np.ndarray:
            req.infer({0: batch})
            return np.array(req.get_output_tensor(0).data, copy=True)

        return run

    def _run(self, u8: bool, batch: np.ndarray) -> np.ndarray:
        req = self._request(u8)
        req.infer({0: batch})
        return np.array(req.get_output_tensor(0).data, copy=True)

