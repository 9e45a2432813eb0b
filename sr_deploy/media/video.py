"""Video upscaling with PyAV: decode → infer → encode as threads with bounded queues.

Timestamps are carried frame by frame from input to output (variable frame
rate keeps its timing); audio and subtitle streams are remuxed, not
re-encoded. The output is written under a temporary name and renamed only
when complete: an error or an interrupt leaves nothing under the final name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import sys
from collections import deque
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from sr_deploy.errors import InputError, ModelError, OutputError, SRDeployError
from sr_deploy.fsutil import atomic_path, check_destination
from sr_deploy.media.container import frame_rate, main_video, open_input
from sr_deploy.media.resize import check_outscale, final_size, label, resize_to
from sr_deploy.media.stages import ThreeStages
from sr_deploy.media.tiling import auto_tile, upscale_frame
from sr_deploy.progress import Progress
from sr_deploy.runtime.base import Runner

VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts", ".mpg", ".mpeg", ".flv", ".wmv"}  # written
# read too (FFmpeg demuxes them), not written: DVD (.vob), Blu-ray and camcorders (.m2ts, .mts, .mod, .tod),
# DV, broadcast (.mxf), old phones (.3gp), raw streams (.y4m, .h264, .hevc, .m2v, .ivf), and the rest
INPUT_ONLY_VIDEO_SUFFIXES = {".vob", ".m2ts", ".mts", ".mod", ".tod", ".dv", ".mxf", ".3gp", ".3g2", ".y4m",
                             ".h264", ".264", ".hevc", ".265", ".m2v", ".ivf", ".asf", ".f4v", ".ogv", ".divx",
                             ".nut", ".rm", ".rmvb"}
DEFAULT_VIDEO_SUFFIX = ".mkv"  # the output of an input-only format (Matroska holds DVD audio and subtitles)


NVENC_CODECS = ("hevc_nvenc", "h264_nvenc")
CPU_CODEC = "libx264"


def encoder_opens(name: str, width: int = 256, height: int = 256, pix_fmt: str = "yuv420p") -> bool:
    """True when FFmpeg has encoder ``name`` and it opens here (NVENC needs an NVIDIA driver and GPU)."""
    import av

    try:
        ctx = av.CodecContext.create(name, "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, pix_fmt
        ctx.time_base = Fraction(1, 25)
        if name == "libx265":
            ctx.options = {"x265-params": X265_QUIET}
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
    preset: str | None = None  # None: x264/x265 DEFAULT_X26X_PRESET, NVENC p5
    pix_fmt: str | None = None  # None: yuv420p, or a 10-bit 4:2:0 format for a source deeper than 8 bits
    bitrate: str | None = None
    tile: int | None = None  # None: whole frames while they fit the runner's memory budget, else tiles
    batch: int = 1
    max_frames: int | None = None
    start: float | None = None  # seconds
    duration: float | None = None  # seconds
    copy_streams: bool = True
    # a run is cut into segments this long (resumable; the unit of --ray); None: about SEGMENT_COMPUTE_S of
    # compute each, from the model's measured speed here (auto_segment_seconds)
    segment_seconds: float | None = None
    queue_size: int = 8  # frames waiting between stages, at most; fewer when frames are large (QUEUE_BYTES)
    encoder_threads: int | None = None  # x264/x265 threads; None: encoder_threads_for(runner)
    deinterlace: bool = True  # frames flagged interlaced go through FFmpeg's bwdif (deinterlaced) first
    outscale: float | None = None  # the output's size as a multiple of the input's (media/resize.py); None: x scale
    # False: no B-frames. Set by upscale_video for AVI and ASF (.wmv), which keep no timestamps to put
    # reordered frames back by (with x264's B-frames they played their frames at decode-order times)
    b_frames: bool = True
    # set by upscale_video: the source's HDR10 static metadata (mastering display, content light level) in
    # x264/x265's notation, for the encoder to write (read_hdr10)
    hdr10: tuple[str | None, str | None] | None = None
    # frames cross to the runner as 4:2:0 YUV, the colour conversions in its graph (export/yuv.py), where
    # the runner has that graph; None: on a GPU
    yuv: bool | None = None
    # segments encoded at once by their own encoders, the model shared (parallel_segments); None: several
    # where a GPU runs the model and a software encoder takes its frames, else one
    parallel_segments: int | None = None

    def check(self) -> None:
        """One line for settings that are wrong whatever the codec, before a model is loaded."""
        if self.batch < 1:
            raise InputError(f"--batch must be at least 1, got {self.batch}")
        if self.parallel_segments is not None and self.parallel_segments < 1:
            raise InputError(f"--parallel-segments must be at least 1, got {self.parallel_segments}")
        if self.max_frames is not None and self.max_frames < 1:
            raise InputError(f"--frames must be at least 1, got {self.max_frames}")
        if self.start is not None and not self.start >= 0:
            raise InputError(f"--start must be 0 or later, got {self.start}")
        if self.duration is not None and not self.duration > 0:
            raise InputError(f"--duration must be positive, got {self.duration}")
        if self.bitrate is not None:
            _parse_bitrate(self.bitrate)
        check_outscale(self.outscale)


X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")
NVENC_PRESETS = ("p1", "p2", "p3", "p4", "p5", "p6", "p7")
# 4:2:0 formats deeper than 8 bits, in the order they are preferred for a deep source
DEEP_420 = ("yuv420p10le", "p010le", "yuv420p12le")


def encoder_formats(codec: str) -> tuple[str, ...]:
    """The pixel formats FFmpeg's encoder ``codec`` takes (empty when it does not say)."""
    import av

    return tuple(f.name for f in (av.codec.Codec(codec, "w").video_formats or ()))


def check_encoder(codec: str, options: VideoOptions) -> None:
    """One line, before any work, for a --preset or --pix-fmt that ``codec`` does not take; the encoder
    itself would refuse them only when the first segment opens it, in FFmpeg's words. ``codec`` may be
    ``auto`` (before the model is loaded): then only what no encoder here takes is refused."""
    import av

    if options.bitrate:
        _parse_bitrate(options.bitrate)
    if codec != "auto" and options.preset is None and options.pix_fmt is None:
        # only where the run would encode 8-bit 4:2:0: codecs without it (qtrle, png, ...) get their own format
        fmt = output_pix_fmt(codec, None, False)
        try:
            formats = encoder_formats(codec)
        except Exception:  # noqa: BLE001 - an unknown codec: named as such where the stream is added
            formats = None
        if formats is not None and (not formats or fmt in formats) and not encoder_opens(codec, 64, 64, fmt):
            raise InputError(f"--codec {codec}: this encoder does not open here for {fmt} video (a codec for "
                             f"images or another pixel format, or one this FFmpeg lacks); libx264, libx265 and "
                             f"libvpx-vp9 do")
    if options.preset is not None:
        if codec == "auto":
            takes = X264_PRESETS + NVENC_PRESETS
        else:
            takes = X264_PRESETS if codec in ("libx264", "libx265") else NVENC_PRESETS if codec.endswith("_nvenc") else ()
        if not takes:
            raise InputError(f"--preset: {codec} takes no preset here (x264/x265: ultrafast ... veryslow; "
                             "NVENC: p1 ... p7)")
        if options.preset not in takes:
            raise InputError(f"--preset {options.preset!r}: {'the encoders' if codec == 'auto' else codec} take"
                             f"{'' if codec == 'auto' else 's'} {', '.join(takes)}")
    if options.pix_fmt is not None:
        try:
            av.VideoFormat(options.pix_fmt)
        except ValueError:
            raise InputError(f"--pix-fmt {options.pix_fmt!r} is not a pixel format FFmpeg knows "
                             "(for example yuv420p, yuv444p, yuv420p10le)") from None
        formats = encoder_formats(codec) if codec != "auto" else ()
        if formats and options.pix_fmt not in formats:
            raise InputError(f"--pix-fmt {options.pix_fmt}: {codec} does not encode it; it takes "
                             f"{', '.join(formats)}")


def output_pix_fmt(codec: str, requested: str | None, deep: bool) -> str:
    """The format frames are encoded in: ``requested`` (checked by check_encoder), else 8-bit 4:2:0, or
    for a source deeper than 8 bits the first 10/12-bit 4:2:0 format the encoder takes (NVENC: p010le),
    else 8-bit (libvpx-vp9 in some FFmpeg builds has no 10-bit format)."""
    if requested:
        return requested
    if deep:
        formats = encoder_formats(codec)
        for name in DEEP_420:
            if not formats or name in formats:
                return name
    return "yuv420p"


def has_alpha(pix_fmt: str | None) -> bool:
    """Whether an FFmpeg pixel format carries colour and an alpha plane (argb, rgba, yuva444p10le...)."""
    import av

    try:
        comps = av.VideoFormat(pix_fmt).components
    except (ValueError, TypeError):
        return False
    return len(comps) == 4 and any(c.is_alpha for c in comps)


def alpha_pix_fmt(codec: str, deep: bool) -> str | None:
    """The format ``codec`` keeps an alpha channel in (None when it has none): the first of the encoder's
    own list with the source's depth (8 bits, or more for a deep source), else its first with alpha."""
    formats = [f for f in encoder_formats(codec) if has_alpha(f)]
    same = [f for f in formats if (_bit_depth(f) > 8) == deep]
    return (same or formats or [None])[0]


@dataclass(frozen=True)
class VideoSummary:
    frames: int
    width: int
    height: int
    copied_streams: int
    seconds: float
    reused_segments: int = 0
    segments: int = 1


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES | INPUT_ONLY_VIDEO_SUFFIXES


def upscale_video(runner: Runner, src: Path, dst: Path, *, options: VideoOptions = VideoOptions(),
                  overwrite: bool = False, quiet: bool = False, identity: str | None = None,
                  restart: bool = False, pool=None) -> VideoSummary:
    """Upscale every frame of ``src`` into ``dst``; keeps frame count, timestamps and other streams.

    The run is cut into segments (media/segments.py) recorded beside the output, so that the same call
    after a crash resumes; ``identity`` names the model (a run of another model never reuses segments);
    ``pool`` (sr_deploy.media.distributed) runs the segments elsewhere, e.g. on Ray workers.
    """
    import time

    from sr_deploy.media.container import format_for
    from sr_deploy.media.segments import Parts, assemble, manifest_key, plan_segments

    options.check()
    check_destination(src, dst, overwrite=overwrite)
    t0 = time.perf_counter()
    say = quiet_say if quiet else (lambda line: print(line, file=sys.stderr))
    if format_for(dst) in ("avi", "asf"):
        options = dataclasses.replace(options, b_frames=False)
    if options.segment_seconds is None:
        seconds = auto_segment_seconds(runner, src, dst, options, pool=pool)
        options = dataclasses.replace(options, segment_seconds=seconds)
    plan = plan_segments(src, options, options.segment_seconds)
    for line in plan.notes:
        say(line)
    width, height = output_size(*plan.size, runner.scale, options)
    on_gpu = pool.on_gpu if pool is not None else runner.on_gpu
    codec = options.codec
    if codec == "auto" and dst.suffix.lower() == ".webm":
        codec = WEBM_CODEC  # the only family a .webm holds (VP8/VP9/AV1)
    codec = resolve_codec(codec, on_gpu=on_gpu, width=width, height=height, say=say)
    check_output_codec(dst, codec)  # now, not after the last segment
    check_encoder(codec, options)
    if max(width, height) > 4096:  # size limits differ per encoder (x264: 16384 a side; NVENC: per GPU): ask it
        fmt = options.pix_fmt or "yuv420p"
        if not encoder_opens(codec, *encodable_size(width, height, fmt), fmt):
            raise InputError(f"{dst}: {codec} does not open for {width}x{height} frames "
                             f"(x{label(runner.scale, options.outscale)} of "
                             f"{plan.size[0]}x{plan.size[1]}; beyond its size limit); pass another --codec "
                             f"(libx265 and libvpx-vp9 go further)")
    if codec != options.codec:
        options = dataclasses.replace(options, codec=codec)
    check_sar_kept(src, dst, codec, say)
    hdr10 = read_hdr10(src)
    if hdr10 and codec in HDR10_PARAMS:
        options = dataclasses.replace(options, hdr10=hdr10)
    elif hdr10:
        say(f"warning: {src.name} carries HDR10 metadata (mastering display, light level) that {codec} is not given "
            "here: the output's colours are tagged, that metadata is not; --codec libx265 or libx264 keeps it")
    key = manifest_key(src, identity or runner.describe(), options, codec, options.segment_seconds)
    parts = Parts(dst)
    reused = parts.open(key, plan, restart=restart, say=say)
    finished = False
    try:
        if reused:
            say(f"resuming: {reused} of {len(plan.segments)} segments reused from {parts.dir}")
        todo = [seg for seg in plan.segments if seg.index not in parts.done]
        done_frames = sum(int(r["frames"]) for r in parts.done.values())
        # what every frame gets (sizes, pixel formats, alpha, depth, tiles, batch), decided once for the run
        # here; a Ray worker decides it from its own runner
        run_plan = None if pool is not None or not todo else frame_plan(runner, plan.size, plan.pix_fmt, options,
                                                                        src, say)
        with Progress(plan.total_frames, desc="frames", unit="frame", quiet=quiet) as bar:
            bar.update(done_frames)
            workers = parallel_segments(runner, codec, options, len(todo)) if pool is None else 1
            if pool is not None:
                pool.run(src, plan, todo, options, parts, bar)
            elif workers > 1:
                say(f"note: {workers} segments encoded at once ({codec} on the host, the model on the GPU)"
                    if options.parallel_segments is None else f"note: {workers} segments encoded at once")
                encode_segments_parallel(runner, src, plan, todo, options, parts, workers, say, bar, run_plan)
            else:
                for seg in todo:
                    tmp = parts.tmp_path(seg.index)
                    n = encode_segment(runner, src, plan, seg, tmp, options, say=say, on_frame=bar.update,
                                       frames=run_plan)
                    parts.record(seg.index, n, tmp)
        frames = sum(int(parts.done[s.index]["frames"]) for s in plan.segments)
        with open_input(parts.path(plan.segments[0].index)) as first:  # the size as encoded (even, or cut)
            cc = main_video(first).codec_context
            width, height = cc.width, cc.height
        with atomic_path(dst, overwrite=overwrite) as tmp:
            copied = assemble(src, [parts.path(s.index) for s in plan.segments], tmp, dst, options, say)
        finished = True
    except BaseException:
        if parts.done:
            say(f"note: {len(parts.done)} of {len(plan.segments)} segments are finished and kept in {parts.dir}; "
                "the same command resumes from them")
        raise
    finally:
        parts.close(remove=finished or not parts.done)
    return VideoSummary(frames, width, height, copied, time.perf_counter() - t0, reused, len(plan.segments))


WEBM_CODEC = "libvpx-vp9"


def quiet_say(line: str) -> None:
    """What --quiet still prints: warnings, which say that something of the input is not in the output
    (a stream dropped); notes and progress stay quiet."""
    if line.startswith("warning:"):
        print(line, file=sys.stderr)


def deinterlaced(frames, stream, say=None):
    """``frames`` as they come, or, when the first is flagged interlaced (broadcast, DV, camcorder
    video), through FFmpeg's bwdif filter: one progressive frame per frame, timestamps unchanged. The
    model was trained on progressive images; fed interlaced frames, it sharpens the combing."""
    import av
    import av.filter

    graph = None
    for frame in frames:
        if graph is None:
            if not frame.interlaced_frame:
                yield frame
                yield from frames
                return
            if say:
                say("note: the source is interlaced: frames are deinterlaced (bwdif) before upscaling; "
                    "--no-deinterlace keeps them as they are")
            graph = av.filter.Graph()
            src = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format.name,
                                   time_base=frame.time_base or stream.time_base)
            bwdif = graph.add("bwdif", "mode=send_frame:parity=auto:deint=interlaced")
            sink = graph.add("buffersink")
            src.link_to(bwdif)
            bwdif.link_to(sink)
            graph.configure()
        tb = frame.time_base or stream.time_base
        graph.push(frame)
        yield from _pulled(graph, tb)
    if graph is not None:
        graph.push(None)
        yield from _pulled(graph, tb)


def _pulled(graph, tb):
    """What the filter has ready, with timestamps back in the stream's time base (bwdif counts fields)."""
    import av

    while True:
        try:
            out = graph.pull()
        except (av.error.BlockingIOError, av.error.EOFError):
            return
        if out.pts is not None and out.time_base and out.time_base != tb:
            out.pts = int(round(out.pts * out.time_base / tb))
        out.time_base = tb
        yield out


def encodable_size(width: int, height: int, pix_fmt: str) -> tuple[int, int]:
    """The frame size ``pix_fmt`` can hold: 4:2:0 and 4:2:2 need even sizes (an odd source at x3, say), so
    the last column/row is cut, as ffmpeg users do by hand, rather than the encoder failing after the
    first segment's work. An unknown --pix-fmt is left alone (refused with its own message)."""
    mw, mh = _chroma_multiple(pix_fmt)
    return width - width % mw, height - height % mh


def _chroma_multiple(pix_fmt: str) -> tuple[int, int]:
    """What a frame's width and height must be multiples of in ``pix_fmt``: 2 where chroma is subsampled."""
    import av

    try:
        fmt = av.VideoFormat(pix_fmt)
    except ValueError:
        return 1, 1
    return 2 if fmt.chroma_width(2) == 1 else 1, 2 if fmt.chroma_height(2) == 1 else 1


def output_size(src_w: int, src_h: int, scale: int, options: VideoOptions, pix_fmt: str | None = None) -> tuple[int, int]:
    """The output frame size: ``scale`` times the source's (odd sizes are cut by ``encodable_size``), or with
    --outscale, that multiple rounded to a size ``pix_fmt`` holds (the frames are resized anyway: nothing cut)."""
    if options.outscale is None:
        return src_w * scale, src_h * scale
    return final_size(src_w, src_h, scale=scale, outscale=options.outscale,
                      multiple=_chroma_multiple(pix_fmt or options.pix_fmt or "yuv420p"))


def check_output_codec(dst: Path, codec: str) -> None:
    """One line, before any work, when FFmpeg lacks ``codec`` or ``dst``'s container cannot hold it."""
    import io

    import av

    from sr_deploy.media.container import format_for

    try:
        av.codec.Codec(codec, "w")
    except (av.error.FFmpegError, ValueError, av.codec.codec.UnknownCodecError):
        raise InputError(f"video codec {codec!r} is not available in this FFmpeg build") from None
    if format_for(dst) == "mpeg" and av.codec.Codec(codec, "w").name not in ("mpeg1video", "mpeg2video"):
        # the MPEG program stream muxer takes H.264 packets, but readers then find no video in the file
        raise InputError(f"{dst}: {dst.suffix} files (MPEG program stream) hold MPEG-1/2 video, not {codec}; "
                         "write .ts, .mp4 or .mkv")
    def holds(fmt: str) -> bool:
        with av.open(io.BytesIO(), "w", format=fmt) as probe:
            try:
                probe.add_stream(codec, rate=25)
                return True
            except (av.error.FFmpegError, ValueError):
                return False

    from sr_deploy.media.segments import segment_format

    if not holds(segment_format(codec)):  # FFV1, say: QuickTime has no tag for it
        raise InputError(f"video codec {codec!r}: the run's segment files ({segment_format(codec)}) cannot hold it; "
                         f"pass another --codec")
    if not holds(format_for(dst) or "mp4"):
        others = [sfx for sfx in (".mp4", ".mkv", ".mov", ".webm")
                  if sfx != dst.suffix.lower() and holds(format_for(Path("out" + sfx)))]
        raise InputError(f"{dst}: {dst.suffix or 'this'} files cannot hold {codec} video; "
                         + (f"write {' or '.join(others)}, or pass another --codec" if others
                            else f"pass another --codec (e.g. {WEBM_CODEC} for .webm)"))


@dataclass(frozen=True)
class FramePlan:
    """What every frame of a segment gets, decided once from the source's stream and the options."""

    src_w: int
    src_h: int
    width: int  # the encoded size (even where the pixel format needs it: the last row or column cut)
    height: int
    cut: bool
    pix_fmt: str  # the encoder's
    deep: bool  # deeper than 8 bits in and out
    alpha: bool  # the source's alpha kept
    tile: int | tuple[int, int]  # 0: whole frames
    batch: int
    too_big: bool  # larger than the engine's profile: tiles
    yuv_allowed: bool  # frames may cross as YUV (export/yuv.py), the colours permitting (yuv_specs)

    @property
    def rgb_fmt(self) -> str:
        return ("rgba64le" if self.deep else "rgba") if self.alpha else ("rgb48le" if self.deep else "rgb24")

    @property
    def px_bytes(self) -> int:  # bytes of one pixel between the stages, at most
        return (6 if self.deep else 3) + (2 if self.deep else 1) * self.alpha


def frame_plan(runner: Runner, size: tuple[int, int], src_fmt: str | None, options: VideoOptions, src: Path,
               say) -> FramePlan:
    """The run's FramePlan, from the source's video ``size`` (width, height) and decoded pixel format; its
    notes go to ``say``. Decided once per run (and once per segment on a Ray worker, with its own runner)."""
    from sr_deploy.export.yuv_spec import PIX_FMTS
    from sr_deploy.media.segments import segment_format

    s = runner.scale
    src_w, src_h = size
    # Deeper than 8 bits (10-bit HEVC/AV1/ProRes...): 10-bit YUV through the YUV graph where the runner
    # has one, else decoded as 16-bit RGB through the float graph; encoded 10-bit unless --pix-fmt says 8
    deep = _bit_depth(src_fmt) > 8
    pix_fmt = output_pix_fmt(options.codec, options.pix_fmt, deep)
    # An alpha channel (ProRes 4444, QuickTime Animation, PNG in MOV) is kept where the encoder can hold
    # one, upscaled bicubic beside the model's colour as for images; where it cannot, the run says so.
    alpha = has_alpha(src_fmt)
    if alpha:
        # VP9's alpha travels as Matroska block side data, which the MP4 segment files do not carry
        keep = (None if segment_format(options.codec) == "mp4"
                else options.pix_fmt or alpha_pix_fmt(options.codec, deep))
        if keep and has_alpha(keep):
            pix_fmt = keep
        else:
            alpha = False
            why = (f"--pix-fmt {options.pix_fmt} has none" if options.pix_fmt and keep is not None
                   else f"{options.codec} cannot keep one here")
            say(f"warning: {src.name} has an alpha channel ({src_fmt}) and {why}: the output is "
                f"opaque; --codec prores_ks or qtrle (.mov) keeps it")
    if deep and _bit_depth(pix_fmt) <= 8 and not options.pix_fmt:
        say(f"note: {options.codec} has no 10-bit 4:2:0 format in this FFmpeg build: "
            f"{src.name} ({src_fmt}) is written as 8-bit {pix_fmt}")
    deep = deep and _bit_depth(pix_fmt) > 8
    width, height = output_size(src_w, src_h, s, options, pix_fmt)
    cut_w, cut_h = (a - b for a, b in zip((width, height), encodable_size(width, height, pix_fmt)))
    if cut_w or cut_h:
        say(f"note: {width}x{height} cannot be encoded as {pix_fmt} (it needs even sizes): the output is "
            f"{width - cut_w}x{height - cut_h}, its last {'column' if cut_w else 'row'}"
            f"{' and row' if cut_w and cut_h else ''} cut; --pix-fmt yuv444p keeps every pixel")
        width, height = width - cut_w, height - cut_h
    if not options.pix_fmt and _chroma_multiple(pix_fmt) != (1, 1) and _chroma_multiple(src_fmt) == (1, 1):
        say(f"note: {src.name} has full-resolution colour ({src_fmt}); the output is {pix_fmt}, "
            f"which players take everywhere; --pix-fmt yuv444p keeps every colour sample")
    # memory: whole frames (and --batch of them) while a call fits the runner's budget, else tiles
    tile = options.tile if options.tile is not None else auto_tile(runner, src_h, src_w)
    # never more than the engine's profile takes: it would cut a larger batch into unequal chunks
    batch = max(1, min(options.batch, runner.input_spec().max_batch or options.batch))
    if not tile and batch > 1:
        batch = max(1, min(batch, int(runner.memory_budget() // max(1.0, src_h * src_w * runner.bytes_per_pixel()))))
    max_hw = runner.input_spec().max_hw
    too_big = bool(max_hw) and (src_h > max_hw[0] or src_w > max_hw[1])
    d, m = runner.descriptor, max(1, runner.descriptor.size_multiple)
    fits = not d.fixed_hw and src_h % m == 0 and src_w % m == 0 and min(src_h, src_w) >= (d.size_minimum or 0)
    yuv_allowed = (yuv_wanted(runner, options) and fits and not (alpha or tile or too_big or cut_w or cut_h)
                   and options.outscale is None and _yuv_format(src_fmt, deep) is not None
                   and pix_fmt in PIX_FMTS and src_w % 2 == 0 and src_h % 2 == 0)
    if options.yuv and not yuv_allowed:
        say("note: --yuv is not used for this video (" + ("the runner has no YUV graph: torch, ONNX Runtime "
                                                          "and OpenVINO have one, TensorRT and the x8 ensemble not yet"
            if not yuv_wanted(runner, options) else "it takes 4:2:0 at even sizes, whole frames, no alpha, "
            "no --outscale") + "); frames cross as RGB")
    if deep and not yuv_allowed:
        say(f"note: {src.name} is {_bit_depth(src_fmt)}-bit ({src_fmt}): "
            f"frames go through the model as 16-bit RGB and are written as {pix_fmt}")
    return FramePlan(src_w, src_h, width, height, bool(cut_w or cut_h), pix_fmt, deep, alpha, tile, batch,
                     too_big, yuv_allowed)


def yuv_wanted(runner: Runner, options: VideoOptions) -> bool:
    """Frames cross as YUV where the runner has the graph for it and --yuv says so (default: on a GPU,
    where it halves the bytes over the bus and leaves the host no colour conversion; on the CPU the same
    cores would do the conversions either way)."""
    if not getattr(runner, "yuv_capable", False):
        return False
    return runner.on_gpu if options.yuv is None else options.yuv


def _yuv_format(src_fmt: str | None, deep: bool) -> str | None:
    """The decoder's 4:2:0 format the YUV graph takes as it is (yuvj420p: yuv420p, full range)."""
    if deep:
        return "yuv420p10le" if src_fmt == "yuv420p10le" else None
    return "yuv420p" if src_fmt in ("yuv420p", "yuvj420p") else None


def yuv_specs(plan: FramePlan, src_fmt: str | None, colors: "Colors"):
    """(input, output) YuvSpec for frames of this plan with these colours, or None: the RGB path."""
    from sr_deploy.export.yuv_spec import MATRICES, YuvSpec

    fmt = _yuv_format(src_fmt, plan.deep)
    if not plan.yuv_allowed or fmt is None or colors.matrix not in MATRICES:
        return None
    full = colors.range == 2
    return YuvSpec(fmt, colors.matrix, full), YuvSpec(plan.pix_fmt, colors.matrix, full)


def yuv_frame(arr: np.ndarray, pix_fmt: str):
    """A VideoFrame of ``pix_fmt`` holding the (3H/2, W) array ``arr`` (PyAV 18 builds P010 from no array)."""
    import av

    if pix_fmt != "p010le":
        return av.VideoFrame.from_ndarray(arr, format=pix_fmt)
    h, w = arr.shape[0] * 2 // 3, arr.shape[1]
    frame = av.VideoFrame(w, h, pix_fmt)
    for plane, rows in zip(frame.planes, (arr[:h], arr[h:])):
        view = np.frombuffer(plane, np.uint16).reshape(rows.shape[0], plane.line_size // 2)
        view[:, :w] = rows
    return frame


def _frames_in_segment(inp, src: Path, seg):
    """Decoded frames from the keyframe at or before the segment's first frame, in order. A seek that
    lands after that frame (a damaged or missing index), or after which nothing decodes, is redone from
    the start of the file."""
    import av

    seek = seg.lo is not None
    while True:
        c = inp if not seek else open_input(src)
        try:
            stream = main_video(c)
            stream.thread_type = "AUTO"
            if seek:
                c.seek(seg.lo, stream=stream, backward=True, any_frame=False)
            first, late = True, False
            for packet in c.demux(stream):
                try:
                    frames = packet.decode()  # demux ends with an empty packet that flushes the decoder
                except EOFError:
                    break
                except av.error.FFmpegError as exc:
                    raise InputError(f"{src}: video cannot be decoded in frames {seg.first_frame}-"
                                     f"{seg.first_frame + seg.frames} ({exc.__class__.__name__})") from exc
                for frame in frames:
                    if first and seek and frame.pts is not None and frame.pts > seg.lo:
                        late = True
                        break
                    first = False
                    yield frame
                if late:
                    break
            # nothing decodable after the seek (MPEG-TS seeks by byte position and can land
            # mid-GOP, with no keyframe after it): also redone from the start
            late = late or (seek and first)
        finally:
            if c is not inp:
                c.close()
        if not late:
            return
        seek = False  # from the start, in the container opened first


@dataclass
class _Segment:
    """One segment's run: its plan, and what the first frame tells (display matrix, colours, YUV specs)."""

    plan: FramePlan
    seg: object
    options: VideoOptions
    src: Path
    vin: object
    say: object
    stop: threading.Event
    timestamps: bool  # the segments' bounds are timestamps (else one segment: the frame limit counts frames)
    matrix: list[int] | None = None
    colors: "Colors | None" = None
    yuv: tuple | None = None
    resized: bool = False
    # one swscale context per stage, kept across frames: a frame's own reformat builds a new context each
    # time (measured: rgb24 -> yuv420p at 1080p 20.3 ms per frame, 9.1 ms with the context kept; same bytes)
    dec_sws: object = None  # av.video.reformatter.VideoReformatter of the decode stage
    enc_sws: object = None  # and of the encode stage


def _decode(run: _Segment, frames, put) -> None:
    """The decode stage: frames of the segment's window, as RGB (and alpha) or YUV arrays."""
    from sr_deploy.media.segments import window_of

    plan, seg, vin, options = run.plan, run.seg, run.vin, run.options
    start_s, end_s, frame_limit = window_of(options)
    frame_limit = frame_limit if not run.timestamps else None  # with timestamps the plan's bounds decide
    shift_pts = int(round(start_s / vin.time_base)) if start_s and vin.time_base else 0
    n = 0
    for frame in frames:
        if run.stop.is_set():
            return
        pts = frame.pts
        if pts is not None:
            if seg.lo is not None and pts < seg.lo:
                continue
            if seg.hi is not None and pts >= seg.hi:
                return
        t = frame.time
        if t is not None and t < start_s - 1e-6:
            continue
        if (t is not None and t >= end_s) or (frame_limit is not None and n >= frame_limit):
            return
        if pts is not None:
            pts -= shift_pts
        if not n:
            run.matrix = display_matrix(frame, plan.width / plan.src_w)
            run.colors = source_colors(frame, plan.src_w, plan.src_h)
            run.yuv = yuv_specs(plan, frame.format.name, run.colors)
        size = None
        if (frame.width, frame.height) != (plan.src_w, plan.src_h):
            # The stream changes resolution midway (broadcast captures, joined recordings): like
            # ffmpeg, frames are scaled to the stream's declared size, so one encoder takes them all.
            if not run.resized:
                run.resized = True
                run.say(f"note: {run.src.name} changes resolution to {frame.width}x{frame.height} near frame "
                        f"{seg.first_frame + n}; such frames are scaled to {plan.src_w}x{plan.src_h} before upscaling")
            size = {"width": plan.src_w, "height": plan.src_h, "interpolation": "BICUBIC"}
        if run.yuv:  # as decoded (swscale only where the size or the layout differs; yuvj420p is yuv420p's)
            fmt = run.yuv[0].pix_fmt
            same = frame.format.name in (fmt, "yuvj420p" if fmt == "yuv420p" else fmt)
            if size or not same:
                frame = run.dec_sws.reformat(frame, format=frame.format.name if same else fmt, **(size or {}))
            planes = (frame.to_ndarray(), None)
        else:
            arr = run.dec_sws.reformat(frame, format=plan.rgb_fmt, src_colorspace=run.colors.sws,
                                       src_color_range=run.colors.range, **(size or {})).to_ndarray()
            planes = ((np.ascontiguousarray(arr[..., :3]), np.ascontiguousarray(arr[..., 3])) if plan.alpha
                      else (arr, None))
            del arr
        put(("frame", seg.first_frame + n, pts, frame.time_base, *planes))
        n += 1


def _infer(run: _Segment, runner: Runner, decoded, put) -> None:
    """The model stage: the decoded frames (an iterator) flow through runner.stream_u8 (or stream_yuv), which
    may keep several batches in flight (the GPU pipeline); ``order`` keeps each batch's frame records until
    its output comes back. A decode failure ends the segment (no output of it is kept)."""
    plan = run.plan
    order: deque = deque()
    one_by_one = bool(plan.tile or plan.too_big or plan.deep)

    def batches():
        pending: list[tuple] = []
        for item in decoded:
            pending.append(item)
            if len(pending) >= plan.batch or (one_by_one and not run.yuv):
                order.append(list(pending))
                arr = np.stack([p[4] for p in pending])  # uint8 RGB or YUV: bytes to the runner
                pending.clear()
                yield arr
        if pending:
            order.append(list(pending))
            yield np.stack([p[4] for p in pending])

    def outputs():
        it = batches()
        first = next(it, None)  # the first frame decided the path (run.yuv)
        if first is None:
            return
        chain = itertools.chain((first,), it)
        if run.yuv:
            for y in runner.stream_yuv(chain, *run.yuv):
                if y.shape[1:] != (plan.height * 3 // 2, plan.width):  # the graph's, not the descriptor's word
                    raise ModelError(f"the model returned {y.shape[2]}x{y.shape[1] * 2 // 3} frames where its "
                                     f"descriptor says {plan.width}x{plan.height}")
                yield y
        elif plan.deep:  # 16-bit RGB through the float graph, rounded into uint16 tile row by tile row
            yield from (np.stack([upscale_frame(runner, f.astype(np.float32) * (1 / 65535), tile=plan.tile,
                                                out_max=65535.0, out_dtype=np.uint16) for f in b]) for b in chain)
        elif plan.tile or plan.too_big:  # tiles (asked for, too large for the memory budget or the profile)
            yield from (np.stack([upscale_frame(runner, f, tile=plan.tile) for f in b]) for b in chain)
        else:
            yield from runner.stream_u8(chain)

    for res in outputs():
        for p, o in zip(order.popleft(), res):
            put(("frame", p[1], p[2], p[3], o, p[5]))


def _open_encoder(run: _Segment, runner: Runner, tmp: Path):
    """The segment's output file and video stream, set up for the plan."""
    import av

    from sr_deploy.media.segments import segment_format

    plan, options, vin = run.plan, run.options, run.vin
    try:
        # the edit list that carries the encoder's reordering delay is in the movie's time scale
        # (1 ms by default): in the stream's own, every segment keeps its timestamps to the tick
        out = av.open(str(tmp), "w", format=segment_format(options.codec),
                      options={"movie_timescale": str(vin.time_base.denominator)} if vin.time_base else {})
    except (av.error.FFmpegError, OSError) as exc:
        raise OutputError(f"{tmp}: cannot open for writing ({exc})") from exc
    try:
        codec = options.codec
        try:
            vout = out.add_stream(codec, rate=frame_rate(vin))
        except (av.error.FFmpegError, ValueError) as exc:
            raise InputError(f"video codec {codec!r} is not available in this FFmpeg build") from exc
        try:
            vout.width, vout.height, vout.pix_fmt = plan.width, plan.height, plan.pix_fmt
        except (ValueError, av.error.FFmpegError) as exc:
            raise InputError(f"--pix-fmt {plan.pix_fmt!r} is not a pixel format {codec} takes "
                             f"(for example yuv420p, yuv420p10le)") from exc
        vout.time_base = vin.time_base
        vout.codec_context.time_base = vin.time_base
        sar = output_sar(vin, plan.src_w, plan.src_h, plan.width, plan.height)
        if sar is not None:
            vout.codec_context.sample_aspect_ratio = sar
        vout.options = encoder_options(codec, options, plan.width, plan.height, plan.deep)
        if options.bitrate:
            vout.bit_rate = _parse_bitrate(options.bitrate)
        if codec in ("libx264", "libx265"):
            threads = options.encoder_threads
            threads = encoder_threads_for(runner) if threads is None else threads
            if threads:
                vout.codec_context.thread_count = threads
    except BaseException as exc:
        with contextlib.suppress(OSError, av.error.FFmpegError):
            out.close()
        # the same one-line errors as the encoding that follows (encode_segment)
        if isinstance(exc, OSError):
            raise OutputError(f"{tmp.parent}: write failed ({exc.strerror or exc})") from exc
        if isinstance(exc, av.error.FFmpegError):
            raise OutputError(f"{tmp.parent}: encoding failed ({exc})") from exc
        raise
    return out, vout


def _output_frame(run: _Segment, arr: np.ndarray, a: np.ndarray | None, to_yuv: bool, threads: int):
    """The encoder's frame for one upscaled output (RGB, or YUV from the YUV graph)."""
    import av
    import cv2

    plan, colors = run.plan, run.colors
    if run.yuv:
        return yuv_frame(arr, plan.pix_fmt)
    if run.options.outscale is not None:
        arr = resize_to(arr, (plan.width, plan.height))
    if a is not None:  # bicubic in the alpha's own dtype, as for images (OpenCV saturates)
        a = cv2.resize(a, (arr.shape[1], arr.shape[0]), interpolation=cv2.INTER_CUBIC)
        arr = np.concatenate((arr, a[..., None]), axis=2)
    if plan.cut:
        arr = np.ascontiguousarray(arr[:plan.height, :plan.width])
    frame = av.VideoFrame.from_ndarray(arr, format=plan.rgb_fmt)
    if to_yuv:  # with the source's matrix and range (the encoder's own conversion assumes BT.601)
        frame = run.enc_sws.reformat(frame, format=plan.pix_fmt, dst_colorspace=colors.sws,
                                     dst_color_range=colors.range, threads=threads)
    return frame


class _SegmentSink:
    """A segment's frame sink: its output file and video stream (``_open_encoder``), written frame by frame on
    the caller's thread, the stream's display matrix and colours set from the first frame's source."""

    def __init__(self, run: _Segment, runner: Runner, tmp: Path) -> None:
        self.run = run
        self.out, self.vout = _open_encoder(run, runner, tmp)
        vin = run.vin
        self.rate = frame_rate(vin)
        self.ticks_per_frame = 1 / (self.rate * vin.time_base) if vin.time_base else 1
        self.frames = 0
        self.to_yuv = False

    def write(self, item) -> None:
        import av

        run, vout = self.run, self.vout
        _, idx, pts, tb, arr, a = item
        if not self.frames:  # before the first frame is encoded: the stream's display matrix and colours
            if run.matrix:
                vout.set_display_matrix(run.matrix)
            colors, cc = run.colors, vout.codec_context
            cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = (
                colors.matrix, colors.primaries, colors.trc, colors.range)
            self.to_yuv = not av.VideoFormat(run.plan.pix_fmt).is_rgb
        frame = _output_frame(run, arr, a, self.to_yuv, vout.codec_context.thread_count)
        del arr, a, item
        # a raw .h264/.hevc stream has no timestamps: the frame's place at the stream's rate
        frame.pts = pts if pts is not None else int(round(idx * self.ticks_per_frame))
        frame.time_base = tb or run.vin.time_base or 1 / self.rate
        for pkt in vout.encode(frame):
            self.out.mux(pkt)
        self.frames += 1

    def finish(self) -> None:
        """The encoder's delayed frames and the file's trailer (which can fail on a full disk too)."""
        for pkt in self.vout.encode(None):
            self.out.mux(pkt)
        self.out.close()

    def close(self) -> None:
        import av

        try:
            self.out.close()
        except (OSError, av.error.FFmpegError):
            pass  # already reported; the temporary file is removed by the caller


def encode_segment(runner: Runner, src: Path, plan, seg, tmp: Path, options: VideoOptions, *, say=None,
                   on_frame=None, abort: threading.Event | None = None, frames: FramePlan | None = None) -> int:
    """Decode the frames of one segment (from the keyframe at or before its start), run them through
    ``runner`` and encode them, video only, into ``tmp`` (a QuickTime file); returns the frame count: the
    segment's frame source (``_decode``), the model (``_infer``) and its sink (``_SegmentSink``) on the three
    stages of media/stages.py. ``options.codec`` must be resolved (not ``auto``): every segment of a run is
    encoded alike. Setting ``abort`` (another thread) stops it as an interrupt does (KeyboardInterrupt, ``tmp``
    removed). ``frames``: the run's FramePlan, decided once by the caller (None: from this segment's stream)."""
    import av

    say = say or (lambda line: None)
    on_frame = on_frame or (lambda n: None)
    inp = open_input(src)
    try:
        vin = main_video(inp)
        vin.thread_type = "AUTO"
        fp = frames or frame_plan(runner, (vin.codec_context.width, vin.codec_context.height),
                                  vin.codec_context.pix_fmt, options, src, say if seg.index == 0 else (lambda line: None))
        stop = threading.Event()
        run = _Segment(fp, seg, options, src, vin, say, stop, bool(plan.timestamps))
        run.dec_sws, run.enc_sws = av.video.reformatter.VideoReformatter(), av.video.reformatter.VideoReformatter()
        decoded = _frames_in_segment(inp, src, seg)
        if options.deinterlace:
            decoded = deinterlaced(decoded, vin, say if seg.index == 0 else None)
        # the queues hold whole frames: bounded in bytes too, so a 4K source (a 398 MB x4 output frame) keeps
        # one upscaled frame waiting for the encoder, not eight
        stages = ThreeStages(lambda put: _decode(run, decoded, put), lambda items, put: _infer(run, runner, items, put),
                             ahead=max(2, min(options.queue_size, QUEUE_BYTES // (fp.src_h * fp.src_w * fp.px_bytes))),
                             behind=min(options.queue_size, QUEUE_BYTES // (fp.height * fp.width * fp.px_bytes)),
                             stop=stop, abort=abort)
        try:
            sink = _SegmentSink(run, runner, tmp)
            try:
                for item in stages:
                    sink.write(item)
                    del item
                    on_frame(1)
                sink.finish()
            except OSError as exc:
                raise OutputError(f"{tmp.parent}: write failed ({exc.strerror or exc})") from exc
            except av.error.FFmpegError as exc:
                raise OutputError(f"{tmp.parent}: encoding failed ({exc})") from exc
            finally:
                sink.close()
            if sink.frames == 0:
                raise InputError(f"{src}: no decodable video frames"
                                 + (f" from frame {seg.first_frame}" if seg.index else ""))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            stages.close()
    finally:
        inp.close()
    return sink.frames


class _SharedRunner:
    """A runner several segment pipelines share: each batch runs alone under a lock (the model runs one
    batch at a time whatever asks), everything else (sizes, descriptor, budget) is the runner's own."""

    def __init__(self, runner: Runner) -> None:
        self._runner, self._lock = runner, threading.Lock()

    def __getattr__(self, name):
        return getattr(self._runner, name)

    def stream_u8(self, batches):
        for b in batches:
            with self._lock:
                y = next(iter(self._runner.stream_u8(iter([b]))))
            yield y

    def stream_yuv(self, batches, inp, out):
        for b in batches:
            with self._lock:
                y = next(iter(self._runner.stream_yuv(iter([b]), inp, out)))
            yield y

    def infer_u8(self, batch):
        with self._lock:
            return self._runner.infer_u8(batch)

    def infer(self, batch):
        with self._lock:
            return self._runner.infer(batch)


def parallel_segments(runner: Runner, codec: str, options: VideoOptions, todo: int) -> int:
    """How many segments are encoded at once: --parallel-segments, else, where a GPU runs the model and a
    software encoder takes its frames (no NVENC: the H100 and A100 have none), one encoder per four host
    cores, so the encoders use every core while one model on the GPU feeds them all."""
    import os

    if options.parallel_segments is not None:
        return max(1, min(options.parallel_segments, todo))
    if not runner.on_gpu or codec in NVENC_CODECS:
        return 1
    return max(1, min(todo, (os.cpu_count() or 1) // 4))


def encode_segments_parallel(runner: Runner, src: Path, plan, todo: list, options: VideoOptions, parts,
                             workers: int, say, bar, frames: FramePlan | None = None) -> None:
    """The segments of ``todo`` encoded ``workers`` at a time, each by its own decoder and encoder, the
    model shared batch by batch; each finished segment is recorded as it ends. An interrupt or an error
    stops every worker (each removes its unfinished file) before it is raised here."""
    import os
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    shared = _SharedRunner(runner)
    if options.encoder_threads is None and options.codec in ("libx264", "libx265"):
        options = dataclasses.replace(options, encoder_threads=max(1, (os.cpu_count() or 1) // workers))
    abort, lock = threading.Event(), threading.Lock()

    def progress(n: int) -> None:
        with lock:
            bar.update(n)

    def one(seg) -> None:
        tmp = parts.tmp_path(seg.index)
        n = encode_segment(shared, src, plan, seg, tmp, options, say=say, on_frame=progress, abort=abort,
                           frames=frames)
        with lock:
            parts.record(seg.index, n, tmp)

    pool = ThreadPoolExecutor(workers, thread_name_prefix="srdeploy-segment")
    futures = []
    try:
        futures = [pool.submit(one, seg) for seg in todo]
        pending = futures
        while pending:  # woken often: an interrupt reaches this thread between waits
            done, pending = wait(pending, timeout=0.1, return_when=FIRST_EXCEPTION)
            for f in done:
                if f.exception() is not None:
                    raise f.exception()
    except BaseException:
        abort.set()
        for f in futures:
            f.cancel()
        raise
    finally:
        pool.shutdown(wait=True)


SEGMENT_COMPUTE_S = 60.0  # a segment is about this much compute: what an interrupt can lose
SEGMENT_RANGE_S = (0.2, 60.0)  # of video, whatever the speed


def auto_segment_seconds(runner: Runner, src: Path, dst: Path, options: VideoOptions, *, pool=None) -> float:
    """Segment length (seconds of video) for about SEGMENT_COMPUTE_S of compute per segment, from one timed
    frame on this runner (a quarter of the source's area); an unfinished run of the same output keeps its own length
    (its manifest), so a resumed run cuts where the first did. Ray pools keep the fixed 10 s (their workers
    are elsewhere). Measured because the same clip is 0.2 frames/s with srresnet_x4 on a 2-core CPU and
    hundreds on a GPU: a fixed 10 s of video was 21 minutes of work lost to an interrupt."""
    import json
    import time

    from sr_deploy.media.container import frame_rate, main_video, open_input
    from sr_deploy.media.segments import SEGMENT_SECONDS, Parts

    manifest = Parts(dst).manifest
    if manifest.exists():
        try:
            kept = json.loads(manifest.read_text())["key"]["segment_seconds"]
            if isinstance(kept, (int, float)) and kept > 0:
                return float(kept)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # Parts.open reports an unreadable manifest
    if pool is not None:
        return SEGMENT_SECONDS
    inp = open_input(src)
    try:
        vin = main_video(inp)
        rate = float(frame_rate(vin))
        w, h = vin.codec_context.width, vin.codec_context.height
    finally:
        inp.close()
    # timed on a frame of a quarter of the area (sides halved, 64 px at least), scaled by the area: a model's
    # work grows with its pixels, and two whole frames computed only to be timed were 1.4 s of a 12-frame
    # srresnet_x4 run (bf16, 270x480, AVX512-BF16 EPYC) before its first frame
    h, w = max(1, h), max(1, w)
    th, tw = max(min(h, 64), -(-h // 2)), max(min(w, 64), -(-w // 2))
    frame = np.zeros((th, tw, 3), np.uint8)
    upscale_frame(runner, frame, tile=options.tile)  # warm-up: compilation, allocation
    t0 = time.perf_counter()
    upscale_frame(runner, frame, tile=options.tile)
    per_frame = max((time.perf_counter() - t0) * (h * w) / (th * tw), 1e-4)
    seconds = SEGMENT_COMPUTE_S / per_frame / rate
    return float(min(max(seconds, SEGMENT_RANGE_S[0], 1.0 / rate), SEGMENT_RANGE_S[1]))


# encoders that write the sample aspect ratio into the bitstream (H.264/HEVC VUI, MPEG-2/4 headers); other
# codecs (VP9, AV1, ProRes...) rely on the container, and only MP4/MOV ('pasp') take it from the stream here
SAR_IN_BITSTREAM = ("libx264", "libx265", "h264_nvenc", "hevc_nvenc", "mpeg2video", "mpeg4", "libxvid")


def _source_sar(vin) -> Fraction | None:
    sar = vin.sample_aspect_ratio or vin.codec_context.sample_aspect_ratio
    return Fraction(sar) if sar and sar > 0 else None


def check_sar_kept(src: Path, dst: Path, codec: str, say) -> None:
    """One warning when the source's pixels are not square and the output cannot say so: Matroska/WebM
    store it as a display size that FFmpeg writes only from a stream field PyAV does not reach, so a VP9
    or AV1 .webm/.mkv would show an anamorphic DVD (16:9) squeezed to 3:2."""
    from sr_deploy.media.container import format_for

    with open_input(src) as c:
        v = main_video(c)
        sar, w, h = _source_sar(v), v.codec_context.width, v.codec_context.height
    if sar is None or sar == 1 or codec in SAR_IN_BITSTREAM or format_for(dst) in ("mp4", "mov"):
        return
    dar = sar * w / h
    say(f"warning: {src.name} has non-square pixels (aspect ratio {sar.numerator}:{sar.denominator}, shown at "
        f"{dar.numerator}:{dar.denominator}) and {codec} in {dst.suffix} files cannot carry that here: the output "
        f"shows at {Fraction(w, h).numerator}:{Fraction(w, h).denominator}; write .mp4 or .mov, or --codec libx264")


def output_sar(vin, src_w: int, src_h: int, width: int, height: int) -> Fraction | None:
    """The output's sample (pixel) aspect ratio, so that it shows at the source's display aspect: an
    anamorphic source (a 16:9 DVD is 720x480 with 32:27 pixels) upscaled without it would show squeezed
    (3:2). The container's value first, as FFmpeg does, else the bitstream's; None for square pixels. An
    output whose size is not an exact multiple of the source's (--outscale rounding, a cut column) gets
    the ratio that keeps the display aspect."""
    sar = _source_sar(vin)
    if sar is None:
        return None
    out = (sar * src_w * height / (src_h * width)).limit_denominator(65535)  # H.264/HEVC VUI: 16 bits
    return None if out == 1 else out


@dataclass(frozen=True)
class Colors:
    """How the source's pixels are to be shown: FFmpeg's AVCOL_* numbers for the YUV matrix, primaries,
    transfer and range. The output is encoded with the same matrix and range and tagged with all four."""

    matrix: int
    primaries: int
    trc: int
    range: int

    @property
    def sws(self) -> int | None:
        """swscale's number for the matrix (SWS_CS_*), None where it has none (then its default)."""
        return {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}.get(self.matrix)


def source_colors(frame, width: int, height: int) -> Colors:
    """The first frame's colour description, with what players assume for whatever is untagged: BT.709
    from 1280 wide or 577 lines up, else BT.601 (PAL primaries at 576 lines, SMPTE 170M otherwise),
    limited range. Left untagged, a 4x output (usually HD) would be shown by players as BT.709 whatever
    the source was, with visibly shifted reds and greens for an SD source."""
    hd = width >= 1280 or height > 576
    untagged = (0, 2, 3)
    matrix = frame.colorspace if frame.colorspace not in untagged else (1 if hd else 6)
    primaries = frame.color_primaries if frame.color_primaries not in untagged else (
        1 if hd else (5 if height == 576 else 6))
    trc = frame.color_trc if frame.color_trc not in untagged else (1 if hd else 6)
    rng = frame.color_range if frame.color_range in (1, 2) else 1
    return Colors(int(matrix), int(primaries), int(trc), int(rng))


_IDENTITY = [1 << 16, 0, 0, 0, 1 << 16, 0, 0, 0, 1 << 30]


def side_data(frame) -> list:
    """A frame's side data entries (PyAV SideData objects, each with ``.type`` and its bytes). PyAV 18.1.1 made
    iterating the container yield the keys (a Mapping's iteration); 18.1.0 and earlier yielded the entries.
    Each element is taken as it comes where it is an entry and looked up where it is a key, so both read."""
    container = getattr(frame, "side_data", None)
    if not container:
        return []
    return [x if hasattr(x, "type") else container[x] for x in container]


def display_matrix(frame, scale: float) -> list[int] | None:
    """The frame's display matrix (FFmpeg's 3x3 int32 AV_FRAME_DATA_DISPLAYMATRIX: rotation and flips a
    player applies, e.g. a phone's portrait video stored landscape), for an output ``scale`` times larger
    (its translation is in pixels); None without one or for the identity."""
    for sd in side_data(frame):
        if sd.type.name == "DISPLAYMATRIX":
            m = np.frombuffer(bytes(sd), dtype=np.int32)[:9].tolist()
            if len(m) < 9 or m == _IDENTITY:
                return None
            m[6], m[7] = round(m[6] * scale), round(m[7] * scale)
            return [int(v) for v in m]
    return None


def encoder_options(codec: str, options: VideoOptions, width: int, height: int, deep: bool) -> dict:
    """FFmpeg private options for ``codec``: the preset (x264/x265, NVENC; kept with --bitrate too), the
    constant-quality setting unless --bitrate asks for a rate, and x264/x265's lookahead capped for
    huge frames."""
    opts: dict = {}
    preset = options.preset or ("p5" if codec.endswith("_nvenc") else DEFAULT_X26X_PRESET)
    if codec in ("libx264", "libx265"):
        opts["preset"] = preset
        if not options.bitrate:
            opts["crf"] = str(options.crf)
    elif codec.endswith("_nvenc"):
        opts["preset"] = preset
        if not options.bitrate:
            opts["cq"] = str(options.crf)
    elif codec in ("libvpx-vp9", "libvpx", "libaom-av1", "libsvtav1") and not options.bitrate:
        opts.update(crf=str(options.crf), b="0")  # constant quality, as CRF means for x264
    # the encoder's lookahead holds whole frames (40 at x264's medium preset): at 8K and beyond that
    # alone passes gigabytes, so it is capped to ~1 GiB of frames there (never raised above the preset's)
    look = max(2, ENCODER_LOOKAHEAD_BYTES // (width * height * 3 // 2 * (2 if deep else 1)))
    capped = codec in ("libx264", "libx265") and look < PRESET_LOOKAHEAD[codec][X264_PRESETS.index(preset)]
    if capped and codec == "libx264":
        opts["rc-lookahead"] = str(look)
    if codec == "libx265":  # x265 prints its statistics to stderr itself: only its errors, as FFmpeg's log
        opts["x265-params"] = X265_QUIET + (f":rc-lookahead={look}" if capped else "") + \
            ("" if options.b_frames else ":bframes=0")
    elif not options.b_frames:
        opts["bf"] = "0"  # FFmpeg's own option (max_b_frames), for x264, NVENC and the others
    if options.hdr10 and codec in HDR10_PARAMS:
        md, cll = options.hdr10
        key, md_name, cll_name, extra = HDR10_PARAMS[codec]
        params = [p for p in (opts.get(key), extra, md and f"{md_name}={md}", cll and f"{cll_name}={cll}") if p]
        opts[key] = ":".join(params)
    return opts


# the encoders that write HDR10 static metadata (SEI) from parameters: (option, mastering display's name,
# content light level's name, what else turns it on)
HDR10_PARAMS = {"libx264": ("x264-params", "mastering-display", "cll", None),
                "libx265": ("x265-params", "master-display", "max-cll", "hdr10=1")}


def read_hdr10(src: Path) -> tuple[str | None, str | None] | None:
    """The HDR10 static metadata on the first frame of ``src``'s video (None when it has none): the mastering
    display as x264/x265 write it, G(x,y)B(x,y)R(x,y)WP(x,y)L(max,min) in 1/50000 and 1/10000 cd/m2 units,
    and the content light level as "MaxCLL,MaxFALL". FFmpeg hands it over as its C structs
    (AVMasteringDisplayMetadata: 11 AVRationals and two flags; AVContentLightMetadata: two unsigned ints),
    which PyAV gives as bytes; they are read here by their layout."""
    import struct

    import av

    try:
        with open_input(src) as c:
            frame = next(c.decode(main_video(c)), None)
    except (av.error.FFmpegError, OSError, SRDeployError):
        return None
    md = cll = None
    for sd in side_data(frame):
        name, data = getattr(sd.type, "name", ""), bytes(sd)
        if name == "MASTERING_DISPLAY_METADATA" and len(data) >= 88:
            v = struct.unpack_from("<22i", data)
            if v[20] and v[21] and all(v[i] > 0 for i in range(1, 20, 2)):  # has primaries and luminance

                def q(i: int, unit: int) -> int:
                    return round(v[i] / v[i + 1] * unit)

                md = (f"G({q(4, 50000)},{q(6, 50000)})B({q(8, 50000)},{q(10, 50000)})R({q(0, 50000)},{q(2, 50000)})"
                      f"WP({q(12, 50000)},{q(14, 50000)})L({q(18, 10000)},{q(16, 10000)})")
        elif name == "CONTENT_LIGHT_LEVEL" and len(data) >= 8:
            cll = "{},{}".format(*struct.unpack_from("<2I", data))
    return (md, cll) if md or cll else None


X265_QUIET = "log-level=error"


# x264/x265 presets' default rc-lookahead (frames), in X264_PRESETS' order (x264 --fullhelp, x265 docs)
PRESET_LOOKAHEAD = {"libx264": (0, 0, 10, 20, 30, 40, 50, 60, 60, 60),
                    "libx265": (5, 10, 15, 15, 15, 20, 25, 40, 40, 60)}
# x264/x265 preset when none is given. The encoder shares the CPU with a CPU model, or is the bottleneck
# beside a GPU model without NVENC. medium's 40-frame lookahead is encoded after the model's last frame
# (0.3-0.4 s of a 7 s sample-clip run with srresnet_x4, against 0.1 s at veryfast), and for light_x4
# the encoder is the bottleneck (veryfast: 25% more frames/s); veryfast costs ~1 dB of encoding fidelity
# at CRF 18, far inside the model's own error (benchmarks/results/video-budget-cpu.md, session 10)
DEFAULT_X26X_PRESET = "veryfast"


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


BITRATE_RANGE = (10_000, 2_000_000_000)  # 10 kbit/s to 2 Gbit/s: what the encoders here take


def _parse_bitrate(text: str) -> int:
    t = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    try:
        value = float(t.rstrip("km")) * mult
    except ValueError:
        raise InputError(f"--bitrate {text!r} is not a number like 8M or 2500k") from None
    if not BITRATE_RANGE[0] <= value <= BITRATE_RANGE[1]:
        raise InputError(f"--bitrate {text}: must be from 10k to 2000M bits per second")
    return int(value)
