"""The Runner contract every backend implements."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from sr_deploy.descriptor import ModelDescriptor

log = logging.getLogger(__name__)


def pad_edges(batch: np.ndarray, hdim: int, h: int, w: int) -> np.ndarray:
    """``batch`` (spatial dims at ``hdim``) edge-padded at the bottom and right up to at least h x w."""
    ph, pw = max(0, h - batch.shape[hdim]), max(0, w - batch.shape[hdim + 1])
    if not ph and not pw:
        return batch
    pad = [(0, 0)] * batch.ndim
    pad[hdim], pad[hdim + 1] = (0, ph), (0, pw)
    return np.pad(batch, pad, mode="edge")


@dataclass(frozen=True)
class InputSpec:
    """What a runner accepts: NCHW float32 in [0, 1] within these bounds."""

    channels: int
    scale: int
    size_multiple: int = 1
    min_hw: tuple[int, int] = (1, 1)
    max_hw: tuple[int, int] | None = None  # None: any size (memory permitting)
    max_batch: int | None = None


class Runner(ABC):
    """A backend that upscales batches of frames.

    Use as a context manager (``with runner: runner.infer(x)``) or call
    ``activate()`` / ``deactivate()``. Two entry points:

    - ``infer_u8``: NHWC uint8 RGB in, NHWC uint8 out. This is what media uses. A runner whose
      graph has pixels inside (export/pixels.py) passes the bytes straight through; the others
      fall back to the host conversion in ``_infer_u8``.
    - ``infer``: NCHW float32 in the value range, the same clamped; for parity tests and bench.
    """

    backend: str = ""
    # working memory per input pixel relative to the descriptor's activation estimate; measured peak RSS
    # growth per LR pixel for srresnet_x4 between 128x128 and 384x384 inputs (2-core AVX2 EPYC): ONNX
    # Runtime 11.5 KB, OpenVINO 5.3-5.6 KB, against the estimate's 8.9 KB
    work_factor: float = 1.0
    WORK_CAP = 1 << 30  # default working memory for one inference call on the host, before tiling

    def __init__(self, descriptor: ModelDescriptor, precision: str = "fp32") -> None:
        self.descriptor = descriptor
        self.precision = precision
        self.active = False

    @property
    def on_gpu(self) -> bool:
        """True when the model runs on a GPU (media then prefers the GPU encoder)."""
        return False

    @property
    def scale(self) -> int:
        return self.descriptor.scale

    def bytes_per_pixel(self) -> float:
        """Working memory of one inference call per input pixel (batch included), an upper estimate."""
        from sr_deploy.engine.profile import activation_bytes_per_pixel

        return activation_bytes_per_pixel(self.descriptor) * self.work_factor

    def memory_budget(self) -> int:
        """Bytes one inference call may use before frames are tiled: on the host, the smaller of
        WORK_CAP and a quarter of the memory available now."""
        from sr_deploy.machine import available_memory_bytes

        return int(min(self.WORK_CAP, available_memory_bytes() // 4))

    def activate(self) -> None:
        if not self.active:
            self._activate()
            self.active = True

    def deactivate(self) -> None:
        if self.active:
            self._deactivate()
            self.active = False

    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if not self.active:
            self.activate()
        if batch.ndim != 4 or batch.shape[1] != self.descriptor.in_channels:
            raise ValueError(f"expected an NCHW batch with {self.descriptor.in_channels} channels, got {batch.shape}")
        out = self._fitted(np.ascontiguousarray(batch, dtype=np.float32), self._infer, 2)
        lo, hi = self.descriptor.value_range
        return np.clip(out, lo, hi, out=out)

    def infer_u8(self, batch: np.ndarray) -> np.ndarray:
        """NHWC uint8 RGB (N, H, W, C) → NHWC uint8 (N, sH, sW, C), rounded half to even like ``np.rint``."""
        if not self.active:
            self.activate()
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[3] != self.descriptor.in_channels:
            raise ValueError(f"expected an NHWC uint8 batch with {self.descriptor.in_channels} channels, "
                             f"got {batch.dtype} {batch.shape}")
        return self._fitted(np.ascontiguousarray(batch), self._infer_u8, 1)

    def _fitted(self, batch: np.ndarray, run, hdim: int) -> np.ndarray:
        """``run(batch)`` on a graph with size requirements (descriptor.fixed_hw, size_multiple,
        size_minimum) or a fixed batch (max_batch): inputs padded (edge) to the size and cropped after,
        batches split; otherwise ``run`` as is."""
        most = self.descriptor.max_batch
        batch, hw = self._fit(batch, hdim)
        if hw is None and not most:
            return self._checked(batch, run(batch), hdim)
        step = most or len(batch)
        outs = [run(np.ascontiguousarray(batch[i:i + step])) for i in range(0, len(batch), step)]
        out = outs[0] if len(outs) == 1 else np.concatenate(outs)
        return self._crop(self._checked(batch, out, hdim), hw, hdim)

    def _checked(self, batch: np.ndarray, out: np.ndarray, hdim: int) -> np.ndarray:
        """The graph's output against what its descriptor claims (scale, channels): a file's metadata is not
        trusted, and a x4 graph that claims x2 would otherwise be cropped to its top-left quarter."""
        d, s = self.descriptor, self.descriptor.scale
        cdim = 1 if hdim == 2 else 3
        want = (batch.shape[hdim] * s, batch.shape[hdim + 1] * s, d.out_channels)
        got = (out.shape[hdim], out.shape[hdim + 1], out.shape[cdim]) if out.ndim == 4 else None
        if got != want:
            from sr_deploy.errors import ModelError

            raise ModelError(f"{d.name}: the graph returns {got[1]}x{got[0]}x{got[2] if got else '?'} for a "
                             f"{batch.shape[hdim + 1]}x{batch.shape[hdim]} input, but its descriptor claims x{s} "
                             f"with {d.out_channels} channels; the file's metadata is wrong (export it again)"
                             if got else f"{d.name}: the graph returns an output of shape {out.shape}, not an image batch")
        return out

    def _fit(self, batch: np.ndarray, hdim: int) -> tuple[np.ndarray, tuple[int, int] | None]:
        """``batch`` edge-padded to the graph's size requirements, and its own (h, w) to crop back to;
        (batch, None) when it has none."""
        d = self.descriptor
        fixed, m, least = d.fixed_hw, max(1, d.size_multiple), d.size_minimum
        if not fixed and m == 1 and not least:
            return batch, None
        h, w = batch.shape[hdim], batch.shape[hdim + 1]
        if fixed:
            if h > fixed[0] or w > fixed[1]:
                raise ValueError(f"this graph takes {fixed[0]}x{fixed[1]} inputs, got {h}x{w} (tile the frame)")
            th, tw = fixed
        else:  # the architecture's size requirements (community models)
            th, tw = -(-max(h, least) // m) * m, -(-max(w, least) // m) * m
        return pad_edges(batch, hdim, th, tw), (h, w)

    def _crop(self, out: np.ndarray, hw: tuple[int, int] | None, hdim: int) -> np.ndarray:
        if hw is None:
            return out
        h, w, s = hw[0], hw[1], self.scale
        return np.ascontiguousarray(out[:, :, : h * s, : w * s] if hdim == 2 else out[:, : h * s, : w * s])

    def resample_output(self, to_scale: int) -> bool:
        """Area-resize the model's output to ``to_scale`` inside the graph from now on (``--outscale`` at a
        whole factor below the model's scale; export/pixels.resample_output); ``scale`` becomes ``to_scale``.
        Call it before the runner is active. False where this runner cannot: the caller then resizes on
        the host."""
        return False

    def _resamplable(self, to_scale: int) -> bool:
        """What every resample_output asks first: not yet active, and a whole factor below the scale."""
        from sr_deploy.export.pixels import graph_outscale

        return not self.active and graph_outscale(self.scale, to_scale) is not None

    # whether stream_yuv runs: frames in 4:2:0 YUV, the colour conversions in the runner's graph
    yuv_capable = False

    def stream_yuv(self, batches: Iterable[np.ndarray], inp, out) -> Iterator[np.ndarray]:
        """Batches of ``(N, 3H/2, W)`` frames laid out as YuvSpec ``inp`` → upscaled, laid out as ``out``."""
        raise NotImplementedError(f"{self.backend} has no YUV graph")

    def stream_u8(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """``infer_u8`` over a stream of batches, outputs in order. GPU runners override it to keep
        several batches in flight (runtime/pipeline.py); on the CPU one at a time is all there is."""
        for b in batches:
            yield self.infer_u8(b)

    def _infer_u8(self, batch: np.ndarray) -> np.ndarray:
        # Host fallback for runners without pixels in their graph: this float round trip is what
        # the uint8-I/O graphs remove (about 25 ms per 1080p output frame on a 2-core EPYC).
        x = batch.transpose(0, 3, 1, 2).astype(np.float32)
        x /= 255.0
        y = self.infer(x)
        return np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)

    def input_spec(self) -> InputSpec:
        fixed = self.descriptor.fixed_hw
        return InputSpec(channels=self.descriptor.in_channels, scale=self.descriptor.scale,
                         size_multiple=self.descriptor.size_multiple, max_hw=tuple(fixed) if fixed else None,
                         max_batch=self.descriptor.max_batch or None)

    def describe(self) -> str:
        return f"{self.backend} {self.precision}"

    @abstractmethod
    def _activate(self) -> None: ...

    def _u8_to_float(self, run_u8, batch: np.ndarray) -> np.ndarray:
        """Float entry on a graph that only takes pixels: quantize to 8 bits (lossy), run, rescale. Said
        once per runner when the input had finer steps than 8 bits (16-bit images, 10-bit video)."""
        scaled = batch * 255.0
        px = np.clip(np.rint(scaled), 0, 255)
        if not getattr(self, "_said_8bit", False) and float(np.abs(px - scaled).max(initial=0.0)) > 1e-3:
            self._said_8bit = True
            log.warning("note: the %s model takes 8-bit pixels only: input finer than 8 bits (16-bit images, 10-bit "
                        "video) is rounded to 8 bits before the model; --backend torch keeps every bit",
                        self.describe())
        px = px.astype(np.uint8).transpose(0, 2, 3, 1)
        return run_u8(np.ascontiguousarray(px)).transpose(0, 3, 1, 2).astype(np.float32) / 255.0

    def _deactivate(self) -> None:
        pass

    @abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray: ...


def interleave_planes(y: np.ndarray) -> np.ndarray:
    """(N, C, H, W) uint8 planes → (N, H, W, C). cv2.merge interleaves at memory speed: for a 1080x1920 RGB
    frame 1.1 ms on a 2-core AVX2 EPYC, against 14.5 ms for numpy's transpose and 24 ms for the same
    Transpose inside an OpenVINO graph."""
    import cv2

    n, c, h, w = y.shape
    out = np.empty((n, h, w, c), np.uint8)
    for i in range(n):
        if c == 1:
            out[i, ..., 0] = y[i, 0]
        else:
            cv2.merge(list(y[i]), dst=out[i])
    return out


class OnnxFileRunner(Runner):
    """A runner of an ONNX file (``self.path``) compiled in two forms: float I/O, and uint8 pixel I/O
    (export/pixels.py) when ``self.pixels``. Subclasses give ``_run(u8, batch)``; the entries are shared."""

    pixels: bool = True
    u8_layout = "nhwc"  # the uint8 graph a runner makes of a float ONNX (export/pixels.py LAYOUTS)

    @abstractmethod
    def _run(self, u8: bool, batch: np.ndarray) -> np.ndarray: ...

    def _u8_graph(self):
        """The uint8-I/O form of the file: the file itself when it has pixels inside, else made once into the cache."""
        if self.descriptor.pixel_io:
            return self.path
        from sr_deploy.export.pixels import uint8_onnx

        return uint8_onnx(self.path, layout=self.u8_layout)

    def _u8_out(self, y: np.ndarray) -> np.ndarray:
        """The uint8 graph's output as NHWC: planes interleaved on the host where the graph returns planes."""
        io = self.descriptor.io if self.descriptor.pixel_io else f"uint8-{self.u8_layout}"
        return interleave_planes(y) if io == "uint8-nhwc-planar" else y

    def _run_u8(self, batch: np.ndarray) -> np.ndarray:
        return self._u8_out(self._run(True, batch))

    @property
    def yuv_capable(self) -> bool:  # a float-I/O file can be wrapped (export/yuv.py); one with pixels inside cannot
        return self.descriptor.io == "float"

    _yuv_graphs: dict | None = None  # (file, specs) -> its YUV form's path: the cache lookup hashes the file

    def stream_yuv(self, batches: Iterable[np.ndarray], inp, out) -> Iterator[np.ndarray]:
        """The file's YUV-I/O form (export/yuv.yuv_onnx, made once into the cache) over ``batches``; looked up
        once per runner, not per call (parallel segments call once per batch)."""
        from sr_deploy.export.yuv import yuv_onnx

        if not self.active:
            self.activate()
        if self._yuv_graphs is None:
            self._yuv_graphs = {}
        key = (self.path, inp, out)
        if key not in self._yuv_graphs:
            self._yuv_graphs[key] = yuv_onnx(self.path, inp, out)
        run = self._graph_runner(self._yuv_graphs[key])
        for b in batches:
            yield run(np.ascontiguousarray(b))

    @abstractmethod
    def _graph_runner(self, path: Path):
        """A function running the ONNX at ``path`` (another form of this file) as this runner runs its own."""

    def resample_output(self, to_scale: int) -> bool:
        """Run the file's resampled form instead. A graph with pixels already inside (given by path)
        rounds before any resampling could run: left as it is."""
        if not self._resamplable(to_scale) or self.descriptor.pixel_io:
            return False
        from sr_deploy.export.onnx_file import read_descriptor
        from sr_deploy.export.pixels import resampled_onnx

        self.path = resampled_onnx(self.path, to_scale)
        self.descriptor = read_descriptor(self.path)
        return True

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        if self.descriptor.pixel_io:
            return self._u8_to_float(self._run_u8, batch)
        return self._run(False, batch).astype(np.float32, copy=False)

    def _infer_u8(self, batch: np.ndarray) -> np.ndarray:
        if self.pixels or self.descriptor.pixel_io:
            return self._run_u8(batch)
        return super()._infer_u8(batch)
