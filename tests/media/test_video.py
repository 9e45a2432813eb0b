import os
import signal
import subprocess
import sys
import time

import av
import pytest
import numpy as np
from typer.testing import CliRunner

from sr_deploy.cli import app
from sr_deploy.media.video import side_data
from tests.conftest import make_clip, write_clip


def _streams(path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        pts = [f.pts for f in c.decode(v)]
        info = {"types": sorted(s.type for s in c.streams), "rate": v.average_rate, "tb": v.time_base,
                "size": (v.codec_context.width, v.codec_context.height)}
    with av.open(str(path)) as c:
        a = c.streams.audio
        audio = sum(f.samples for f in c.decode(a[0])) if a else 0
    return pts, info, audio


def test_clip_keeps_frames_rate_audio(tmp_path, tiny_ckpt):
    src = tmp_path / "clip.mp4"
    make_clip(src, frames=10, fps=10)
    dst = tmp_path / "up.mp4"
    r = CliRunner().invoke(app, ["run", str(src), "-o", str(dst), "--model", str(tiny_ckpt), "--backend", "onnxruntime"])
    assert r.exit_code == 0, r.output
    p0, i0, a0 = _streams(src)
    p1, i1, a1 = _streams(dst)
    assert len(p1) == len(p0) == 10
    assert i1["rate"] == i0["rate"] and i1["types"] == ["audio", "video"]
    assert i1["size"] == (i0["size"][0] * 2, i0["size"][1] * 2)
    assert a1 == a0 > 0  # the same AAC packets, remuxed (priming included)


def test_vfr_timestamps_and_subtitles(tmp_path, tiny_ckpt):
    src = tmp_path / "vfr.mkv"
    pts = make_clip(src, frames=9, vfr=True, subtitles=True)
    dst = tmp_path / "vfr_up.mkv"
    r = CliRunner().invoke(app, ["run", str(src), "-o", str(dst), "--model", str(tiny_ckpt), "--backend", "onnxruntime", "--batch", "4"])
    assert r.exit_code == 0, r.output
    p1, i1, a1 = _streams(dst)
    _, i0, a0 = _streams(src)
    in_tb = i0["tb"]
    assert len(p1) == len(pts) == 9
    assert a1 == a0 and a0 > 0, "audio duration kept (same samples)"
    got = [float(p * i1["tb"]) for p in p1]
    want = [float(p * in_tb) for p in pts]
    assert np.allclose(got, want, atol=float(i1["tb"]) + 1e-9)
    assert i1["types"] == ["audio", "subtitle", "video"]


def _matrix(path):
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
        return [np.frombuffer(bytes(sd), np.int32).tolist() for sd in side_data(frame) if sd.type.name == "DISPLAYMATRIX"]


def test_rotation_and_flip_of_a_phone_clip_are_kept(tmp_path, tiny_ckpt):
    # Phones store portrait video as landscape frames plus a display matrix; losing it shows the
    # upscaled video on its side. Kept through segments and joins, in each container.
    src = tmp_path / "portrait.mp4"
    make_clip(src, frames=24, fps=12, audio=False, rotation=(270, True))
    want = _matrix(src)
    assert want and want[0] != [65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30]
    for name in ("out.mp4", "out.mkv"):
        dst = tmp_path / name
        r = CliRunner().invoke(app, ["run", str(src), "-o", str(dst), "--model", str(tiny_ckpt), "--backend", "onnxruntime",
                                     "--segment-seconds", "0.5"])
        assert r.exit_code == 0, r.output
        assert _matrix(dst) == want, name
    plain = tmp_path / "plain.mp4"
    make_clip(plain, frames=6, audio=False)
    r = CliRunner().invoke(app, ["run", str(plain), "-o", str(tmp_path / "p.mp4"), "--model", str(tiny_ckpt), "--backend", "onnxruntime"])
    assert r.exit_code == 0 and _matrix(tmp_path / "p.mp4") == _matrix(plain), "no matrix is invented"


def test_anamorphic_source_keeps_its_display_aspect(tmp_path, tiny_ckpt):
    """A 16:9 DVD is 720x480 with 32:27 pixels: the output carries the pixel aspect (adjusted where
    --outscale rounds the size), so that it still shows at 16:9; where the codec and container cannot
    carry it (VP9 in WebM), a warning says so."""
    from fractions import Fraction

    from tests.conftest import pattern_image

    src = tmp_path / "dvd.mp4"
    write_clip(src, [pattern_image(48, 64, seed=i) for i in range(4)],
               configure=lambda s: setattr(s.codec_context, "sample_aspect_ratio", Fraction(32, 27)))
    common = ("--model", str(tiny_ckpt), "--backend", "onnxruntime", "--quiet")
    for name, extra in (("o.mp4", ()), ("o.mkv", ()), ("o.mov", ("--outscale", "1.3"))):
        r = CliRunner().invoke(app, ["run", str(src), "-o", str(tmp_path / name), *common, *extra])
        assert r.exit_code == 0 and "warning" not in r.output, r.output
        with av.open(str(tmp_path / name)) as c:
            v = c.streams.video[0]
            size = (v.codec_context.width, v.codec_context.height)
            assert size == ((128, 96) if not extra else (84, 62)), name
            assert v.display_aspect_ratio == Fraction(32 * 64, 27 * 48), (name, v.sample_aspect_ratio)
    r = CliRunner().invoke(app, ["run", str(src), "-o", str(tmp_path / "o.webm"), *common])
    assert r.exit_code == 0 and "warning: dvd.mp4 has non-square pixels (aspect ratio 32:27" in r.output, r.output
    square = tmp_path / "square.mp4"
    write_clip(square, [pattern_image(48, 64)] * 2)
    r = CliRunner().invoke(app, ["run", str(square), "-o", str(tmp_path / "s.webm"), *common])
    assert r.exit_code == 0 and "warning" not in r.output, r.output
    with av.open(str(tmp_path / "s.webm")) as c:
        assert c.streams.video[0].sample_aspect_ratio in (None, 1)


@pytest.mark.parametrize("name,codec", [("dvd.vob", "mpeg2video"), ("cam.m2ts", "libx264"), ("phone.3gp", "libx264"),
                                        ("raw.y4m", "rawvideo"), ("es.h264", "libx264"), ("web.ivf", "libvpx-vp9")])
def test_formats_read_but_not_written_are_upscaled_into_mkv(tmp_path, tiny_ckpt, name, codec):
    """DVD, Blu-ray/camcorder, old-phone and raw-stream files are videos too: read, upscaled and, by default,
    written as NAME_x2.mkv (Matroska holds what such sources carry)."""
    from tests.conftest import pattern_image

    src = tmp_path / name  # written by the muxer FFmpeg picks for the name (vob, mpegts, 3gp, yuv4mpegpipe...)
    write_clip(src, [pattern_image(32, 48, seed=i) for i in range(6)], codec=codec, rate=25)
    r = CliRunner().invoke(app, ["run", str(src), "--model", str(tiny_ckpt), "--backend", "onnxruntime", "--quiet"])
    assert r.exit_code == 0, r.output
    out = tmp_path / f"{src.stem}_x2.mkv"
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (96, 64)
        assert sum(1 for _ in c.decode(v)) == 6
    r = CliRunner().invoke(app, ["run", str(src), "-o", str(tmp_path / "o.vob"), "--model", str(tiny_ckpt)])
    assert r.exit_code != 0 and "is not a video format" in r.output, r.output  # read, not written


@pytest.mark.parametrize("out_name", ["o.mp4", "o.mkv"])
def test_a_raw_stream_without_timestamps_keeps_its_frame_rate(tmp_path, tiny_ckpt, out_name):
    # a raw .h264 elementary stream carries no timestamps: every frame decodes with pts None
    from tests.conftest import pattern_image

    src = tmp_path / "es.h264"
    write_clip(src, [pattern_image(32, 48, seed=i) for i in range(20)], rate=10, options={"bf": "2"})
    with av.open(str(src)) as c:
        assert {f.pts for f in c.decode(video=0)} == {None}
    r = CliRunner().invoke(app, ["run", str(src), "-o", str(tmp_path / out_name), "--model", str(tiny_ckpt), "--quiet"])
    assert r.exit_code == 0, r.output
    with av.open(str(tmp_path / out_name)) as c:
        times = [f.time for f in c.decode(video=0)]
    assert len(times) == 20
    assert np.allclose(np.diff(times), 0.1, atol=2e-3), times  # 2 s at 10 frames/s, not 20 ticks of the time base


def test_a_raw_stream_cut_mid_gop_or_before_its_headers(tmp_path, tiny_ckpt):
    from tests.conftest import pattern_image

    whole = tmp_path / "whole.h264"
    write_clip(whole, [pattern_image(32, 48, seed=i) for i in range(20)], rate=10, options={"g": "5", "bf": "2"})
    data = whole.read_bytes()
    cut = tmp_path / "cut.h264"  # from a third of the way in: the next keyframe (with its headers) starts it
    cut.write_bytes(data[len(data) // 3:])
    r = CliRunner().invoke(app, ["run", str(cut), "-o", str(tmp_path / "o.mp4"), "--model", str(tiny_ckpt), "--quiet"])
    assert r.exit_code == 0, r.output
    with av.open(str(tmp_path / "o.mp4")) as c:
        times = [f.time for f in c.decode(video=0)]
    assert 5 <= len(times) < 20 and np.allclose(np.diff(times), 0.1, atol=2e-3), times
    once = tmp_path / "once.h264"  # one keyframe, headers only at the start: nothing after a cut can decode
    write_clip(once, [pattern_image(32, 48, seed=i) for i in range(20)], rate=10, options={"bf": "2"})
    headless = tmp_path / "headless.h264"
    headless.write_bytes(once.read_bytes()[len(once.read_bytes()) // 3:])
    r = CliRunner().invoke(app, ["run", str(headless), "-o", str(tmp_path / "h.mp4"), "--model", str(tiny_ckpt), "--quiet"])
    assert r.exit_code != 0 and r.output == (f"error: {headless}: its video stream has no picture size or format to "
                                             f"decode with (a raw stream cut before its first keyframe headers?)\n"), r.output
    assert not (tmp_path / "h.mp4").exists()


def _bars_clip(path, *, colorspace, color_range, sws):
    """Flat colour bars encoded with the given YUV matrix and range, and tagged with them (red, green and
    blue, where BT.601 and BT.709 differ by 15-25 levels)."""
    from av.video.reformatter import Colorspace

    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :16], rgb[:, 16:32], rgb[:, 32:] = (220, 30, 40), (30, 200, 60), (40, 50, 210)

    def tags(vs):
        cc = vs.codec_context
        cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = colorspace, colorspace, colorspace, color_range

    yuv = [av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
        format="yuv420p", dst_colorspace=Colorspace(sws), dst_color_range=color_range) for _ in range(3)]
    write_clip(path, yuv, configure=tags)


def test_colours_keep_the_source_matrix_range_and_tags(tmp_path):
    # Decoded by its own tags (as a player does), the output shows the source's colours; before, it was
    # encoded as BT.601 and left untagged, which players show as BT.709 at HD sizes.
    for name, colorspace, color_range, sws in (("709.mp4", 1, 1, 1), ("601full.mp4", 6, 2, 5)):
        src = tmp_path / name
        _bars_clip(src, colorspace=colorspace, color_range=color_range, sws=sws)
        with av.open(str(src)) as c:
            rgb = next(c.decode(video=0)).to_ndarray(format="rgb24")  # the source as shown
        dst = tmp_path / f"out-{name}"
        r = CliRunner().invoke(app, ["run", str(src), "-o", str(dst), "--model", "light_x4", "--backend", "onnxruntime"])
        assert r.exit_code == 0, r.output
        with av.open(str(dst)) as c:
            f = next(c.decode(video=0))
            assert (f.colorspace, f.color_primaries, f.color_trc, f.color_range) == (colorspace, colorspace, colorspace, color_range)
            out = f.to_ndarray(format="rgb24")
        for x in (8, 24, 40):  # bar centres (x4)
            got = out[64, 4 * x].astype(int)
            assert np.abs(got - rgb[16, x]).max() <= 5, (name, x, got, rgb[16, x])


def test_untagged_colours_are_what_players_assume():
    from types import SimpleNamespace

    from sr_deploy.media.video import source_colors

    untagged = SimpleNamespace(colorspace=2, color_primaries=2, color_trc=2, color_range=0)
    assert source_colors(untagged, 1920, 1080) == (c := source_colors(untagged, 1280, 720)) and c.matrix == 1 and c.sws == 1
    assert (source_colors(untagged, 720, 576).matrix, source_colors(untagged, 720, 576).primaries) == (6, 5)
    sd = source_colors(untagged, 640, 480)
    assert (sd.matrix, sd.primaries, sd.trc, sd.range, sd.sws) == (6, 6, 6, 1, 5)
    tagged = SimpleNamespace(colorspace=9, color_primaries=9, color_trc=16, color_range=2)  # HDR10, full range
    hdr = source_colors(tagged, 640, 480)
    assert (hdr.matrix, hdr.primaries, hdr.trc, hdr.range, hdr.sws) == (9, 9, 16, 2, 9)


def _clip_after_a_cover(path, *, attached: bool):
    """A file whose first video stream is a still picture (cover art) and whose second is the video."""
    with av.open(str(path), "w") as c:
        cover = c.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
        if attached:
            cover.disposition = av.stream.Disposition.attached_pic
        vs = c.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = 48, 32, "yuv420p"
        for stream, frames, (h, w) in ((cover, 1, (64, 64)), (vs, 20, (32, 48))):
            for i in range(frames):
                f = av.VideoFrame.from_ndarray(np.full((h, w, 3), 10 * i + 20, np.uint8), format="rgb24")
                f.pts = i
                for p in stream.encode(f):
                    c.mux(p)
            for p in stream.encode(None):
                c.mux(p)


def test_cover_picture_first_is_not_taken_for_the_video(tmp_path, tiny_ckpt):
    for name, attached in (("cover.mp4", True), ("thumb.mkv", False)):
        src = tmp_path / name
        _clip_after_a_cover(src, attached=attached)
        with av.open(str(src)) as c:
            cover = next(st.index for st in c.streams.video if st.codec_context.name == "mjpeg")
        assert attached or cover == 0  # MP4 stores its cover track last; Matroska keeps the order written
        dst = tmp_path / f"out-{name}"
        r = CliRunner().invoke(app, ["run", str(src), "-o", str(dst), "--model", str(tiny_ckpt), "--backend", "onnxruntime"])
        assert r.exit_code == 0, r.output
        with av.open(str(dst)) as c:
            assert [(s.width, s.height) for s in (st.codec_context for st in c.streams.video)] == [(96, 64)]
            assert sum(1 for _ in c.decode(video=0)) == 20, name
        kind = "cover picture" if attached else "video stream"
        assert f"{kind} #{cover} (mjpeg) is not kept" in r.output, r.output


def test_no_video_stream_and_corrupt(tmp_path, tiny_ckpt):
    audio_only = tmp_path / "a.mp4"
    with av.open(str(audio_only), "w") as c:
        s = c.add_stream("aac", rate=44100)
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        f.sample_rate, f.pts = 44100, 0
        for p in list(s.encode(f)) + list(s.encode(None)):
            c.mux(p)
    r = CliRunner().invoke(app, ["run", str(audio_only), "--model", str(tiny_ckpt)])
    assert r.exit_code != 0 and "no video stream" in r.output
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(2000))
    r = CliRunner().invoke(app, ["run", str(junk), "--model", str(tiny_ckpt)])
    assert r.exit_code != 0 and "junk.mp4" in r.output
    assert not (tmp_path / "junk_x2.mp4").exists() and not (tmp_path / "a_x2.mp4").exists()


def test_interrupt_leaves_no_output(tmp_path, tiny_ckpt):
    """Ctrl-C once the first one-second segment is finished: the unfinished one and every temporary output
    are removed, the finished one is kept for the same command to resume, and the run says so. The signal
    follows an event (the first segment moved into place), never a sleep."""
    src = tmp_path / "long.mp4"
    make_clip(src, frames=300, size=(96, 64), fps=25)
    dst = tmp_path / "long_up.mp4"
    # --tile 16: two dozen small tiles a frame keep each segment going for a while, so the run is still in its
    # second of twelve segments when the signal comes, on a fast machine too
    proc = subprocess.Popen([sys.executable, "-m", "sr_deploy.cli", "run", str(src), "-o", str(dst), "--model",
                             str(tiny_ckpt), "--backend", "torch", "--quiet", "--tile", "16", "--segment-seconds", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a shell that starts jobs in the background ignores SIGINT, and the child would
                            # inherit that; Ctrl-C's default is what is under test
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    parts = tmp_path / "long_up.mp4.segments"
    first = parts / "seg_00000.mov"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not first.exists():
        time.sleep(0.05)
    assert proc.poll() is None and first.exists(), "the run ended (or never finished a segment) before the signal"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err, (proc.returncode, err)
    assert not dst.exists()
    assert not list(tmp_path.glob(".long_up.*")), "temporary output removed"
    assert not list(parts.glob("*.tmp*")), "the unfinished segment removed"
    assert first.exists() and "the same command resumes" in err, err  # the finished segment kept, and said


def test_window_start_duration(tmp_path, tiny_ckpt):
    src = tmp_path / "w.mp4"
    make_clip(src, frames=20, fps=10)
    dst = tmp_path / "w_up.mp4"
    r = CliRunner().invoke(app, ["run", str(src), "-o", str(dst), "--model", str(tiny_ckpt), "--backend", "onnxruntime",
                                 "--start", "0.5", "--duration", "1.0"])
    assert r.exit_code == 0, r.output
    pts, info, _ = _streams(dst)
    assert len(pts) == 10
    assert float(pts[0] * info["tb"]) < 0.05, "output starts at zero"


def test_truncated_video_stops_with_frame_number(tmp_path, tiny_ckpt):
    src = tmp_path / "t.mkv"
    make_clip(src, frames=60, fps=10, size=(64, 48))
    data = src.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    dst = tmp_path / "cut_up.mkv"
    r = CliRunner().invoke(app, ["run", str(cut), "-o", str(dst), "--model", str(tiny_ckpt), "--backend", "onnxruntime"])
    assert r.exit_code != 0
    assert "frame" in r.output and "cut.mkv" in r.output
    assert not dst.exists() and not list(tmp_path.glob(".cut_up*"))


def test_unwritable_output(tmp_path, tiny_ckpt):
    src = tmp_path / "c.mp4"
    make_clip(src, frames=3)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = CliRunner().invoke(app, ["run", str(src), "-o", str(blocker / "out.mp4"), "--model", str(tiny_ckpt)])
    assert r.exit_code != 0 and "cannot write" in r.output
    assert len(r.output.strip().splitlines()) <= 2


def test_disk_full_during_encode(tmp_path, tiny_ckpt):
    """A file-size limit makes writes fail part way, as a full disk does: one line, nothing left behind."""
    import resource

    src = tmp_path / "big.mp4"
    make_clip(src, frames=40, size=(96, 64), fps=25)
    dst = tmp_path / "big_up.mp4"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    proc = subprocess.run([sys.executable, "-m", "sr_deploy.cli", "run", str(src), "-o", str(dst), "--model",
                           str(tiny_ckpt), "--backend", "torch", "--quiet", "--crf", "0"],
                          capture_output=True, text=True, preexec_fn=limit, timeout=120)
    assert proc.returncode != 0
    assert "error:" in proc.stderr and "big_up.mp4" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not dst.exists() and not list(tmp_path.glob(".big_up*"))


def test_codec_auto_prefers_nvenc_on_gpu_and_falls_back(monkeypatch):
    from sr_deploy.media import video

    assert video.encoder_opens("libx264") and not video.encoder_opens("no_such_encoder")
    assert video.resolve_codec("auto", on_gpu=False) == "libx264"
    notes = []
    monkeypatch.setattr(video, "encoder_opens", lambda name, *a: False)
    assert video.resolve_codec("auto", on_gpu=True, say=notes.append) == "libx264"
    assert len(notes) == 1 and "NVENC did not open" in notes[0]
    monkeypatch.setattr(video, "encoder_opens", lambda name, *a: name == "h264_nvenc")
    assert video.resolve_codec("auto", on_gpu=True) == "h264_nvenc"
    assert video.resolve_codec("libx265", on_gpu=True) == "libx265"  # an explicit choice is obeyed


def test_every_output_container_is_written(tmp_path, tiny_ckpt):
    # The segments are QuickTime files joined by stream copy; each output muxer must take their packets
    # (AVI needs H.264 as Annex B start codes, which the join converts).
    src = tmp_path / "in.mp4"
    make_clip(src, frames=12, fps=12, audio=True)
    for ext in (".avi", ".ts", ".flv", ".wmv", ".mkv", ".mov", ".m4v"):
        dst = tmp_path / f"out{ext}"
        r = CliRunner().invoke(app, ["run", str(src), "-o", str(dst), "--model", str(tiny_ckpt), "--backend", "onnxruntime",
                                     "--segment-seconds", "0.4"])
        assert r.exit_code == 0, (ext, r.output)
        with av.open(str(dst)) as c:
            assert [s.type for s in c.streams] == ["video", "audio"], ext  # AAC goes into every one of these
            # the source's 12 frames/s, a frame every 1/12 s in display order; AVI counts frames, and in a
            # finer time base it padded 1 s of 12 fps with hundreds of empty ones (read back at 600
            # frames/s), its timestamps out of order (at most one frame more: the AAC priming's negative
            # timestamps shift the whole file by a tick)
            times = [f.time for f in c.decode(video=0)]
            # (ASF's last frame comes back at its predecessor's time: known, left for now)
            steps = np.diff(times)[:-1] if ext == ".wmv" else np.diff(times)
            assert len(times) == 12 and np.allclose(steps, 1 / 12, atol=2e-3), (ext, times)
            if ext in (".avi", ".flv"):  # the two that write a frame rate into their header
                assert c.streams.video[0].average_rate == 12, (ext, c.streams.video[0].average_rate)
            assert c.streams.video[0].frames <= 13 and c.duration / 1e6 < 1.2, (ext, c.streams.video[0].frames)
    # MPEG-PS takes H.264 packets but readers find no video in it: refused before any work; and a stream
    # the muxer refuses (AAC in MPEG-PS) would be dropped with a warning, not fail the join
    r = CliRunner().invoke(app, ["run", str(src), "-o", str(tmp_path / "out.mpg"), "--model", str(tiny_ckpt)])
    assert r.exit_code != 0 and "MPEG-1/2 video" in r.output and not list(tmp_path.glob("*out.mpg*"))
    from sr_deploy.media.container import container_takes

    with av.open(str(src)) as c:
        assert container_takes(tmp_path / "a.mkv", c.streams.audio[0])
        assert not container_takes(tmp_path / "a.mpg", c.streams.audio[0])


def test_interlaced_source_is_deinterlaced_first(tmp_path):
    # Two fields of a moving picture in one frame (even rows, then odd rows half a frame later) make the
    # comb pattern of interlaced video. With bwdif first, the output has far less of it; timestamps and
    # the frame count are the source's.
    import cv2

    from tests.conftest import pattern_image

    src = tmp_path / "tv.mp4"
    base = pattern_image(48, 96, seed=3)
    frames = []
    for i in range(8):
        f = base[:, 4 * i:4 * i + 64].copy()
        f[1::2] = base[1::2, 4 * i + 2:4 * i + 66]  # the second field, two pixels further on
        frames.append(f)
    write_clip(src, frames, rate=25, options={"x264-params": "interlaced=1:tff=1", "bf": "0", "crf": "0"})

    def comb(path):
        with av.open(str(path)) as c:
            frames = [f for f in c.decode(video=0)]
        grey = [cv2.resize(f.to_ndarray(format="gray").astype(np.float32), (64, 48), interpolation=cv2.INTER_AREA)
                if f.width != 64 else f.to_ndarray(format="gray").astype(np.float32) for f in frames]
        return [f.pts for f in frames], float(np.mean([np.abs(2 * g[1:-1:2] - g[0:-2:2] - g[2::2]).mean() for g in grey]))

    src_pts, src_comb = comb(src)
    got = {}
    for flag in ("--deinterlace", "--no-deinterlace"):
        dst = tmp_path / f"out{flag}.mp4"
        r = CliRunner().invoke(app, ["run", str(src), "-o", str(dst), "--model", "light_x4", "--backend", "onnxruntime",
                                     "--segment-seconds", "0.12", flag])
        assert r.exit_code == 0, r.output
        assert ("deinterlaced (bwdif)" in r.output) == (flag == "--deinterlace")
        got[flag] = comb(dst)
        assert got[flag][0] == src_pts
    assert got["--no-deinterlace"][1] > 0.5 * src_comb  # the model keeps the combing
    assert got["--deinterlace"][1] < 0.5 * got["--no-deinterlace"][1], got


def test_a_folder_run_upscales_its_videos_too(tmp_path, tiny_ckpt):
    """Videos in a folder are upscaled after its images, into the same relative paths (a format srdeploy does
    not write as NAME.EXT.mkv); a broken one fails alone; the journal resumes them like images; a video
    setting no encoder takes is refused before any work."""
    import cv2

    from tests.conftest import pattern_image

    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    cv2.imwrite(str(src / "a.png"), pattern_image(12, 16))
    make_clip(src / "sub" / "clip.mp4", frames=6, audio=False)
    write_clip(src / "dvd.vob", [pattern_image(32, 48, seed=i) for i in range(4)], codec="mpeg2video", rate=25)
    (src / "broken.mp4").write_bytes(b"not a video")
    dst = tmp_path / "out"
    common = ["--model", str(tiny_ckpt), "--backend", "onnxruntime", "--quiet"]
    r = CliRunner().invoke(app, ["run", str(src), "-o", str(dst), *common])
    assert r.exit_code == 1 and "3 upscaled, 0 skipped (existing), 1 failed" in r.output, r.output
    assert "broken.mp4: not a readable video" in r.output
    for rel, size, frames in (("sub/clip.mp4", (96, 64), 6), ("dvd.vob.mkv", (96, 64), 4)):
        with av.open(str(dst / rel)) as c:
            v = c.streams.video[0]
            assert (v.codec_context.width, v.codec_context.height) == size, rel
            assert sum(1 for _ in c.decode(v)) == frames, rel
    assert cv2.imread(str(dst / "a.png")).shape == (24, 32, 3)
    assert not (dst / "broken.mp4").exists()
    r = CliRunner().invoke(app, ["run", str(src), "-o", str(dst), *common])
    assert "0 upscaled, 0 skipped (existing), 1 failed, 3 resumed" in r.output, r.output
    r = CliRunner().invoke(app, ["run", str(src), "-o", str(tmp_path / "o2"), *common, "--preset", "bogus"])
    assert r.exit_code != 0 and r.output.startswith("error: --preset 'bogus'"), r.output
    assert not (tmp_path / "o2").exists()


def test_two_videos_of_a_folder_that_would_share_an_output_are_never_merged(tmp_path, tiny_ckpt):
    # dvd.vob is written as dvd.vob.mkv, the name of the other video: the one whose own name it is keeps it
    from tests.conftest import pattern_image

    src = tmp_path / "in"
    src.mkdir()
    write_clip(src / "dvd.vob", [pattern_image(32, 48, seed=i) for i in range(4)], codec="mpeg2video", rate=25)
    write_clip(src / "dvd.vob.mkv", [pattern_image(32, 48, seed=i) for i in range(3)], rate=25)
    for extra in ([], ["--overwrite"]):
        dst = tmp_path / f"out{len(extra)}"
        r = CliRunner().invoke(app, ["run", str(src), "-o", str(dst), "--model", str(tiny_ckpt), "--quiet", *extra])
        assert r.exit_code == 1 and "1 upscaled, 0 skipped (existing), 1 failed" in r.output, r.output
        assert f"{src / 'dvd.vob'}: its output {dst / 'dvd.vob.mkv'} is also {src / 'dvd.vob.mkv'}'s" in r.output
        with av.open(str(dst / "dvd.vob.mkv")) as c:
            assert sum(1 for _ in c.decode(video=0)) == 3  # the .mkv's own frames, not the .vob's


def test_full_resolution_colour_written_as_420_is_said(tmp_path, tiny_ckpt):
    from tests.conftest import pattern_image

    frames = [pattern_image(32, 48, seed=i) for i in range(3)]
    full, sub = tmp_path / "444.mp4", tmp_path / "420.mp4"
    write_clip(full, frames, pix_fmt="yuv444p")
    write_clip(sub, frames)
    common = ["--model", str(tiny_ckpt), "--backend", "onnxruntime"]
    r = CliRunner().invoke(app, ["run", str(full), "-o", str(tmp_path / "a.mp4"), *common])
    assert r.exit_code == 0 and "note: 444.mp4 has full-resolution colour (yuv444p); the output is yuv420p" in r.output
    r = CliRunner().invoke(app, ["run", str(sub), "-o", str(tmp_path / "b.mp4"), *common])
    assert r.exit_code == 0 and "full-resolution colour" not in r.output, r.output
    r = CliRunner().invoke(app, ["run", str(full), "-o", str(tmp_path / "c.mp4"), *common, "--pix-fmt", "yuv444p"])
    assert r.exit_code == 0 and "full-resolution colour" not in r.output, r.output
    with av.open(str(tmp_path / "c.mp4")) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv444p"


def _spy_yuv(monkeypatch) -> list:
    """Record each batch that TorchRunner.stream_yuv receives (the YUV path taken, frame by frame)."""
    from sr_deploy.runtime.torch_runner import TorchRunner

    seen, real = [], TorchRunner.stream_yuv

    def spy(self, batches, inp, out):
        def counted():
            for b in batches:
                seen.append((b.shape, b.dtype, inp.pix_fmt, out.pix_fmt))
                yield b

        return real(self, counted(), inp, out)

    monkeypatch.setattr(TorchRunner, "stream_yuv", spy)
    return seen


def test_yuv_path_keeps_the_source_colours_and_matches_the_rgb_path(tmp_path, monkeypatch):
    """--yuv: frames cross as the decoder's YUV and the colour conversions run in the model's graph, with
    the source's matrix and range; the picture is the RGB path's within the 4:2:0 rounding."""
    seen = _spy_yuv(monkeypatch)
    for name, colorspace, color_range, sws in (("709.mp4", 1, 1, 1), ("601full.mp4", 6, 2, 5)):
        src = tmp_path / name
        _bars_clip(src, colorspace=colorspace, color_range=color_range, sws=sws)
        with av.open(str(src)) as c:
            rgb = next(c.decode(video=0)).to_ndarray(format="rgb24")
        outs = {}
        for flag in ("--yuv", "--no-yuv"):
            dst = tmp_path / f"out{flag}-{name}"
            seen.clear()
            r = CliRunner().invoke(app, ["run", str(src), "-o", str(dst), "--model", "light_x4", "--backend", "torch",
                                         flag, "--crf", "0"])
            assert r.exit_code == 0, r.output
            assert len(seen) == (3 if flag == "--yuv" else 0), seen
            if flag == "--yuv":
                assert seen[0][:2] == ((1, 48, 48), np.uint8) and seen[0][2:] == ("yuv420p", "yuv420p")
            with av.open(str(dst)) as c:
                f = next(c.decode(video=0))
                assert (f.colorspace, f.color_range) == (colorspace, color_range)
                assert f.format.name == ("yuvj420p" if color_range == 2 else "yuv420p")
                outs[flag] = f.to_ndarray(format="rgb24", src_colorspace=sws, src_color_range=color_range).astype(int)
        for x in (8, 24, 40):  # bar centres (x4)
            assert np.abs(outs["--yuv"][64, 4 * x] - rgb[16, x]).max() <= 5, (name, x)
        # away from the bars' edges (where the chroma filters differ: swscale's nearest, the graph's bilinear)
        flat = np.r_[0:52, 76:116, 140:192]
        d = np.abs(outs["--yuv"][:, flat] - outs["--no-yuv"][:, flat])
        assert d.max() <= 8 and d.mean() < 1.5, (name, d.max(), d.mean())


def test_a_10bit_source_stays_10bit_through_the_yuv_graph(tmp_path, monkeypatch):
    from tests.media.test_robust import _clip_10bit

    seen = _spy_yuv(monkeypatch)
    src = tmp_path / "ten.mkv"
    _clip_10bit(src)
    r = CliRunner().invoke(app, ["run", str(src), "-o", str(tmp_path / "o.mkv"), "--model", "light_x4",
                                 "--backend", "torch", "--yuv"])
    assert r.exit_code == 0, r.output
    assert "16-bit RGB" not in r.output  # not the host's float path
    assert seen and seen[0][1:] == (np.uint16, "yuv420p10le", "yuv420p10le")
    with av.open(str(tmp_path / "o.mkv")) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
        y = next(c.decode(video=0)).to_ndarray()[:128]
    assert y.max() > 255 and np.any(y % 4 != 0), "10-bit codes, not 8-bit ones shifted"


def test_yuv_asked_of_a_runner_without_the_graph_says_so(tmp_path, tiny_ckpt):
    src = tmp_path / "c.mp4"
    make_clip(src, frames=2, audio=False)
    r = CliRunner().invoke(app, ["run", str(src), "-o", str(tmp_path / "o.mp4"), "--model", str(tiny_ckpt),
                                 "--backend", "onnxruntime", "--ensemble", "--yuv"])
    assert r.exit_code == 0, r.output
    assert "--yuv is not used" in r.output and "no YUV graph" in r.output


class _Tint(__import__("torch").nn.Module):
    """A x2 'model' that paints every output pixel one colour: the colour the output decodes to, with its
    own tags, then shows whether the graph encoded it with the source's matrix and range."""

    def forward(self, x):
        import torch

        colour = torch.tensor([0.9, 0.1, 0.25], device=x.device).view(1, 3, 1, 1)
        return torch.nn.functional.interpolate(x, scale_factor=2) * 0 + colour


@pytest.mark.parametrize("name,colorspace,color_range,sws", [("709.mp4", 1, 1, 1), ("601full.mp4", 6, 2, 5)])
def test_the_yuv_graph_encodes_with_the_source_matrix_and_range(tmp_path, name, colorspace, color_range, sws):
    from sr_deploy.descriptor import ModelDescriptor
    from sr_deploy.media.video import VideoOptions, upscale_video
    from sr_deploy.runtime.torch_runner import TorchRunner

    src = tmp_path / name
    _bars_clip(src, colorspace=colorspace, color_range=color_range, sws=sws)
    runner = TorchRunner(_Tint(), ModelDescriptor("tint", 2), device="cpu")
    for yuv in (True, False):
        dst = tmp_path / f"{yuv}-{name}"
        upscale_video(runner, src, dst, options=VideoOptions(yuv=yuv, crf=0), quiet=True)
        with av.open(str(dst)) as c:
            rgb = next(c.decode(video=0)).to_ndarray(format="rgb24", src_colorspace=sws, src_color_range=color_range)
        assert np.abs(rgb[8:-8, 8:-8].astype(int) - np.array([230, 26, 64])).max() <= 2, (yuv, rgb[16, 16])


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_the_onnx_runners_run_the_yuv_graph_as_torch_does(tmp_path, backend):
    """The YUV graph's ONNX form (the torch modules exported around the model's ONNX) on ONNX Runtime and
    OpenVINO: the torch form's output within one code, 8 and 10 bits, and a video through it."""
    import torch

    from sr_deploy.export.yuv import RgbToYuv, YuvSpec
    from sr_deploy.runtime.select import make_runner, resolve_model

    source = resolve_model("light_x4")
    try:
        runner, _ = make_runner(source, backend, "fp32")
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"{backend}: {exc}")
    ref, _ = make_runner(source, "torch", "fp32")
    rgb = torch.from_numpy(np.random.default_rng(0).random((2, 3, 24, 32), dtype=np.float32))
    with runner, ref:
        assert runner.yuv_capable
        for a, b in (("yuv420p", "nv12"), ("yuv420p10le", "p010le")):
            inp, out = YuvSpec(a, 9, False), YuvSpec(b, 9, False)
            x = RgbToYuv(inp)(rgb).numpy()
            got = next(runner.stream_yuv(iter([x]), inp, out))
            want = next(ref.stream_yuv(iter([x]), inp, out))
            step = 64 if b == "p010le" else 1
            assert got.dtype == want.dtype and got.shape == want.shape == (2, 144, 128)
            assert np.abs(got.astype(int) - want.astype(int)).max() <= step
    src = tmp_path / "c.mp4"
    make_clip(src, frames=3, audio=False)
    r = CliRunner().invoke(app, ["run", str(src), "-o", str(tmp_path / "o.mp4"), "--model", "light_x4",
                                 "--backend", backend, "--yuv"])
    assert r.exit_code == 0 and "not used" not in r.output, r.output


def test_an_encoder_that_fails_while_being_set_up_is_one_line_and_leaves_nothing(tmp_path, tiny_ckpt, monkeypatch):
    from sr_deploy.media import video

    def refuse(*a, **k):
        raise av.error.FFmpegError(22, "Invalid argument")

    src = tmp_path / "c.mp4"
    make_clip(src, frames=2, audio=False)
    monkeypatch.setattr(video, "encoder_options", refuse)
    r = CliRunner().invoke(app, ["run", str(src), "-o", str(tmp_path / "o.mp4"), "--model", str(tiny_ckpt),
                                 "--backend", "onnxruntime"])
    assert r.exit_code != 0 and "encoding failed" in r.output and "Traceback" not in r.output, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mp4"]


def test_the_yuv_form_is_made_once_per_runner_not_per_call(monkeypatch):
    """Parallel segments call stream_yuv once per batch: the YUV form (the cache lookup hashes the ONNX, the
    torch form moves its buffers to the device) is made once per runner and specs."""
    from sr_deploy.export import yuv
    from sr_deploy.export.yuv import RgbToYuv, YuvSpec
    from sr_deploy.runtime.select import make_runner, resolve_model

    made = {"onnx": 0, "torch": 0}
    real_onnx, real_model = yuv.yuv_onnx, yuv.YuvModel

    def counting_onnx(*a, **k):
        made["onnx"] += 1
        return real_onnx(*a, **k)

    class CountingModel(real_model):
        def __init__(self, *a, **k):
            made["torch"] += 1
            super().__init__(*a, **k)

    monkeypatch.setattr(yuv, "yuv_onnx", counting_onnx)
    monkeypatch.setattr(yuv, "YuvModel", CountingModel)
    spec = YuvSpec("yuv420p", 1, False)
    x = RgbToYuv(spec)(__import__("torch").rand(1, 3, 8, 12)).numpy()
    source = resolve_model("light_x4")
    for backend in ("onnxruntime", "torch"):
        runner, _ = make_runner(source, backend, "fp32")
        with runner:
            outs = [next(runner.stream_yuv(iter([x]), spec, spec)) for _ in range(3)]
        assert all(np.array_equal(o, outs[0]) for o in outs)
    assert made == {"onnx": 1, "torch": 1}


def test_side_data_reads_pyav_s_container_whether_it_iterates_entries_or_keys():
    """PyAV 18.1.0 iterated a frame's side data as its entries, 18.1.1 as their types (a Mapping's keys):
    both give the entries."""
    class Entry:
        def __init__(self, name):
            self.type = type("T", (), {"name": name})()

    class Frame:
        def __init__(self, container):
            self.side_data = container

    a, b = Entry("DISPLAYMATRIX"), Entry("CONTENT_LIGHT_LEVEL")

    class Keyed(dict):  # iterates its keys, as a Mapping does
        pass

    for container in ([a, b], Keyed({"k1": a, "k2": b})):
        assert side_data(Frame(container)) == [a, b]
    assert side_data(Frame(None)) == [] and side_data(object()) == []
