"""Joining a run's segment files (`segments.assemble`) on its own: segment files written here directly, a few
frames each, so that every rule of the join runs in a fraction of a second (the whole runs that make real
segments are in test_segments.py and test_video.py)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from sr_deploy.errors import OutputError, SRDeployError
from sr_deploy.media.segments import assemble
from sr_deploy.media.video import VideoOptions
from tests.conftest import make_clip

FPS = 12


def _segment(path: Path, pts: list[int], *, size=(96, 64), profile: str | None = None, bframes: int = 0) -> Path:
    """A segment file as encode_segment writes it: QuickTime, H.264 without B-frames, the source's time base."""
    out = av.open(str(path), "w", format="mov")
    vs = out.add_stream("libx264", rate=FPS)
    vs.width, vs.height, vs.pix_fmt = *size, "yuv420p"
    vs.time_base = vs.codec_context.time_base = Fraction(1, FPS)
    vs.options = {"bf": str(bframes), **({"profile": profile} if profile else {})}
    for p in pts:
        f = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), _level(p), np.uint8), format="rgb24")
        f.pts, f.time_base = p, Fraction(1, FPS)
        for pkt in vs.encode(f):
            out.mux(pkt)
    for pkt in vs.encode(None):
        out.mux(pkt)
    out.close()
    return path


def _level(pts: int) -> int:
    """The grey level of the frame at ``pts``: each frame of a segment is told apart by it."""
    return 16 + 18 * pts


def _parts(tmp_path: Path, cuts: list[range], **kw) -> list[Path]:
    return [_segment(tmp_path / f"seg_{k}.mov", list(r), **kw) for k, r in enumerate(cuts)]


def _streams(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        got = {"video": [], "audio": [], "size": (v.codec_context.width, v.codec_context.height), "tb": v.time_base}
        for pkt in c.demux():
            if pkt.dts is not None:
                got[pkt.stream.type].append(pkt.pts)
    return got


def _source_audio(src: Path) -> list[int]:
    with av.open(str(src)) as c:
        return [p.pts for p in c.demux(audio=0) if p.dts is not None]


def test_the_segments_are_joined_in_order_with_the_source_s_audio_once(tmp_path):
    src = tmp_path / "in.mp4"
    make_clip(src, frames=12, fps=FPS, audio=True)
    said = []
    dst = tmp_path / "out.mkv"
    n = assemble(src, _parts(tmp_path, [range(0, 5), range(5, 9), range(9, 12)]), dst, dst, VideoOptions(), said.append)
    assert n == 1 and said == []
    got = _streams(dst)
    assert got["size"] == (96, 64)
    first = got["video"][0]  # Matroska moves everything later by the audio's priming (AAC: 1024 samples)
    assert [float((p - first) * got["tb"]) for p in got["video"]] == pytest.approx([i / FPS for i in range(12)], abs=2e-3)
    assert len(got["audio"]) == len(_source_audio(src))
    with av.open(str(dst)) as c:
        levels = [round(float(f.to_ndarray(format="rgb24").mean())) for f in c.decode(video=0)]
    assert levels == pytest.approx([_level(k) for k in range(12)], abs=2)  # every frame once, in its place


def test_without_copying_streams_only_the_video_is_written(tmp_path):
    src = tmp_path / "in.mp4"
    make_clip(src, frames=6, fps=FPS, audio=True)
    dst = tmp_path / "out.mp4"
    assert assemble(src, _parts(tmp_path, [range(0, 6)]), dst, dst, VideoOptions(copy_streams=False), print) == 0
    got = _streams(dst)
    assert len(got["video"]) == 6 and got["audio"] == []


def test_a_window_keeps_the_audio_inside_it_shifted_to_its_start(tmp_path):
    src = tmp_path / "in.mp4"
    make_clip(src, frames=24, fps=FPS, audio=True)
    dst = tmp_path / "out.mkv"
    opts = VideoOptions(start=0.5, duration=1.0)  # frames 6-17, their pts already shifted by encode_segment
    assert assemble(src, _parts(tmp_path, [range(0, 6), range(6, 12)]), dst, dst, opts, print) == 1
    with av.open(str(src)) as c:
        tb = c.streams.audio[0].time_base
        inside = [p.pts for p in c.demux(audio=0) if p.dts is not None and 0.5 <= float(p.pts * tb) < 1.5]
    with av.open(str(dst)) as c:
        a = c.streams.audio[0]
        kept = [float(p.pts * a.time_base) for p in c.demux(a) if p.dts is not None]
    assert len(kept) == len(inside)
    assert kept == pytest.approx([float(p * tb) - 0.5 for p in inside], abs=2e-3)
    assert min(kept) >= -1e-3 and max(kept) < 1.0


def test_a_segment_encoded_with_other_settings_is_refused(tmp_path):
    src = tmp_path / "in.mp4"
    make_clip(src, frames=8, fps=FPS, audio=False)
    parts = [_segment(tmp_path / "a.mov", [0, 1, 2, 3]), _segment(tmp_path / "b.mov", [4, 5, 6, 7], profile="baseline")]
    dst = tmp_path / "out.mkv"
    with pytest.raises(SRDeployError, match=r"b.mov: encoded with other settings than the first segment; "
                                            r"rerun with --restart$"):
        assemble(src, parts, dst, dst, VideoOptions(), print)


def test_avi_gets_one_tick_per_frame(tmp_path):
    src = tmp_path / "in.mp4"
    make_clip(src, frames=8, fps=FPS, audio=False)
    dst = tmp_path / "out.avi"
    assemble(src, _parts(tmp_path, [range(0, 4), range(4, 8)]), dst, dst, VideoOptions(), print)
    with av.open(str(dst)) as c:
        v = c.streams.video[0]
        assert v.time_base == Fraction(1, FPS) and v.average_rate == FPS
        frames = [f for f in c.decode(v)]
    assert len(frames) == 8
    with av.open(str(dst)) as c:
        packets = [(p.dts, p.duration) for p in c.demux(video=0) if p.dts is not None]
    assert packets == [(k, 1) for k in range(8)]
    assert [round(float(f.to_ndarray(format="rgb24").mean())) for f in frames] == pytest.approx(
        [_level(k) for k in range(8)], abs=2)  # each frame in its place


def test_an_output_that_cannot_be_written_is_one_line(tmp_path):
    src = tmp_path / "in.mp4"
    make_clip(src, frames=4, fps=FPS, audio=False)
    dst = tmp_path / "missing" / "out.mkv"
    with pytest.raises(OutputError, match=rf"^{dst}: write failed \(No such file or directory\)$"):
        assemble(src, _parts(tmp_path, [range(0, 4)]), dst, dst, VideoOptions(), print)


def test_a_data_stream_is_named_as_not_kept(tmp_path):
    src = tmp_path / "in.mov"
    make_clip(src, frames=4, fps=FPS, audio=False, timecode="01:00:00:00")  # QuickTime writes a timecode track
    said = []
    dst = tmp_path / "out.mkv"
    assemble(src, _parts(tmp_path, [range(0, 4)]), dst, dst, VideoOptions(), said.append)
    assert said == ["warning: data stream #1 (TimeCodeHandler) is not kept"]


def test_segments_with_b_frames_join_with_decoding_order_kept(tmp_path):
    """Each segment's encoder starts with its own reordering delay (negative dts before its first frame): the
    joined stream's dts only grows, and every frame plays in its place."""
    src = tmp_path / "in.mp4"
    make_clip(src, frames=12, fps=FPS, audio=False)
    dst = tmp_path / "out.mkv"
    assemble(src, _parts(tmp_path, [range(0, 6), range(6, 12)], bframes=2), dst, dst, VideoOptions(), print)
    with av.open(str(dst)) as c:
        dts = [p.dts for p in c.demux(video=0) if p.dts is not None]
    with av.open(str(dst)) as c:
        levels = [round(float(f.to_ndarray(format="rgb24").mean())) for f in c.decode(video=0)]
    assert all(b > a for a, b in zip(dts, dts[1:])), dts  # (Matroska stores no dts: the first are inferred)
    assert levels == pytest.approx([_level(k) for k in range(12)], abs=2)


def test_a_window_with_a_start_only_drops_the_audio_before_it(tmp_path):
    src = tmp_path / "in.mp4"
    make_clip(src, frames=24, fps=FPS, audio=True)
    dst = tmp_path / "out.mkv"
    assemble(src, _parts(tmp_path, [range(0, 12)]), dst, dst, VideoOptions(start=1.0), print)
    with av.open(str(src)) as c:
        tb = c.streams.audio[0].time_base
        after = [p for p in c.demux(audio=0) if p.dts is not None and float(p.pts * tb) >= 1.0]
    with av.open(str(dst)) as c:
        assert len([p for p in c.demux(audio=0) if p.dts is not None]) == len(after)


def test_the_temporary_file_is_written_in_the_output_s_format(tmp_path):
    src = tmp_path / "in.mp4"
    make_clip(src, frames=4, fps=FPS, audio=False)
    dst, tmp = tmp_path / "out.mkv", tmp_path / "out.mkv.part"  # the muxer comes from the output's name
    assemble(src, _parts(tmp_path, [range(0, 4)]), tmp, dst, VideoOptions(), print)
    with av.open(str(tmp)) as c:
        assert "matroska" in c.format.name and len([f for f in c.decode(video=0)]) == 4


def test_a_codec_the_output_cannot_hold_is_one_line(tmp_path):
    src = tmp_path / "in.mp4"
    make_clip(src, frames=4, fps=FPS, audio=False)
    dst = tmp_path / "out.webm"
    with pytest.raises(OutputError, match=rf"^{dst}: 'webm' format does not support 'libx264' codec$"):
        assemble(src, _parts(tmp_path, [range(0, 4)]), dst, dst, VideoOptions(), print)


def test_attachments_are_carried_into_matroska(tmp_path):
    src = tmp_path / "in.mkv"
    make_clip(src, frames=4, fps=FPS, audio=False, attachment=("font.ttf", "font/ttf", b"\x00\x01font"))
    dst = tmp_path / "out.mkv"
    assemble(src, _parts(tmp_path, [range(0, 4)]), dst, dst, VideoOptions(), print)
    with av.open(str(dst)) as c:
        att = [st for st in c.streams if st.type == "attachment"]
        assert len(att) == 1 and att[0].name == "font.ttf" and bytes(att[0].data) == b"\x00\x01font"
    dst2 = tmp_path / "bare.mkv"
    assemble(src, _parts(tmp_path, [range(0, 4)]), dst2, dst2, VideoOptions(copy_streams=False), print)
    with av.open(str(dst2)) as c:
        assert not [st for st in c.streams if st.type == "attachment"]


def _meta(path: Path) -> tuple[dict, list, list]:
    with av.open(str(path)) as c:
        streams = [({k: v for k, v in s.metadata.items() if k in ("language", "title")}, s.type) for s in c.streams]
        chapters = [(ch["metadata"].get("title"), float(ch["start"] * ch["time_base"]), float(ch["end"] * ch["time_base"]))
                    for ch in c.chapters()]
        return dict(c.metadata), streams, chapters


@pytest.mark.parametrize("window, chapters", [
    ({}, [("first", 0.0, 1.0), ("second", 1.0, 2.0)]),
    ({"start": 0.75, "duration": 0.5}, [("first", 0.0, 0.25), ("second", 0.25, 0.5)]),  # cut and shifted
    ({"start": 0.25, "duration": 0.5}, [("first", 0.0, 0.5)]),  # a chapter outside the window is dropped
    ({"start": 1.5}, [("second", 0.0, 0.5)]),  # a start alone: from it to the end
])
def test_tags_and_chapters_are_kept_and_cut_to_the_window(tmp_path, window, chapters):
    src = tmp_path / "in.mkv"
    make_clip(src, frames=24, fps=FPS, audio=True, tags=True)  # chapters "first" 0-1 s and "second" 1-2 s
    dst = tmp_path / "out.mkv"
    assemble(src, _parts(tmp_path, [range(0, 6)]), dst, dst, VideoOptions(**window), print)
    tags, streams, got = _meta(dst)
    assert tags["title"] == "A clip" and tags["COMMENT"] == "made by a test"
    assert streams == [({"language": "eng", "title": "picture"}, "video"), ({"language": "fra", "title": "commentaire"}, "audio")]
    assert [(t, pytest.approx(a, abs=1e-6), pytest.approx(b, abs=1e-6)) for t, a, b in got] == chapters
