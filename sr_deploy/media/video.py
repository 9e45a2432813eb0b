"""Video upscaling with PyAV: decode → infer → encode as threads with bounded queues.

Timestamps are carried frame by frame from input to output (variable frame
rate keeps its timing); audio and subtitle streams are remuxed, not
re-encoded. The output is written under a temporary name and renamed only
when complete: an error or an interrupt leaves nothing under the final name.
"""

from __future__ import annotations

import queue
import sys
from collections import deque
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from sr_deploy.errors import InputError, OutputError, SRDeployError
from sr_deploy.fsutil import atomic_path
from sr_deploy.media.tiling import auto_tile, upscale_frame
from sr_deploy.progress import Progress
from sr_deploy.runtime.base import Runner

VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts", ".mpg", ".mpeg", ".flv", ".wmv"}
_END = object()


NVENC_CODECS = ("hevc_nvenc", "h264_nvenc")
CPU_CODEC = "libx264"


def encoder_opens(name: str, width: int = 256, height: int = 256, pix_fmt: str = "yuv420p") -> bool:
    """True when FFmpeg has encoder ``name`` and it opens here (NVENC needs an NVIDIA driver and GPU)."""
    import av

    try:
        ctx = av.CodecContext.create(name, "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, pix_fmt
        ctx.time_base = Fraction(1, 25)
        ctx.open()
    except Exception:  # noqa: BLE001 - unknown codec, no device, driver too old: all mean "not here"
        return False
    return True


def resolve_codec(codec: str, *, on_gpu: bool, say=None, width: int = 256, height: int = 256) -> str:
    """``auto``: NVENC (HEVC, else H.264) when the model runs on a GPU and the encoder opens, so the CPU
    encoder does not become the bottleneck; else libx264 (with a one-line note when NVENC was tried)."""
    if codec != "auto":
        return codec
    if not on_gpu:
        return CPU_CODEC
    for name in NVENC_CODECS:
        if encoder_opens(name, width, height):
            return name
    if say:
        say(f"note: NVENC did not open here (no NVIDIA driver, or FFmpeg without it); encoding with {CPU_CODEC} on the CPU")
    return CPU_CODEC


QUEUE_BYTES = 256 << 20
ENCODER_LOOKAHEAD_BYTES = 1 << 30


@dataclass(frozen=True)
class VideoOptions:
    codec: str = "auto"  # auto: NVENC when the model runs on a GPU and the encoder opens, else libx264
    crf: int = 18
    preset: str = "medium"
    pix_fmt: str | None = None  # None: yuv420p, or yuv420p10le for a source deeper than 8 bits
    bitrate: str | None = None
    tile: int | None = None  # None: whole frames while they fit the runner's memory budget, else tiles
    batch: int = 1
    max_frames: int | None = None
    start: float | None = None  # seconds
    duration: float | None = None  # seconds
    copy_streams: bool = True
    queue_size: int = 8  # frames waiting between stages, at most; fewer when frames are large (QUEUE_BYTES)
    encoder_threads: int | None = None  # x264/x265 threads; None: encoder_threads_for(runner)


@dataclass(frozen=True)
class VideoSummary:
    frames: int
    width: int
    height: int
    copied_streams: int
    seconds: float


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def open_input(path: Path):
    import av

    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise InputError(f"{path}: not a readable video ({exc.__class__.__name__})") from exc
    if not container.streams.video:
        container.close()
        raise InputError(f"{path}: no video stream in this file")
    return container


class _Stage(threading.Thread):
    """A pipeline thread that forwards any exception to the consumer through its output queue."""

    def __init__(self, fn, out: queue.Queue, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.fn, self.out, self.stop = fn, out, stop

    def run(self) -> None:
        try:
            self.fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            self.put(exc)
        else:
            self.put(_END)

    def put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue


def _get(q: queue.Queue, stop: threading.Event):
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                raise KeyboardInterrupt from None


def upscale_video(runner: Runner, src: Path, dst: Path, *, options: VideoOptions = VideoOptions(),
                  overwrite: bool = False, quiet: bool = False) -> VideoSummary:
    """Upscale every frame of ``src`` into ``dst``; keeps frame count, timestamps and other streams."""
    import time

    import av

    if Path(dst).resolve() == Path(src).resolve():
        raise OutputError(f"{dst}: output path is the input; choose another")
    if dst.exists() and not overwrite:
        raise OutputError(f"{dst}: output exists; pass --overwrite to replace it")
    inp = open_input(src)
    t0 = time.perf_counter()
    try:
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        s = runner.scale
        width, height = vin.codec_context.width * s, vin.codec_context.height * s
        total = vin.frames or None
        if options.max_frames:
            total = min(total or options.max_frames, options.max_frames)
        copied = [st for st in inp.streams if st.type in ("audio", "subtitle")] if options.copy_streams else []
        say = (lambda line: None) if quiet else (lambda line: print(line, file=sys.stderr))
        src_h, src_w = vin.codec_context.height, vin.codec_context.width
        # Deeper than 8 bits (10-bit HEVC/AV1/ProRes...): decoded as 16-bit RGB, run through the float
        # graph and encoded 10-bit, unless an 8-bit --pix-fmt was asked for.
        deep = _bit_depth(vin.codec_context.pix_fmt) > 8
        pix_fmt = options.pix_fmt or ("yuv420p10le" if deep else "yuv420p")
        deep = deep and _bit_depth(pix_fmt) > 8
        if deep:
            say(f"note: {src.name} is {_bit_depth(vin.codec_context.pix_fmt)}-bit ({vin.codec_context.pix_fmt}): "
                f"frames go through the model as 16-bit RGB and are written as {pix_fmt}")
        # memory: whole frames (and --batch of them) while a call fits the runner's budget, else tiles
        tile = options.tile if options.tile is not None else auto_tile(runner, src_h, src_w)
        batch = max(1, options.batch)
        if not tile and batch > 1:
            batch = max(1, min(batch, int(runner.memory_budget() // max(1.0, src_h * src_w * runner.bytes_per_pixel()))))
        stop = threading.Event()
        # queues hold whole frames: bounded in bytes too, so a 4K source (a 398 MB x4 output frame) keeps
        # one upscaled frame waiting for the encoder, not eight
        px_bytes = 6 if deep else 3
        q_dec: queue.Queue = queue.Queue(max(2, min(options.queue_size, QUEUE_BYTES // (src_h * src_w * px_bytes))))
        q_inf: queue.Queue = queue.Queue(max(1, min(options.queue_size, QUEUE_BYTES // (height * width * px_bytes))))
        frame_limit = options.max_frames
        start_s = float(options.start or 0.0)
        end_s = start_s + options.duration if options.duration else float("inf")
        windowed = bool(options.start or options.duration or options.max_frames)

        def shift(ts, tb):
            return None if ts is None else ts - int(round(start_s / tb))

        def decode() -> None:
            n, last_t = 0, None
            for packet in inp.demux(vin, *copied):
                if stop.is_set():
                    return
                if packet.stream.type != "video":
                    if packet.dts is None:
                        continue
                    t = float(packet.pts * packet.time_base) if packet.pts is not None else None
                    # only a requested window drops packets (AAC priming has negative timestamps)
                    if (options.start or options.duration) and t is not None and not start_s <= t < end_s:
                        continue
                    if start_s:
                        packet.pts, packet.dts = shift(packet.pts, packet.time_base), shift(packet.dts, packet.time_base)
                    dec.put(("packet", packet))
                    continue
                try:
                    frames = packet.decode()  # demux ends with an empty packet that flushes the decoder
                except EOFError:
                    break
                except av.error.FFmpegError as exc:
                    raise InputError(f"{src}: video cannot be decoded at frame {n} ({exc.__class__.__name__})") from exc
                for frame in frames:
                    t = frame.time
                    if t is not None and t < start_s - 1e-6:
                        continue
                    if (t is not None and t >= end_s) or (frame_limit is not None and n >= frame_limit):
                        return
                    pts = shift(frame.pts, frame.time_base) if start_s and frame.pts is not None else frame.pts
                    dec.put(("frame", n, pts, frame.time_base, frame.to_ndarray(format="rgb48le" if deep else "rgb24")))
                    n, last_t = n + 1, t
            expected = _stream_seconds(vin)
            if not windowed and expected and last_t is not None:
                interval = float(1 / (vin.average_rate or 25))
                if last_t + interval < expected - max(0.5, 0.05 * expected):
                    raise InputError(f"{src}: video stream ends at frame {n} ({last_t:.2f}s of {expected:.2f}s): "
                                     "the file is truncated or damaged")

        def infer() -> None:
            # Frames flow through runner.stream_u8, which may keep several batches in flight (the GPU
            # pipeline); packets to copy (audio, subtitles) wait in `order` behind the frames decoded
            # before them, so the muxer sees everything in decode order.
            order: deque = deque()

            def batches():
                pending: list[tuple] = []

                def cut():
                    if pending:
                        order.append(("frames", list(pending)))
                        arr = np.stack([p[4] for p in pending])  # uint8 RGB: bytes to the runner
                        pending.clear()
                        return arr
                    return None

                while True:
                    item = _get(q_dec, stop)
                    if item is _END or isinstance(item, BaseException):
                        arr = cut()
                        if arr is not None:
                            yield arr
                        if isinstance(item, BaseException):
                            raise item
                        return
                    if item[0] == "packet":
                        arr = cut()
                        if arr is not None:
                            yield arr
                        order.append(("packet", item))
                        continue
                    pending.append(item)
                    if len(pending) >= batch or tile or too_big or deep:
                        yield cut()

            def emit_packets() -> None:
                while order and order[0][0] == "packet":
                    inf.put(order.popleft()[1])

            max_hw = runner.input_spec().max_hw
            too_big = bool(max_hw) and (src_h > max_hw[0] or src_w > max_hw[1])
            if deep:  # 16-bit RGB through the float graph, rounded into uint16 tile row by tile row
                outputs = (np.stack([upscale_frame(runner, f.astype(np.float32) * (1 / 65535), tile=tile,
                                                   out_max=65535.0, out_dtype=np.uint16) for f in b])
                           for b in batches())
            elif tile or too_big:  # tiles (asked for, too large for the memory budget or the engine's profile)
                outputs = (np.stack([upscale_frame(runner, f, tile=tile) for f in b]) for b in batches())
            else:
                outputs = runner.stream_u8(batches())
            for res in outputs:
                emit_packets()
                _, items = order.popleft()
                for p, o in zip(items, res):
                    inf.put(("frame", p[1], p[2], p[3], o))
            emit_packets()

        dec = _Stage(decode, q_dec, stop)
        inf = _Stage(infer, q_inf, stop)
        try:
            with atomic_path(dst, overwrite=overwrite) as tmp:
                try:
                    out = av.open(str(tmp), "w")
                except (av.error.FFmpegError, OSError) as exc:
                    raise OutputError(f"{dst}: cannot open for writing ({exc})") from exc
                try:
                    rate = vin.average_rate or vin.guessed_rate or Fraction(25)
                    codec = resolve_codec(options.codec, on_gpu=runner.on_gpu, width=width, height=height, say=say)
                    try:
                        vout = out.add_stream(codec, rate=rate)
                    except (av.error.FFmpegError, ValueError) as exc:
                        raise InputError(f"video codec {codec!r} is not available in this FFmpeg build") from exc
                    try:
                        vout.width, vout.height, vout.pix_fmt = width, height, pix_fmt
                    except (ValueError, av.error.FFmpegError) as exc:
                        raise InputError(f"--pix-fmt {pix_fmt!r} is not a pixel format {codec} takes "
                                         f"(for example yuv420p, yuv420p10le)") from exc
                    vout.time_base = vin.time_base
                    vout.codec_context.time_base = vin.time_base
                    if options.bitrate:
                        vout.bit_rate = _parse_bitrate(options.bitrate)
                    elif codec in ("libx264", "libx265"):
                        vout.options = {"crf": str(options.crf), "preset": options.preset}
                    if codec in ("libx264", "libx265"):
                        threads = options.encoder_threads
                        threads = encoder_threads_for(runner) if threads is None else threads
                        if threads:
                            vout.codec_context.thread_count = threads
                    # the encoder's lookahead holds whole frames (40 at x264's medium preset): at 8K and
                    # beyond that alone passes gigabytes, so it is capped to ~1 GiB of frames there
                    look = max(2, ENCODER_LOOKAHEAD_BYTES // (width * height * 3 // 2 * (2 if deep else 1)))
                    if look < 40 and codec == "libx264":
                        vout.options = {**vout.options, "rc-lookahead": str(look)}
                    elif look < 40 and codec == "libx265":
                        vout.options = {**vout.options, "x265-params": f"rc-lookahead={look}"}
                    elif codec.endswith("_nvenc"):
                        vout.options = {"cq": str(options.crf), "preset": "p5"}
                    mapping = {}
                    for st in copied:
                        stream = None
                        if _container_takes(dst, st):
                            try:
                                stream = out.add_stream_from_template(st)
                            except (av.error.FFmpegError, ValueError):
                                pass
                        if stream is not None:
                            mapping[st.index] = stream
                        else:
                            say(f"warning: {st.type} stream #{st.index} ({st.codec_context.name}) is dropped: "
                                f"{dst.suffix or 'this'} files cannot hold it; write to .mkv (-o NAME.mkv) to keep it")
                    dec.start()
                    inf.start()
                    n = 0
                    with Progress(total, desc="frames", unit="frame", quiet=quiet) as bar:
                        while True:
                            item = _get(q_inf, stop)
                            if item is _END:
                                break
                            if isinstance(item, BaseException):
                                raise item
                            if item[0] == "packet":
                                pkt = item[1]
                                if pkt.stream.index in mapping:
                                    pkt.stream = mapping[pkt.stream.index]
                                    out.mux(pkt)
                                continue
                            _, idx, pts, tb, arr = item
                            frame = av.VideoFrame.from_ndarray(arr, format="rgb48le" if deep else "rgb24")
                            frame.pts = pts if pts is not None else idx
                            frame.time_base = tb or vin.time_base
                            for pkt in vout.encode(frame):
                                out.mux(pkt)
                            n += 1
                            bar.update(1)
                        for pkt in vout.encode(None):
                            out.mux(pkt)
                    out.close()  # writes the trailer: can fail on a full disk too
                except OSError as exc:
                    raise OutputError(f"{dst}: write failed ({exc.strerror or exc})") from exc
                except av.error.FFmpegError as exc:
                    raise OutputError(f"{dst}: encoding failed ({exc})") from exc
                finally:
                    try:
                        out.close()
                    except (OSError, av.error.FFmpegError):
                        pass  # already reported; the temporary file is removed next
                if n == 0:
                    raise InputError(f"{src}: no decodable video frames")
        finally:
            stop.set()
            dec.join(timeout=5) if dec.is_alive() else None
            inf.join(timeout=5) if inf.is_alive() else None
    finally:
        inp.close()
    return VideoSummary(n, width, height, len(mapping), time.perf_counter() - t0)


def encoder_threads_for(runner) -> int:
    """Software encoder threads beside a runner (0: x264/x265 choose, about 1.5 per core). On the CPU
    the model and the encoder share the cores; capping the encoder to one thread was measured and did
    not help (benchmarks/results/video-budget-cpu.md: within run-to-run noise for srresnet_x4, 5% slower
    for light_x4), so both cases leave the choice to the encoder."""
    return 0 if runner.on_gpu else ENCODER_CPU_THREADS


ENCODER_CPU_THREADS = 0


def _bit_depth(pix_fmt: str | None) -> int:
    """Bits per component of an FFmpeg pixel format name: deep formats carry an endianness suffix
    (yuv420p10le, p010le, gray16le → 10, 10, 16; rgb48le → 16), 8-bit ones do not (yuv420p, nv12)."""
    import re

    m = re.search(r"(\d{2})(le|be)$", pix_fmt or "")
    if not m:
        return 8
    bits = int(m.group(1))
    return 16 if bits > 16 else bits


# Subtitle codecs each output container can hold (FFmpeg's muxers accept these; others fail only when
# the header is written, after the whole run). Audio is left to add_stream_from_template.
_SUBTITLE_CODECS = {
    ".mp4": {"mov_text"}, ".m4v": {"mov_text"}, ".mov": {"mov_text"},
    ".mkv": None, ".webm": {"webvtt"}, ".avi": set(), ".ts": {"dvb_subtitle", "dvb_teletext"},
}


def _container_takes(dst: Path, stream) -> bool:
    if stream.type != "subtitle":
        return True
    allowed = _SUBTITLE_CODECS.get(dst.suffix.lower(), None)
    return allowed is None or stream.codec_context.name in allowed


def _stream_seconds(stream) -> float | None:
    """The video stream's declared duration (container header or MKV DURATION tag), if any."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = (stream.metadata or {}).get("DURATION") or (stream.metadata or {}).get("duration")
    if tag:
        try:
            h, m, sec = tag.split(":")
            return int(h) * 3600 + int(m) * 60 + float(sec)
        except ValueError:
            return None
    return None


def _parse_bitrate(text: str) -> int:
    t = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    try:
        return int(float(t.rstrip("km")) * mult)
    except ValueError:
        raise SRDeployError(f"bitrate {text!r} is not a number like 8M or 2500k") from None
