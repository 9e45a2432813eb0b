"""How a video run is cut into segments (media/segments.py ``plan_segments``), on small clips made here:
where each segment starts and ends, a time window and a frame limit, sources without timestamps, and the
refusals. Fast enough for mutation testing (benchmarks/results/mutation.md)."""

from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace

import av
import pytest

from sr_deploy.errors import InputError
from sr_deploy.media.segments import Segment, plan_segments, segment_format, window_of
from tests.conftest import make_clip


def _opts(start=None, duration=None, max_frames=None):
    return SimpleNamespace(start=start, duration=duration, max_frames=max_frames)


def _pts(path):
    with av.open(str(path)) as c:
        return sorted(p.pts for p in c.demux(c.streams.video[0]) if p.pts is not None)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "c.mp4"
    make_clip(path, frames=30, fps=10)  # 3 s, with an audio stream whose packets are no frames
    return path


def test_segments_of_a_second_cut_at_every_tenth_frame(clip):
    pts = _pts(clip)
    plan = plan_segments(clip, _opts(), seconds=1.0)
    assert plan.segments == [Segment(0, 0, 10, None, pts[10]), Segment(1, 10, 10, pts[10], pts[20]),
                             Segment(2, 20, 10, pts[20], None)]
    assert (plan.total_frames, plan.size, plan.timestamps, plan.notes) == (30, (48, 32), True, [])
    assert plan.boundaries() == [[None, pts[10], 10], [pts[10], pts[20], 10], [pts[20], None, 10]]
    with av.open(str(clip)) as c:
        assert plan.time_base == c.streams.video[0].time_base


def test_a_segment_longer_than_the_clip_is_the_whole_clip(clip):
    assert plan_segments(clip, _opts(), seconds=10.0).segments == [Segment(0, 0, 30, None, None)]
    # a cut falls on the first frame at or past the length: 1.05 s of 10 fps frames is 11 frames
    assert [s.frames for s in plan_segments(clip, _opts(), seconds=1.05).segments] == [11, 11, 8]


def test_a_frame_limit_ends_the_last_segment_at_the_next_frame(clip):
    pts = _pts(clip)
    plan = plan_segments(clip, _opts(max_frames=15), seconds=1.0)
    assert plan.segments == [Segment(0, 0, 10, None, pts[10]), Segment(1, 10, 5, pts[10], pts[15])]
    assert plan.total_frames == 15
    # a limit of every frame or more: the last segment runs to the end
    assert plan_segments(clip, _opts(max_frames=30), seconds=10.0).segments == [Segment(0, 0, 30, None, None)]
    assert plan_segments(clip, _opts(max_frames=99), seconds=10.0).total_frames == 30


def test_a_time_window_keeps_its_frames_only(clip):
    pts = _pts(clip)
    plan = plan_segments(clip, _opts(start=1.0, duration=1.0), seconds=10.0)
    assert plan.segments == [Segment(0, 0, 10, None, None)] and plan.total_frames == 10
    plan = plan_segments(clip, _opts(start=1.0, duration=1.5), seconds=1.0)
    assert plan.segments == [Segment(0, 0, 10, None, pts[20]), Segment(1, 10, 5, pts[20], None)]
    # a start exactly on a frame's time keeps that frame; the end is excluded
    assert plan_segments(clip, _opts(start=2.9), seconds=10.0).total_frames == 1
    assert plan_segments(clip, _opts(start=0.0, duration=1.0), seconds=10.0).total_frames == 10
    assert plan_segments(clip, _opts(start=1.0, max_frames=3), seconds=10.0).segments == [
        Segment(0, 0, 3, None, pts[13])]


@pytest.mark.parametrize("opts", [_opts(start=3.0), _opts(start=5.0, duration=1.0)])
def test_a_window_without_frames_is_refused(clip, opts):
    with pytest.raises(InputError, match="c.mp4: no video frames in the requested window"):
        plan_segments(clip, opts, seconds=1.0)


@pytest.mark.parametrize("seconds", [0.0, -1.0, float("nan")])
def test_a_segment_length_that_is_not_positive_is_refused(clip, seconds):
    with pytest.raises(InputError, match=f"--segment-seconds must be positive, got {seconds}"):
        plan_segments(clip, _opts(), seconds=seconds)


def test_a_raw_stream_without_timestamps_is_one_segment_decoded_from_the_start(tmp_path):
    raw = tmp_path / "raw.h264"
    make_clip(raw, frames=12, audio=False)
    plan = plan_segments(raw, _opts(), seconds=1.0)
    assert plan.segments == [Segment(0, 0, 12, None, None)]
    assert (plan.total_frames, plan.timestamps) == (12, False)
    assert plan.notes == ["note: raw.h264 has video packets without timestamps: it runs as one segment"]
    limited = plan_segments(raw, _opts(max_frames=5), seconds=1.0)
    assert limited.segments == [Segment(0, 0, 5, None, None)] and limited.total_frames == 5


def test_the_window_and_the_segment_format():
    assert window_of(_opts()) == (0.0, float("inf"), None)
    assert window_of(_opts(start=2, duration=3, max_frames=7)) == (2.0, 5.0, 7)
    assert window_of(_opts(duration=3)) == (0.0, 3.0, None)
    assert segment_format("libx264") == "mov" and segment_format("libsvtav1") == "mp4"
    assert segment_format("libvpx-vp9") == "mp4" and segment_format("prores_ks") == "mov"


def test_a_variable_frame_rate_clip_is_cut_by_time_not_by_frame_count(tmp_path):
    clip = tmp_path / "v.mkv"
    make_clip(clip, frames=20, fps=10, audio=False, vfr=True)
    pts = _pts(clip)
    plan = plan_segments(clip, _opts(), seconds=1.0)
    assert plan.time_base == Fraction(1, 1000)
    cut = next(i for i, p in enumerate(pts) if p - pts[0] >= 1000)  # the first frame 1 s or more in
    assert cut != 10  # the clip's frame spacing varies: not every tenth frame
    assert plan.segments == [Segment(0, 0, cut, None, pts[cut]), Segment(1, cut, 20 - cut, pts[cut], None)]


@pytest.fixture(scope="module")
def cut_short(tmp_path_factory):
    """A 3-second Matroska clip cut to 60% of its bytes: its header still says 3 s."""
    folder = tmp_path_factory.mktemp("cut")
    whole = folder / "whole.mkv"
    make_clip(whole, frames=30, fps=10, audio=False)
    cut = folder / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    return cut


def test_a_stream_that_ends_early_is_refused_before_any_work(cut_short):
    n = len(_pts(cut_short))
    with pytest.raises(InputError) as exc:
        plan_segments(cut_short, _opts(), seconds=1.0)
    assert str(exc.value) == (f"{cut_short}: video stream ends at frame {n} ({(n - 1) / 10:.2f}s of 3.00s): the file "
                              "is truncated or damaged")


@pytest.mark.parametrize("opts, frames", [(_opts(start=0.1), "all but the first"), (_opts(duration=0.5), 5),
                                          (_opts(max_frames=4), 4)])
def test_a_window_of_a_stream_that_ends_early_runs_what_it_asks_for(cut_short, opts, frames):
    """A window (or frame limit) is read as it is asked: a stream ending past it is not refused."""
    expected = len(_pts(cut_short)) - 1 if frames == "all but the first" else frames
    assert plan_segments(cut_short, opts, seconds=10.0).total_frames == expected


def test_repeated_timestamps_are_refused_with_the_first_repeat(tmp_path):
    from tests.media.test_robust import _ts_part

    twice = tmp_path / "twice.ts"  # frames 5-9 of the first part come again as the second's 0-4
    twice.write_bytes(_ts_part(tmp_path / "a.ts", (48, 32), 0) + _ts_part(tmp_path / "b.ts", (48, 32), 5))
    with av.open(str(twice)) as c:
        vin = c.streams.video[0]
        pts = sorted(p.pts for p in c.demux(vin) if p.pts is not None)
        first = float(min(p for p in pts if pts.count(p) > 1) * vin.time_base)
    assert first > 0
    with pytest.raises(InputError) as exc:
        plan_segments(twice, _opts(), seconds=1.0)
    assert str(exc.value) == (f"{twice}: 5 video frames repeat another frame's timestamp (the first at {first:.2f}s): "
                              "the file was joined from several recordings or is damaged; remux it with new "
                              "timestamps first")


def test_a_repeat_of_the_first_frame_alone_is_refused(tmp_path):
    from tests.media.test_robust import _ts_part

    twice = tmp_path / "first.ts"  # the first frame comes again, on its own
    twice.write_bytes(_ts_part(tmp_path / "a.ts", (48, 32), 0) + _ts_part(tmp_path / "b.ts", (48, 32), 0, frames=1))
    with pytest.raises(InputError, match=r"first.ts: 1 video frame repeats another frame's timestamp \(the first at "):
        plan_segments(twice, _opts(), seconds=1.0)


def test_a_clip_of_one_frame_has_no_repeat(tmp_path):
    one = tmp_path / "one.mp4"
    make_clip(one, frames=1, audio=False)
    assert plan_segments(one, _opts(), seconds=1.0).segments == [Segment(0, 0, 1, None, None)]


@pytest.mark.parametrize("frames, fps, declared, refused", [
    (30, 10, 3.5, False),  # last frame ends at 3.0 s: half a second short is within the tolerance
    (30, 10, 3.51, True),
    (24, 2, 12.6, False),  # a 12 s stream: 5% of the declared length, 0.63 s, is the tolerance
    (24, 2, 12.7, True),
])
def test_a_stream_shorter_than_its_declared_length_is_refused_past_the_tolerance(tmp_path, monkeypatch, frames, fps,
                                                                                  declared, refused):
    from sr_deploy.media import container

    clip = tmp_path / "c.mkv"
    make_clip(clip, frames=frames, fps=fps, audio=False)
    monkeypatch.setattr(container, "stream_seconds", lambda stream: declared)  # what the header would say
    if refused:
        with pytest.raises(InputError, match="the file is truncated or damaged"):
            plan_segments(clip, _opts(), seconds=100.0)
    else:
        assert plan_segments(clip, _opts(), seconds=100.0).total_frames == frames


def test_a_raw_stream_keeps_its_size_and_time_base(tmp_path):
    raw = tmp_path / "raw.h264"
    make_clip(raw, frames=6, size=(64, 48), audio=False)
    with av.open(str(raw)) as c:
        tb = c.streams.video[0].time_base or Fraction(1, 90000)
    plan = plan_segments(raw, _opts(), seconds=1.0)
    assert (plan.size, plan.time_base) == ((64, 48), tb)
