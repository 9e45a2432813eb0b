"""Segmented, resumable video runs.

Every video run is cut into independent segments of a few seconds. A segment is a half-open range of
source timestamps: its frames are decoded after a seek to the keyframe at or before its first frame (so
the source's GOP length does not matter), super-resolved, and encoded to a file of its own that starts
with a keyframe. Finished segments are recorded in a manifest in ``OUTPUT.segments/`` beside the output;
the final file is the segments joined by stream copy, with the source's audio and subtitle streams muxed
once, timestamps carried through unchanged. After a crash, SIGKILL or Ctrl-C the same command finds the
manifest and redoes only the segments it does not list; a manifest written for another input, model or
settings is refused (``--restart`` discards it). A run in one process and a run spread over Ray workers
(media/distributed.py) go through the same functions.

The segment bookkeeping is written here by hand: FFmpeg's segment muxer cuts an encoded stream after the
fact (it cannot restart the model mid-file), and its concat demuxer works on files that are already
complete; what is needed is a unit of work that is decoded, inferred and encoded independently.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import shutil
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from sr_deploy.errors import InputError, OutputError, SRDeployError
from sr_deploy.fsutil import sha256_file
from sr_deploy.media.container import format_for

SEGMENT_SECONDS = 10.0
MANIFEST_FORMAT = 1
SEGMENT_SUFFIX = ".mov"  # QuickTime/MP4 keep each stream's time base and every packet's dts
_MP4_ONLY = {"libvpx-vp9", "vp9_nvenc", "libaom-av1", "libsvtav1", "av1_nvenc"}  # QuickTime's muxer refuses these


def segment_format(codec: str) -> str:
    """The muxer of a segment file: QuickTime (H.264, HEVC, ProRes, ...), or MP4 for VP9/AV1."""
    return "mp4" if codec in _MP4_ONLY else "mov"


@dataclass(frozen=True)
class Segment:
    index: int
    first_frame: int  # index in the run of the segment's first frame (messages; sources without timestamps)
    frames: int  # frames the probe counted; the decoder decides, and the manifest records what was written
    lo: int | None  # first pts, in the video stream's time base (None: from the start of the run)
    hi: int | None  # the next segment's first pts (None: to the end of the run)


@dataclass
class Plan:
    segments: list[Segment]
    time_base: Fraction
    total_frames: int | None
    size: tuple[int, int] = (0, 0)  # the source's video width and height
    pix_fmt: str | None = None  # and its decoder's pixel format: with the size, what the run's FramePlan reads
    timestamps: bool = True  # False: the source has frames without timestamps; one segment, decoded from the start
    notes: list[str] = field(default_factory=list)

    def boundaries(self) -> list:
        return [[s.lo, s.hi, s.frames] for s in self.segments]


def window_of(options) -> tuple[float, float, int | None]:
    start = float(options.start or 0.0)
    end = start + options.duration if options.duration else float("inf")
    return start, end, options.max_frames


def plan_segments(src: Path, options, seconds: float = SEGMENT_SECONDS) -> Plan:
    """Read the video packets' timestamps (no decoding) and cut the run into segments of ``seconds``."""
    import av

    from sr_deploy.media.container import frame_rate, main_video, open_input, stream_seconds

    if not seconds > 0:
        raise InputError(f"--segment-seconds must be positive, got {seconds}")
    start_s, end_s, limit = window_of(options)
    windowed = bool(options.start or options.duration or options.max_frames)
    inp = open_input(src)
    try:
        vin = main_video(inp)
        tb = vin.time_base or Fraction(1, 90000)
        pts: list[int] = []
        missing = 0
        try:
            for packet in inp.demux(vin):
                if packet.size == 0 and packet.dts is None:
                    continue  # the empty packet that ends demuxing
                if packet.pts is None:
                    missing += 1
                else:
                    pts.append(packet.pts)
        except av.error.FFmpegError as exc:
            raise InputError(f"{src}: video cannot be read past frame {len(pts) + missing} "
                             f"({exc.__class__.__name__}): the file is truncated or damaged") from exc
        expected = stream_seconds(vin)
        interval = float(1 / frame_rate(vin))
        size, pix_fmt = (vin.codec_context.width, vin.codec_context.height), vin.codec_context.pix_fmt
    finally:
        inp.close()
    if missing or not pts:
        # no timestamps to cut at (raw streams, some AVI): one segment, decoded from the start
        total = (len(pts) + missing) or None
        if limit and total:
            total = min(total, limit)
        note = [f"note: {src.name} has video packets without timestamps: it runs as one segment"] if missing else []
        return Plan([Segment(0, 0, total or 0, None, None)], tb, total, size, pix_fmt, timestamps=False, notes=note)
    pts.sort()
    repeats = [i for i in range(1, len(pts)) if pts[i] == pts[i - 1]]
    if repeats:
        # Timestamps that repeat (recordings joined byte by byte, damaged muxing) have no order to keep:
        # refused here, before any work, rather than failing in the muxer after the whole run.
        many = "1 video frame repeats" if len(repeats) == 1 else f"{len(repeats)} video frames repeat"
        raise InputError(f"{src}: {many} another frame's timestamp (the first at "
                         f"{float(pts[repeats[0]] * tb):.2f}s): the file was joined from several recordings or is "
                         "damaged; remux it with new timestamps first")
    if not windowed and expected:
        last_t = float(pts[-1] * tb)
        if last_t + interval < expected - max(0.5, 0.05 * expected):
            raise InputError(f"{src}: video stream ends at frame {len(pts)} ({last_t:.2f}s of {expected:.2f}s): "
                             "the file is truncated or damaged")
    kept = [p for p in pts if start_s - 1e-6 <= float(p * tb) < end_s]
    if limit:
        kept = kept[:limit]
    if not kept:
        raise InputError(f"{src}: no video frames in the requested window")
    starts = [0]
    for i, p in enumerate(kept):
        if float((p - kept[starts[-1]]) * tb) >= seconds:
            starts.append(i)
    segments = []
    for k, a in enumerate(starts):
        b = starts[k + 1] if k + 1 < len(starts) else len(kept)
        lo = kept[a] if k else None
        # the last segment ends at the window's last frame when a frame limit cut it, else at the end
        hi = kept[b] if b < len(kept) else (pts[pts.index(kept[-1]) + 1] if limit and kept[-1] != pts[-1] else None)
        segments.append(Segment(k, a, b - a, lo, hi))
    return Plan(segments, tb, len(kept), size, pix_fmt)


def manifest_key(src: Path, identity: str, options, codec: str, seconds: float) -> dict:
    """What a finished segment depends on: the input's bytes, the model, and every setting that changes pixels."""
    from sr_deploy import __version__

    settings = {k: getattr(options, k) for k in ("crf", "preset", "pix_fmt", "bitrate", "tile", "start", "duration",
                                                 "max_frames", "deinterlace", "outscale", "b_frames", "yuv")}
    return {"format": MANIFEST_FORMAT, "srdeploy": __version__,
            "input": {"name": src.name, "bytes": src.stat().st_size, "sha256": sha256_file(src)},
            "model": identity, "codec": codec, "settings": settings, "segment_seconds": seconds}


class Parts:
    """The folder of finished segments and their manifest, beside the output; locked while a run uses it."""

    def __init__(self, dst: Path) -> None:
        self.dir = dst.parent / f"{dst.name}.segments"
        self.manifest = self.dir / "manifest.json"
        self._lock = None
        self.done: dict[int, dict] = {}
        self.key: dict | None = None
        self.boundaries: list | None = None

    def path(self, index: int) -> Path:
        return self.dir / f"seg_{index:05d}{SEGMENT_SUFFIX}"

    def open(self, key: dict, plan: Plan, *, restart: bool, say) -> int:
        """Lock the folder, check its manifest against ``key``; returns how many finished segments are reused."""
        import fcntl

        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.dir / "lock", "w")
        except OSError as exc:
            raise OutputError(f"{self.dir}: cannot write here ({exc.strerror or exc})") from exc
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            self._lock = None
            raise OutputError(f"{self.dir}: another srdeploy run is writing this output now") from None
        try:
            return self._take_up(key, plan, restart=restart, say=say)
        except BaseException:
            self.close(remove=False)  # a folder refused (or a run stopped here) is not left locked
            raise

    def _take_up(self, key: dict, plan: Plan, *, restart: bool, say) -> int:
        for stale in self.dir.glob("*.tmp*"):
            stale.unlink(missing_ok=True)
        old = None
        if self.manifest.exists():
            try:
                old = json.loads(self.manifest.read_text())
                if not isinstance(old, dict) or not isinstance(old.get("segments"), dict):
                    raise ValueError("not a manifest")
            except (OSError, ValueError):
                old = "unreadable"
        self.key, self.boundaries = key, plan.boundaries()
        if old is not None and (restart or old == "unreadable" or old.get("key") != key
                                or old.get("boundaries") != self.boundaries):
            if not restart:
                what = ("an unreadable manifest" if old == "unreadable" else
                        "an unfinished run of " + _differs(old.get("key") or {}, key))
                raise OutputError(f"{self.dir}: holds {what}; pass --restart to discard it, or choose another output")
            self._clear()
            old = None
        reused = 0
        for key_text, rec in ((old or {}).get("segments") or {}).items():
            try:
                idx = int(key_text)
            except ValueError:
                idx = -1
            if idx < 0:  # a manifest edited or damaged by hand: that entry is no segment of this run
                say(f"note: {self.manifest.name} lists {key_text!r}, which is no segment number: ignored")
                continue
            part = self.path(idx)
            if idx < len(plan.segments) and _intact(part, rec):
                self.done[idx] = rec
                reused += 1
            else:
                say(f"note: segment {idx} ({part.name}) is missing or damaged: it is done again")
                part.unlink(missing_ok=True)
        self._write()
        return reused

    def record(self, index: int, frames: int, data_path: Path) -> None:
        """Move a finished segment file into place and list it in the manifest (both atomic)."""
        final = self.path(index)
        os.replace(data_path, final)
        self.done[index] = {"file": final.name, "bytes": final.stat().st_size, "sha256": sha256_file(final),
                            "frames": frames}
        self._write()

    def tmp_path(self, index: int) -> Path:
        return self.dir / f"seg_{index:05d}.tmp{SEGMENT_SUFFIX}"

    def _write(self) -> None:
        body = {"key": self.key, "boundaries": self.boundaries,
                "segments": {str(k): v for k, v in sorted(self.done.items())}}
        tmp = self.dir / "manifest.json.tmp"
        tmp.write_text(json.dumps(body, indent=1))
        os.replace(tmp, self.manifest)

    def _clear(self) -> None:
        for p in self.dir.iterdir():
            if p.name != "lock":
                p.unlink(missing_ok=True) if not p.is_dir() else shutil.rmtree(p, ignore_errors=True)
        self.done.clear()

    def close(self, *, remove: bool) -> None:
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _intact(part: Path, rec: dict) -> bool:
    try:
        return (isinstance(rec, dict) and part.is_file() and part.stat().st_size == rec.get("bytes")
                and sha256_file(part) == rec.get("sha256") and int(rec.get("frames", 0)) > 0)
    except (OSError, ValueError, TypeError):
        return False


def _differs(old: dict, new: dict) -> str:
    if old.get("input") != new.get("input"):
        return "another input file (or this one, changed)"
    if old.get("model") != new.get("model"):
        return "another model, backend or precision"
    if old.get("srdeploy") != new.get("srdeploy") or old.get("format") != new.get("format"):
        return f"srdeploy {old.get('srdeploy')}"
    return "other settings"


def assemble(src: Path, parts: list[Path], tmp: Path, dst: Path, options, say) -> int:
    """Join the segment files by stream copy into ``tmp`` (published as ``dst`` by the caller), with the
    source's audio and subtitle streams muxed once; returns how many streams were copied."""
    import av

    from sr_deploy.media.container import open_input

    start_s, end_s, _ = window_of(options)
    try:
        out = av.open(str(tmp), "w", format=format_for(dst))
    except (av.error.FFmpegError, OSError) as exc:
        raise OutputError(f"{dst}: cannot open for writing ({exc})") from exc
    inp = open_input(src)
    opened: list = []
    try:
        try:
            first = av.open(str(parts[0]))
            opened.append(first)
            template = first.streams.video[0]
            try:
                vout = out.add_stream_from_template(template)
            except ValueError as exc:  # checked before the run (video.check_output_codec); kept as one line
                raise OutputError(f"{dst}: {exc}") from None
            extradata = template.codec_context.extradata
            if template.average_rate:  # FLV writes it into its header: 1000 frames/s (its time base) without
                with contextlib.suppress(AttributeError, ValueError):
                    vout.codec_context.framerate = template.average_rate
            frame_ticks = format_for(dst) == "avi" and bool(template.average_rate)
            if frame_ticks:
                # AVI indexes frames, not timestamps: in a finer time base than one tick per frame (the
                # segments' QuickTime track is 1/10240 at 10 fps) its muxer fills the gaps with empty
                # frames and players read 600 or 10240 frames/s; and a gap in dts at a join (each segment's
                # encoder starts with its own reordering delay) is a repeated frame. So one tick per frame,
                # each packet the next tick (AVI keeps no pts: the decoder restores the order)
                vout.time_base = 1 / Fraction(template.average_rate)
            copied, upscaled, mapping = _map_streams(inp, out, dst, options, say)

            pairs = [(inp.streams[upscaled], vout)] + [(inp.streams[i], o) for i, o in mapping.items()]
            carry_container_metadata(inp, out, pairs, start_s, end_s)
            for st in inp.streams:
                if st.type == "attachment" and options.copy_streams:  # fonts for the subtitles, cover art
                    _attach(out, st, dst, say)
                elif st.type == "data":  # timecode tracks, camera telemetry: not carried across
                    what = st.metadata.get("handler_name") or (st.codec_context.name if st.codec_context else "data")
                    say(f"warning: data stream #{st.index} ({what}) is not kept")

            def video_packets():
                last_dts = None
                for k, part in enumerate(parts):
                    c = first if k == 0 else av.open(str(part))
                    if k:
                        opened.append(c)
                        if c.streams.video[0].codec_context.extradata != extradata:
                            raise SRDeployError(f"{part}: encoded with other settings than the first segment; "
                                                "rerun with --restart")
                    for pkt in _packets_for(dst, c):
                        if pkt.dts is None:
                            continue
                        if frame_ticks:
                            pkt.time_base = vout.time_base
                            pkt.pts = pkt.dts = 0 if last_dts is None else last_dts + 1
                            pkt.duration = 1
                        elif last_dts is not None and pkt.dts <= last_dts:
                            # a variable frame rate can leave the reordering delay of two encoders
                            # overlapping by a tick at a join; dts only orders decoding
                            pkt.dts = last_dts + 1
                        last_dts = pkt.dts
                        yield float(pkt.dts * pkt.time_base), 0, pkt
                    if k:
                        c.close()
                        opened.remove(c)

            def other_packets():
                if not mapping:
                    return
                shift = {}
                for pkt in inp.demux(*[st for st in copied if st.index in mapping]):
                    if pkt.dts is None:
                        continue
                    t = float(pkt.pts * pkt.time_base) if pkt.pts is not None else None
                    # only a requested window drops packets (AAC priming has negative timestamps)
                    if (options.start or options.duration) and t is not None and not start_s <= t < end_s:
                        continue
                    if start_s:
                        off = shift.setdefault(pkt.time_base, int(round(start_s / pkt.time_base)))
                        pkt.pts = None if pkt.pts is None else pkt.pts - off
                        pkt.dts = pkt.dts - off
                    yield float(pkt.dts * pkt.time_base), 1, pkt

            for _, kind, pkt in heapq.merge(video_packets(), other_packets(), key=lambda x: (x[0], x[1])):
                if kind == 0:
                    pkt.stream = vout
                else:
                    pkt.stream = mapping[pkt.stream.index]
                out.mux(pkt)
            out.close()
        except OSError as exc:
            raise OutputError(f"{dst}: write failed ({exc.strerror or exc})") from exc
        except av.error.FFmpegError as exc:
            raise OutputError(f"{dst}: joining the segments failed ({exc})") from exc
        finally:
            with contextlib.suppress(OSError, av.error.FFmpegError):
                out.close()
    finally:
        for c in opened:
            with contextlib.suppress(Exception):
                c.close()
        inp.close()
    return len(mapping)


def _map_streams(inp, out, dst: Path, options, say) -> tuple[list, int, dict]:
    """The source's streams beside the upscaled video: (audio and subtitle streams to copy, the upscaled
    stream's index, source index → output stream for those the container takes); the rest said."""
    import av

    from sr_deploy.media.container import container_takes, main_video

    copied = [st for st in inp.streams if st.type in ("audio", "subtitle")] if options.copy_streams else []
    upscaled = main_video(inp).index
    for st in inp.streams.video:
        if st.index != upscaled:
            kind = "cover picture" if st.disposition & av.stream.Disposition.attached_pic else "video stream"
            say(f"warning: {kind} #{st.index} ({st.codec_context.name}) is not kept: only video stream "
                f"#{upscaled} is upscaled")
    mapping = {}
    for st in copied:
        stream = None
        if container_takes(dst, st):
            with contextlib.suppress(av.error.FFmpegError, ValueError):
                stream = out.add_stream_from_template(st)
        if stream is not None:
            mapping[st.index] = stream
        else:
            say(f"warning: {st.type} stream #{st.index} ({st.codec_context.name}) is dropped: "
                f"{dst.suffix or 'this'} files cannot hold it; write to .mkv (-o NAME.mkv) to keep it")
    return copied, upscaled, mapping


def _attach(out, st, dst: Path, say) -> None:
    """Copy an attachment (a subtitle font, a cover) where the container holds attachments (Matroska), else
    name it in a warning."""
    import av

    name = st.name or st.metadata.get("filename") or f"attachment-{st.index}"
    if format_for(dst) == "matroska":
        try:
            out.add_attachment(name=name, mimetype=st.mimetype or st.metadata.get("mimetype") or
                               "application/octet-stream", data=bytes(st.data))
            return
        except (av.error.FFmpegError, ValueError, TypeError):
            pass
    say(f"warning: attachment #{st.index} ({name}) is dropped: {dst.suffix or 'this'} files cannot hold it; "
        "write to .mkv (-o NAME.mkv) to keep it")


# tags that describe the source file or its muxing rather than the content; the output's muxer writes its own.
# "timecode" too: QuickTime muxers turn it into a timecode track, which needs a frame rate a copied stream
# does not carry (the join failed), and a --start window would make it wrong; the track itself is named below.
_FILE_TAGS = {"encoder", "major_brand", "minor_version", "compatible_brands", "duration", "bps", "number_of_frames",
              "number_of_bytes", "timecode"}


def _content_tags(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k.lower() not in _FILE_TAGS and not k.upper().startswith("_STATISTICS_")}


def carry_container_metadata(inp, out, pairs, start_s: float, end_s: float) -> None:
    """What ffmpeg keeps by default: the file's tags (title, comment, creation time), each kept stream's tags
    (language, track title) and disposition (default, forced), and the chapters, shifted and cut to a
    --start/--duration window. ``pairs``: (source stream, output stream)."""
    out.metadata.update(_content_tags(inp.metadata))
    for src_stream, dst_stream in pairs:
        dst_stream.metadata.update(_content_tags(src_stream.metadata))
        with contextlib.suppress(AttributeError, TypeError, ValueError):
            dst_stream.disposition = src_stream.disposition
    start, end = Fraction(start_s), (Fraction(end_s) if end_s != float("inf") else None)
    chapters = []
    for ch in inp.chapters():
        tb = ch["time_base"] or Fraction(1, 1_000_000_000)
        lo, hi = max(ch["start"] * tb, start), ch["end"] * tb
        hi = hi if end is None else min(hi, end)
        if hi > lo:
            chapters.append({**ch, "start": int((lo - start) / tb), "end": int((hi - start) / tb)})
    if chapters:
        out.set_chapters(chapters)


def _packets_for(dst: Path, part):
    """A segment file's video packets, as the output's muxer takes them: AVI and ASF take H.264/HEVC only as
    Annex B (start codes), the segments hold them length-prefixed (QuickTime), so FFmpeg's own bitstream
    filter converts them there; other muxers take them as they are or convert by themselves."""
    import av

    stream = part.streams.video[0]
    name = stream.codec_context.name
    if format_for(dst) not in ("avi", "asf") or name not in ("h264", "hevc"):
        yield from part.demux(stream)
        return
    bsf = av.bitstream.BitStreamFilterContext(f"{name}_mp4toannexb", stream)
    for pkt in part.demux(stream):
        yield from bsf.filter(pkt if pkt.size else None)  # the empty last packet flushes the filter
