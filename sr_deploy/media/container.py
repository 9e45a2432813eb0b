"""Opening a video input, and what a container can hold (shared by media/video.py and media/segments.py)."""

from __future__ import annotations

from pathlib import Path

from sr_deploy.errors import InputError


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
    try:
        v = main_video(container)
    except InputError as exc:
        container.close()
        raise InputError(f"{path}: {exc}") from None
    if not (v.codec_context.width and v.codec_context.height and v.codec_context.pix_fmt):
        raw = container.format.name in RAW_STREAM_FORMATS
        container.close()  # a raw stream cut after its parameter sets, with no keyframe headers after the cut
        raise InputError(f"{path}: " + ("its video stream has no picture size or format to decode with (a raw "
                                        "stream cut before its first keyframe headers?)" if raw else
                                        "not a readable video (no picture size or pixel format)"))
    return container


# Elementary streams without a container: their demuxers have no timing and report 25 frames/s as the
# average rate, while the codec's own header (H.264/HEVC VUI, the MPEG-2 sequence header) has the real one.
RAW_STREAM_FORMATS = frozenset({"h264", "hevc", "vvc", "m4v", "mpegvideo", "cavsvideo", "avs2", "avs3"})


def frame_rate(stream):
    """A video stream's nominal frame rate (a Fraction): the container's average, or for a raw elementary
    stream the rate its codec header gives (FFmpeg's guessed rate follows that header)."""
    from fractions import Fraction

    raw = stream.container is not None and stream.container.format.name in RAW_STREAM_FORMATS
    rates = (stream.guessed_rate, stream.average_rate) if raw else (stream.average_rate, stream.guessed_rate)
    return next((Fraction(r) for r in rates if r), Fraction(25))


def main_video(container):
    """The video stream to upscale: FFmpeg's best video stream (av_find_best_stream), and never an
    attached picture (cover art, a thumbnail track) while the file has a real video stream; a file whose
    first video stream is its cover must not come out as one upscaled still."""
    import av

    real = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not real:
        raise InputError("no video stream in this file (only a cover picture)")
    best = container.streams.best("video")
    if best is not None and any(best.index == s.index for s in real):
        return best
    return max(real, key=lambda s: (s.frames, s.codec_context.width * s.codec_context.height))


# Subtitle codecs each output container can hold (FFmpeg's muxers accept these; others fail only when
# the header is written, after the whole run). Other streams are tried on the muxer itself (_muxer_takes).
_SUBTITLE_CODECS = {
    ".mp4": {"mov_text"}, ".m4v": {"mov_text"}, ".mov": {"mov_text"},
    ".mkv": None, ".webm": {"webvtt"}, ".avi": set(), ".ts": {"dvb_subtitle", "dvb_teletext"},
}


def container_takes(dst: Path, stream) -> bool:
    if stream.type != "subtitle":
        return _muxer_takes(dst, stream)
    allowed = _SUBTITLE_CODECS.get(dst.suffix.lower(), None)
    return allowed is None or stream.codec_context.name in allowed


def _muxer_takes(dst: Path, stream) -> bool:
    """Whether the output's muxer writes a header with this stream (AAC in MPEG-PS, for one, it does not):
    asked of FFmpeg itself, in memory, because its codec tables leave out codecs that many muxers take."""
    import io

    import av

    fmt = format_for(dst)
    if fmt is None:
        return True  # no muxer known for this suffix here: the join itself reports
    try:
        with av.open(io.BytesIO(), "w", format=fmt) as probe:
            probe.add_stream_from_template(stream)
            probe.start_encoding()
        return True
    except (av.error.FFmpegError, ValueError):
        return False


def stream_seconds(stream) -> float | None:
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


def format_for(dst: Path) -> str | None:
    """The muxer for the output's suffix (the temporary name's suffix may not say it)."""
    return {".mkv": "matroska", ".webm": "webm", ".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".avi": "avi",
            ".ts": "mpegts", ".mpg": "mpeg", ".mpeg": "mpeg", ".flv": "flv", ".wmv": "asf"}.get(dst.suffix.lower())
