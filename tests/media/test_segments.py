"""Segmented, resumable video runs (media/segments.py) and runs on Ray workers (media/distributed.py)."""

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from sr_deploy.cli import app
from sr_deploy.errors import InputError
from sr_deploy.media.segments import plan_segments
from sr_deploy.media.video import VideoOptions, upscale_video
from tests.conftest import make_clip, pattern_image, write_clip

SAMPLE = Path(__file__).resolve().parents[2] / "sr_deploy" / "assets" / "sample.mp4"


def _decoded(path):
    """Every decoded frame (RGB), its time in seconds, audio samples and the stream types of a video file."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames, times = [], []
        for f in c.decode(v):
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(float(f.pts * f.time_base))
        types = sorted(s.type for s in c.streams)
    with av.open(str(path)) as c:
        audio = sum(f.samples for f in c.decode(c.streams.audio[0])) if c.streams.audio else 0
    return frames, times, audio, types


def _run(*args):
    return CliRunner().invoke(app, ["run", *map(str, args)])


def _same_frames(a, b):
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert np.array_equal(x, y), f"frame {i} differs"


def _long_gop_clip(path: Path, frames: int = 60, fps: int = 25) -> None:
    """H.264 with one keyframe for the whole clip, B-frames and open GOPs: no segment starts on a keyframe."""
    write_clip(path, [pattern_image(32, 48, seed=i) for i in range(frames)], rate=fps,
               options={"g": "1000", "bf": "3", "x264-params": "open-gop=1:scenecut=0"})
    with av.open(str(path)) as c:
        keys = sum(p.is_keyframe for p in c.demux(c.streams.video[0]) if p.size)
    assert keys == 1


def test_segmented_equals_one_piece_vfr_audio_subtitles(tmp_path, tiny_ckpt):
    src = tmp_path / "vfr.mkv"
    pts = make_clip(src, frames=30, vfr=True, subtitles=True)
    plan = plan_segments(src, VideoOptions(), 0.4)
    assert len(plan.segments) >= 4 and sum(s.frames for s in plan.segments) == 30
    common = ["--model", tiny_ckpt, "--backend", "onnxruntime", "--crf", "0", "--preset", "ultrafast"]
    r = _run(src, "-o", tmp_path / "seg.mkv", "--segment-seconds", "0.4", *common)
    assert r.exit_code == 0, r.output
    r = _run(src, "-o", tmp_path / "one.mkv", "--segment-seconds", "1000", *common)
    assert r.exit_code == 0, r.output
    seg, one, ref = _decoded(tmp_path / "seg.mkv"), _decoded(tmp_path / "one.mkv"), _decoded(src)
    _same_frames(seg[0], one[0])
    assert len(seg[0]) == 30
    want = [p / 1000 for p in pts]  # the clip's time base is 1/1000
    assert np.allclose(seg[1], want, atol=1e-3 + 1e-9) and seg[1] == one[1]
    assert seg[2] == one[2] == ref[2] > 0, "audio samples kept"
    assert seg[3] == ["audio", "subtitle", "video"]
    assert not (tmp_path / "seg.mkv.segments").exists(), "the segments are removed once the output is whole"


def test_segmented_equals_one_piece_sample_clip(tmp_path, tiny_ckpt):
    common = ["--model", tiny_ckpt, "--backend", "onnxruntime", "--crf", "0", "--preset", "ultrafast",
              "--frames", "40"]
    r = _run(SAMPLE, "-o", tmp_path / "seg.mp4", "--segment-seconds", "0.5", *common)
    assert r.exit_code == 0, r.output
    r = _run(SAMPLE, "-o", tmp_path / "one.mp4", "--segment-seconds", "1000", *common)
    assert r.exit_code == 0, r.output
    seg, one = _decoded(tmp_path / "seg.mp4"), _decoded(tmp_path / "one.mp4")
    _same_frames(seg[0], one[0])
    assert len(seg[0]) == 40 and seg[1] == one[1]
    with av.open(str(SAMPLE)) as c:
        src_times = [float(f.pts * f.time_base) for _, f in zip(range(40), c.decode(video=0))]
    assert np.allclose(seg[1], src_times, atol=1e-3)


def test_one_keyframe_and_open_gop(tmp_path, tiny_ckpt):
    src = tmp_path / "gop.mp4"
    _long_gop_clip(src)
    assert len(plan_segments(src, VideoOptions(), 0.3).segments) >= 6
    common = ["--model", tiny_ckpt, "--backend", "onnxruntime", "--crf", "0", "--preset", "ultrafast"]
    assert _run(src, "-o", tmp_path / "seg.mp4", "--segment-seconds", "0.3", *common).exit_code == 0
    assert _run(src, "-o", tmp_path / "one.mp4", "--segment-seconds", "1000", *common).exit_code == 0
    seg, one = _decoded(tmp_path / "seg.mp4"), _decoded(tmp_path / "one.mp4")
    _same_frames(seg[0], one[0])
    assert len(seg[0]) == 60 and seg[1] == one[1]


def test_window_and_frame_limit_across_segments(tmp_path, tiny_ckpt):
    src = tmp_path / "w.mp4"
    make_clip(src, frames=30, fps=10)
    common = ["--model", tiny_ckpt, "--backend", "onnxruntime", "--segment-seconds", "0.4"]
    assert _run(src, "-o", tmp_path / "a.mp4", "--start", "0.5", "--duration", "1.5", *common).exit_code == 0
    frames, times, audio, _ = _decoded(tmp_path / "a.mp4")
    assert len(frames) == 15 and times[0] < 0.05 and audio > 0
    assert _run(src, "-o", tmp_path / "b.mp4", "--frames", "13", *common).exit_code == 0
    assert len(_decoded(tmp_path / "b.mp4")[0]) == 13


class _StopAfter:
    """A runner that is interrupted (as by Ctrl-C) after ``frames`` frames."""

    def __init__(self, runner, frames):
        self.runner, self.left = runner, frames

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def stream_u8(self, batches):
        for out in self.runner.stream_u8(batches):
            self.left -= len(out)
            if self.left < 0:
                raise KeyboardInterrupt
            yield out


def _interrupted_run(src, dst, runner, frames, opts):
    with pytest.raises(KeyboardInterrupt):
        upscale_video(_StopAfter(runner, frames), src, dst, options=opts, quiet=True, identity="m1")
    assert not dst.exists()


def test_resume_reuses_finished_segments_and_refuses_other_runs(tmp_path, tiny_ckpt):
    from sr_deploy.runtime.select import make_runner, resolve_model

    src = tmp_path / "c.mp4"
    make_clip(src, frames=30, fps=10)
    dst = tmp_path / "c_up.mp4"
    opts = VideoOptions(segment_seconds=0.5, crf=0, preset="ultrafast")
    runner, _ = make_runner(resolve_model(tiny_ckpt), "onnxruntime")
    with runner:
        full = upscale_video(runner, src, tmp_path / "full.mp4", options=opts, quiet=True, identity="m1")
        assert full.segments == 6 and full.reused_segments == 0
        _interrupted_run(src, dst, runner, 12, opts)
        parts = tmp_path / "c_up.mp4.segments"
        manifest = json.loads((parts / "manifest.json").read_text())
        assert sorted(manifest["segments"]) == ["0", "1"]
        # another model: refused with one line, nothing lost
        with pytest.raises(Exception, match="another model.*--restart"):
            upscale_video(runner, src, dst, options=opts, quiet=True, identity="m2")
        # another input (same name, other bytes): refused too
        moved = tmp_path / "orig.mp4"
        os.replace(src, moved)
        make_clip(src, frames=30, fps=10, audio=False)
        with pytest.raises(Exception, match="another input"):
            upscale_video(runner, src, dst, options=opts, quiet=True, identity="m1")
        os.replace(moved, src)
        assert sorted(json.loads((parts / "manifest.json").read_text())["segments"]) == ["0", "1"]
        # a damaged segment file is found on resume and done again
        seg1 = parts / "seg_00001.mov"
        seg1.write_bytes(seg1.read_bytes()[: seg1.stat().st_size // 2])
        # entries that are no segment number (a manifest edited by hand) are ignored, not a traceback
        m = json.loads((parts / "manifest.json").read_text())
        m["segments"].update({"first": m["segments"]["0"], "-1": m["segments"]["0"]})
        (parts / "manifest.json").write_text(json.dumps(m))
        res = upscale_video(runner, src, dst, options=opts, quiet=True, identity="m1")
        assert res.reused_segments == 1 and res.frames == 30
        _same_frames(_decoded(dst)[0], _decoded(tmp_path / "full.mp4")[0])
        assert not parts.exists()
        # an unreadable manifest is refused; --restart discards it
        dst2 = tmp_path / "d_up.mp4"
        _interrupted_run(src, dst2, runner, 7, opts)
        (tmp_path / "d_up.mp4.segments" / "manifest.json").write_text("{not json")
        with pytest.raises(Exception, match="unreadable manifest"):
            upscale_video(runner, src, dst2, options=opts, quiet=True, identity="m1")
        res = upscale_video(runner, src, dst2, options=opts, quiet=True, identity="m1", restart=True)
        assert res.reused_segments == 0 and res.frames == 30


def test_sigkill_then_rerun_finishes_and_matches(tmp_path, tiny_ckpt):
    src = tmp_path / "k.mp4"
    make_clip(src, frames=120, size=(96, 64), fps=25)
    cmd = [sys.executable, "-m", "sr_deploy.cli", "run", str(src), "--model", str(tiny_ckpt), "--backend", "torch",
           "--tile", "16", "--segment-seconds", "0.4"]
    dst = tmp_path / "k_up.mp4"
    manifest = tmp_path / "k_up.mp4.segments" / "manifest.json"
    proc = subprocess.Popen(cmd + ["-o", str(dst), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline, done = time.time() + 120, 0
    while time.time() < deadline and proc.poll() is None:
        try:
            done = len(json.loads(manifest.read_text())["segments"])
        except (OSError, ValueError):
            done = 0
        if done >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None and done >= 2, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert not dst.exists() and manifest.exists()
    again = subprocess.run(cmd + ["-o", str(dst)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    reused = int(again.stdout.split(" of ")[0].rsplit(", ", 1)[-1])
    assert reused >= 2 and "segments reused" in again.stdout
    whole = subprocess.run(cmd + ["-o", str(tmp_path / "whole.mp4"), "--quiet"], capture_output=True, text=True,
                           timeout=300)
    assert whole.returncode == 0, whole.stderr
    a, b = _decoded(dst), _decoded(tmp_path / "whole.mp4")
    _same_frames(a[0], b[0])
    assert a[1] == b[1] and a[2] == b[2] and len(a[0]) == 120


def test_another_run_on_the_same_output_is_refused(tmp_path, tiny_ckpt):
    import fcntl

    src = tmp_path / "l.mp4"
    make_clip(src, frames=6)
    parts = tmp_path / "l_up.mp4.segments"
    parts.mkdir()
    with open(parts / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        r = _run(src, "-o", tmp_path / "l_up.mp4", "--model", tiny_ckpt)
    assert r.exit_code != 0 and "another srdeploy run" in r.output


def test_bad_segment_seconds(tmp_path, tiny_ckpt):
    src = tmp_path / "s.mp4"
    make_clip(src, frames=4)
    for bad in ("0", "-1", "nan"):
        r = _run(src, "--model", tiny_ckpt, "--segment-seconds", bad)
        assert r.exit_code != 0 and "--segment-seconds" in r.output, bad
    with pytest.raises(InputError, match="segment-seconds"):  # the library's own check, for callers of the API
        plan_segments(src, VideoOptions(), 0.0)


def _has_ray():
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


needs_ray = pytest.mark.skipif(not _has_ray(), reason="Ray is not installed (pip install 'srdeploy[ray]')")


def _driver_loads_no_model(monkeypatch):
    """Any model loaded in this process (the Ray driver) fails the run: the workers load it."""
    from sr_deploy.runtime import select

    def refuse(*a, **k):
        raise AssertionError("the Ray driver loaded the model")

    monkeypatch.setattr(select, "make_runner", refuse)


@needs_ray
def test_ray_two_local_workers_match_single_process(tmp_path, tiny_ckpt):
    src = tmp_path / "r.mkv"
    make_clip(src, frames=24, vfr=True, subtitles=True)
    common = ["--model", tiny_ckpt, "--backend", "onnxruntime", "--segment-seconds", "0.3"]
    with pytest.MonkeyPatch.context() as mp:
        _driver_loads_no_model(mp)
        r = _run(src, "-o", tmp_path / "ray.mkv", "--ray", "local", "--workers", "2", *common)
    assert r.exit_code == 0, r.output
    assert "ray: 2 workers" in r.output
    assert _run(src, "-o", tmp_path / "one.mkv", *common).exit_code == 0
    a, b = _decoded(tmp_path / "ray.mkv"), _decoded(tmp_path / "one.mkv")
    _same_frames(a[0], b[0])
    assert a[1] == b[1] and a[2] == b[2] and a[3] == b[3] == ["audio", "subtitle", "video"]
    # a folder, sharded by files over the same kind of pool; a bad file fails alone
    import cv2

    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i in range(5):
        cv2.imwrite(str(folder / ("sub" if i % 2 else "") / f"i{i}.png"), pattern_image(20 + i, 24))
    (folder / "bad.png").write_bytes(b"not a png")
    with pytest.MonkeyPatch.context() as mp:
        _driver_loads_no_model(mp)
        r = _run(folder, "-o", tmp_path / "out", "--ray", "local", "--workers", "2", "--model", tiny_ckpt,
                 "--backend", "onnxruntime", "--outscale", "1.5")
    assert r.exit_code == 1 and "bad.png" in r.output
    for i in range(5):
        out = cv2.imread(str(tmp_path / "out" / ("sub" if i % 2 else "") / f"i{i}.png"))
        assert out.shape == (int(1.5 * (20 + i) + 0.5), 36, 3)  # --outscale reaches the workers
    assert not (tmp_path / "out" / "bad.png").exists()


@needs_ray
def test_ray_workers_that_could_never_be_placed_are_refused_not_waited_for(tmp_path, tiny_ckpt, monkeypatch):
    from sr_deploy.errors import InputError
    from sr_deploy.media import distributed

    src = tmp_path / "w.mp4"
    make_clip(src, frames=4)
    n = (os.cpu_count() or 1) + 1
    r = _run(src, "--model", tiny_ckpt, "--ray", "local", "--workers", str(n))
    assert r.exit_code != 0 and f"error: --workers {n}: this Ray cluster has {n - 1} CPU" in r.output, r.output
    assert not list(tmp_path.glob("w_x2*"))
    # actors that a busy cluster cannot place: a one-line error after the placement timeout, not a hang
    monkeypatch.setattr(distributed, "PLACEMENT_TIMEOUT_S", 5)
    pool = distributed.RayPool("local", str(tiny_ckpt), "onnxruntime", None, workers=1, quiet=True)
    try:
        pool.resources = {"num_cpus": n}  # more than the cluster has, as when other work holds its CPUs
        with pytest.raises(InputError, match="not all started within 5 s"):
            pool.actors()
    finally:
        pool.close()


@needs_ray
def test_ray_address_that_does_not_answer(tmp_path, tiny_ckpt):
    src = tmp_path / "n.mp4"
    make_clip(src, frames=4)
    r = _run(src, "--model", tiny_ckpt, "--ray", "127.0.0.1:9")
    assert r.exit_code != 0 and "no Ray cluster answers" in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not list(tmp_path.glob("n_x2*"))


def test_ray_missing_says_how_to_install(tmp_path, tiny_ckpt, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    src = tmp_path / "m.mp4"
    make_clip(src, frames=4)
    r = _run(src, "--model", tiny_ckpt, "--ray", "local")
    assert r.exit_code != 0 and "pip install 'srdeploy[ray]'" in r.output


def test_time_base_survives_join(tmp_path, tiny_ckpt):
    """A 1/90000 time base (MPEG-TS) is kept tick for tick across segment joins."""
    src = tmp_path / "tb.ts"
    with av.open(str(src), "w") as c:
        vs = c.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        tb = Fraction(1, 90000)
        vs.time_base = vs.codec_context.time_base = tb
        for i in range(20):
            f = av.VideoFrame.from_ndarray(pattern_image(32, 32, seed=i), format="rgb24")
            f.pts, f.time_base = i * 3003, tb
            for p in vs.encode(f):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
    r = _run(src, "-o", tmp_path / "tb_up.mkv", "--model", tiny_ckpt, "--segment-seconds", "0.2")
    assert r.exit_code == 0, r.output
    _, times, _, _ = _decoded(tmp_path / "tb_up.mkv")
    assert np.allclose(np.subtract(times, times[0]), [i * 3003 / 90000 for i in range(20)], atol=1e-3)
    # Matroska rounds to milliseconds; MPEG-TS keeps 90 kHz, where every step must stay 3003 ticks
    # (a 1/30 s time base anywhere on the way would make them 3000)
    r = _run(src, "-o", tmp_path / "tb_up.ts", "--model", tiny_ckpt, "--segment-seconds", "0.2")
    assert r.exit_code == 0, r.output
    with av.open(str(tmp_path / "tb_up.ts")) as c:
        pts = sorted(f.pts for f in c.decode(video=0))
    assert len(pts) == 20 and set(np.diff(pts)) == {3003}


@needs_ray
def test_ray_worker_that_dies_has_its_segment_redone(tmp_path, tiny_ckpt):
    import ray

    from sr_deploy.media.distributed import RayPool
    from sr_deploy.runtime.select import make_runner, resolve_model

    src = tmp_path / "d.mp4"
    make_clip(src, frames=20, fps=10)
    opts = VideoOptions(segment_seconds=0.5)
    runner, _ = make_runner(resolve_model(tiny_ckpt), "onnxruntime")
    pool = RayPool("local", str(tiny_ckpt), "onnxruntime", None, workers=2, quiet=True)
    try:
        ray.kill(pool.actors()[0])  # a worker process that is gone when its first segment is sent
        with runner:
            res = upscale_video(runner, src, tmp_path / "ray.mp4", options=opts, quiet=True, identity="m", pool=pool)
            one = upscale_video(runner, src, tmp_path / "one.mp4", options=opts, quiet=True, identity="m")
    finally:
        pool.close()
    assert pool.failures >= 1 and res.frames == one.frames == 20
    _same_frames(_decoded(tmp_path / "ray.mp4")[0], _decoded(tmp_path / "one.mp4")[0])


def test_folder_run_resumes_from_its_journal(tmp_path, tiny_ckpt, monkeypatch):
    import cv2

    from sr_deploy.media import images
    from sr_deploy.runtime.select import make_runner, resolve_model

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        cv2.imwrite(str(folder / f"{i}.png"), pattern_image(16, 16 + i, seed=i))
    out = tmp_path / "out"
    runner, _ = make_runner(resolve_model(tiny_ckpt), "onnxruntime")
    real, calls = images.upscale_image_array, []

    def dies_on_the_fourth(*a, **kw):
        calls.append(a[1])
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(images, "upscale_image_array", dies_on_the_fourth)
    with runner, pytest.raises(KeyboardInterrupt):
        images.upscale_folder(runner, folder, out, quiet=True, identity="m1")
    # the three finished before the interrupt are written whole and journaled; nothing else is left
    assert sorted(p.name for p in out.iterdir()) == [".srdeploy-run.jsonl", "0.png", "1.png", "2.png"]
    monkeypatch.setattr(images, "upscale_image_array", real)
    with runner:
        with pytest.raises(Exception, match="another model.*--restart"):
            images.upscale_folder(runner, folder, out, quiet=True, identity="m2")
        # an input changed since it was finished is done again
        cv2.imwrite(str(folder / "1.png"), pattern_image(16, 17, seed=9))
        os.utime(folder / "1.png", ns=(1, 1))
        s = images.upscale_folder(runner, folder, out, quiet=True, identity="m1")
    assert len(s.resumed) == 2 and len(s.done) == 4 and not s.failed
    assert cv2.imread(str(out / "1.png")).shape[:2] == (32, 34)
    # the same command on a finished folder: every file done, nothing redone, nothing refused
    with runner:
        s = images.upscale_folder(runner, folder, out, quiet=True, identity="m1")
    assert len(s.resumed) == 6 and not s.done and not s.failed and not s.skipped
    # an output edited by the user since is left alone and named (and still, after a touch to its time stamp
    # only, recognised as the run's own by its hash); --overwrite replaces it
    edited = pattern_image(32, 32, seed=5)
    cv2.imwrite(str(out / "0.png"), edited)
    os.utime(out / "2.png", ns=(5, 5))
    with runner:
        s = images.upscale_folder(runner, folder, out, quiet=True, identity="m1")
        assert s.skipped == [out / "0.png"] and len(s.resumed) == 5 and not s.done and not s.failed
        assert np.array_equal(cv2.imread(str(out / "0.png")), edited)
        s = images.upscale_folder(runner, folder, out, quiet=True, identity="m1", overwrite=True)
        assert s.done == [out / "0.png"] and len(s.resumed) == 5
        assert cv2.imread(str(out / "0.png")).shape[:2] == (32, 32) and not np.array_equal(cv2.imread(str(out / "0.png")), edited)
        # --overwrite also takes over a folder that another model's run journaled
        s = images.upscale_folder(runner, folder, out, quiet=True, identity="m2", overwrite=True)
        assert len(s.done) == 6 and not s.resumed


def test_ray_without_an_address_means_local():
    from sr_deploy.cli import _ray_default

    assert _ray_default(["run", "a.mp4", "--ray"]) == ["run", "a.mp4", "--ray", "local"]
    assert _ray_default(["run", "--ray", "--quiet", "a.mp4"]) == ["run", "--ray", "local", "--quiet", "a.mp4"]
    assert _ray_default(["run", "a.mp4", "--ray", "10.0.0.1:6379"]) == ["run", "a.mp4", "--ray", "10.0.0.1:6379"]


def test_container_and_codec_checked_before_any_work(tmp_path, tiny_ckpt):
    src = tmp_path / "w.mp4"
    make_clip(src, frames=8)
    r = _run(src, "-o", tmp_path / "x.webm", "--codec", "libx264", "--model", tiny_ckpt)
    assert r.exit_code != 0 and ".webm files cannot hold libx264" in r.output and "Traceback" not in r.output
    r = _run(src, "-o", tmp_path / "y.mp4", "--codec", "no_such_codec", "--model", tiny_ckpt)
    assert r.exit_code != 0 and "not available" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.mp4"], "nothing written, no segments folder"
    # auto picks a codec a .webm holds (VP9); the AAC track cannot go in and is named in a warning
    r = _run(src, "-o", tmp_path / "z.webm", "--model", tiny_ckpt, "--segment-seconds", "0.3")
    assert r.exit_code == 0, r.output
    assert "audio stream #1 (aac) is dropped" in r.output
    with av.open(str(tmp_path / "z.webm")) as c:
        assert c.streams.video[0].codec_context.name == "vp9"
        assert sum(1 for _ in c.decode(video=0)) == 8


def test_segments_are_about_a_minute_of_compute_and_a_resume_keeps_the_first_runs_cuts(tmp_path, monkeypatch):
    """Segment length follows the model's measured speed (a fake clock: each call takes 2.5 s of it), so an
    interrupt loses about a minute of work whatever the model; a rerun of the same output cuts as before."""
    import json
    import time

    from sr_deploy.descriptor import ModelDescriptor
    from sr_deploy.media import video
    from sr_deploy.runtime.base import Runner

    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])

    class Timed(Runner):
        backend = "test"

        def __init__(self, seconds):
            super().__init__(ModelDescriptor(name="t", scale=2))
            self.seconds = seconds

        def _activate(self):
            pass

        def _infer(self, batch):  # ``seconds`` per frame of the clip's 256x160, in proportion to the pixels
            clock[0] += self.seconds * batch.shape[2] * batch.shape[3] / (256 * 160)
            calls.append(batch.shape[2:])
            return batch.repeat(2, axis=2).repeat(2, axis=3)

    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(src, frames=12, fps=12, audio=False, size=(256, 160))
    calls = []
    slow = video.auto_segment_seconds(Timed(2.5), src, dst, video.VideoOptions())
    assert slow == pytest.approx(60.0 / 2.5 / 12)  # 24 frames of 2.5 s: 2 s of 12 fps video
    assert calls == [(80, 128)] * 2  # timed on a quarter of the frame, not on two whole ones
    assert video.auto_segment_seconds(Timed(0.0005), src, dst, video.VideoOptions()) == video.SEGMENT_RANGE_S[1]
    assert video.auto_segment_seconds(Timed(100.0), src, dst, video.VideoOptions()) == video.SEGMENT_RANGE_S[0]
    # an unfinished run's manifest: its length is kept, whatever this machine measures now
    parts = dst.parent / f"{dst.name}.segments"
    parts.mkdir()
    (parts / "manifest.json").write_text(json.dumps({"key": {"segment_seconds": 0.75}, "segments": {}}))
    assert video.auto_segment_seconds(Timed(2.5), src, dst, video.VideoOptions()) == 0.75


def test_every_setting_that_changes_pixels_changes_the_manifest_key(tmp_path):
    """A finished segment is reused only for the same pixels: tile and outscale (and the encoder settings)
    are part of the key, so a rerun with another --tile or --outscale never mixes old segments in."""
    import dataclasses

    from sr_deploy.media.segments import manifest_key
    from sr_deploy.media.video import VideoOptions

    src = tmp_path / "in.mp4"
    make_clip(src, frames=6, audio=False)
    base = VideoOptions(segment_seconds=1.0)
    key = manifest_key(src, "model", base, "libx264", 1.0)
    for change in ({"tile": 64}, {"outscale": 2.0}, {"crf": 30}, {"preset": "slow"}, {"pix_fmt": "yuv444p"},
                   {"deinterlace": False}, {"start": 0.5}, {"max_frames": 3}):
        assert manifest_key(src, "model", dataclasses.replace(base, **change), "libx264", 1.0) != key, change
    assert manifest_key(src, "other model", base, "libx264", 1.0) != key
    assert manifest_key(src, "model", base, "libx265", 1.0) != key
    assert manifest_key(src, "model", base, "libx264", 2.0) != key
    assert manifest_key(src, "model", base, "libx264", 1.0) == key


def test_segments_encoded_in_parallel_make_the_same_video(tmp_path, tiny_ckpt):
    """--parallel-segments 3: three segments at once, each its own decoder and encoder, one model shared;
    lossless (CRF 0), the frames are those of the run one segment at a time, in order, with their times."""
    import av

    from sr_deploy.media.video import VideoOptions, upscale_video
    from sr_deploy.runtime.select import make_runner, resolve_model

    src = tmp_path / "in.mp4"
    make_clip(src, frames=36, fps=12, audio=False)
    runner, _ = make_runner(resolve_model(str(tiny_ckpt)), "onnxruntime")
    outs = {}
    with runner:
        for n in (1, 3):
            dst = tmp_path / f"out{n}.mkv"
            res = upscale_video(runner, src, dst, quiet=True,
                                options=VideoOptions(segment_seconds=0.5, crf=0, parallel_segments=n))
            assert res.segments == 6 and res.frames == 36
            with av.open(str(dst)) as c:
                outs[n] = [(f.pts, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    assert [p for p, _ in outs[3]] == [p for p, _ in outs[1]]
    for (_, a), (_, b) in zip(outs[1], outs[3], strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_failing_segment_stops_the_parallel_ones_and_keeps_the_finished(tmp_path, tiny_ckpt):
    from sr_deploy.errors import ModelError
    from sr_deploy.media.segments import Parts
    from sr_deploy.media.video import VideoOptions, upscale_video
    from sr_deploy.runtime.select import make_runner, resolve_model

    src = tmp_path / "in.mp4"
    make_clip(src, frames=36, fps=12, audio=False)
    runner, _ = make_runner(resolve_model(str(tiny_ckpt)), "onnxruntime")
    calls = {"n": 0}
    real = type(runner).infer_u8

    def failing(self, batch):
        calls["n"] += 1
        if calls["n"] == 20:
            raise ModelError("the model failed")
        return real(self, batch)

    dst = tmp_path / "out.mkv"
    with runner, pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(runner), "infer_u8", failing)
        with pytest.raises(ModelError):
            upscale_video(runner, src, dst, quiet=True, options=VideoOptions(segment_seconds=0.5, parallel_segments=3))
    assert not dst.exists()
    parts = Parts(dst)
    left = sorted(p.name for p in parts.dir.iterdir())
    assert not [n for n in left if ".tmp" in n], left  # no half-written segment
    finished = [n for n in left if n.startswith("seg_")]
    assert 1 <= len(finished) < 6, left  # those that ended before the failure are kept for the resume
    res = upscale_video(runner, src, dst, quiet=True, options=VideoOptions(segment_seconds=0.5, parallel_segments=3))
    assert res.reused_segments == len(finished) and res.frames == 36


class _OneAtATime:
    """A x2 runner that fails if two threads are inside it at once (OpenVINO's infer request, a TensorRT
    context), slow enough for the segments to overlap; ``on_call(n)`` runs at each call."""

    def __init__(self, on_call=None):
        import threading

        from sr_deploy.descriptor import ModelDescriptor
        from sr_deploy.runtime.base import Runner

        class R(Runner):
            backend = "test"

            def _activate(self):
                pass

            def _infer(self, batch):
                raise AssertionError("uint8 only")

            def _infer_u8(r, batch):
                if not self.inside.acquire(blocking=False):
                    self.overlapped = True
                try:
                    self.calls += 1
                    if on_call:
                        on_call(self.calls)
                    time.sleep(0.02)
                    return batch.repeat(2, axis=1).repeat(2, axis=2)
                finally:
                    self.inside.release()

        self.inside, self.overlapped, self.calls = threading.Lock(), False, 0
        self.runner = R(ModelDescriptor(name="x2", scale=2))


def test_parallel_segments_share_the_model_one_batch_at_a_time(tmp_path):
    src = tmp_path / "in.mp4"
    make_clip(src, frames=24, fps=12, audio=False)
    import threading

    callers = []  # each segment's inference stage is a thread of its own
    one = _OneAtATime(on_call=lambda n: callers.append(threading.get_ident()))
    with one.runner:
        res = upscale_video(one.runner, src, tmp_path / "o.mkv", quiet=True,
                            options=VideoOptions(segment_seconds=0.5, parallel_segments=4))
    assert res.frames == 24 and one.calls == 24
    firsts = {c: callers.index(c) for c in callers}
    lasts = {c: len(callers) - 1 - callers[::-1].index(c) for c in callers}
    assert len(firsts) == 4 and any(firsts[b] < lasts[a] for a in firsts for b in firsts if a != b and
                                    firsts[a] < firsts[b]), callers  # segments did run at the same time
    assert not one.overlapped  # but never two calls of the model at once


@pytest.mark.parametrize("parallel", [1, 3])
def test_the_frame_plan_is_decided_once_per_run_and_its_notes_said_once(tmp_path, monkeypatch, parallel):
    """Sizes, pixel formats, alpha, depth, tiles and batch are the run's, not each segment's: one decision
    for six segments, made before the first frame, from the probe's size and pixel format."""
    from sr_deploy.media import video

    src = tmp_path / "in.mp4"
    make_clip(src, frames=36, fps=12, size=(48, 32), audio=False)
    made, said = [], []
    real = video.frame_plan

    def plan(runner, size, src_fmt, options, path, say):
        made.append((size, src_fmt))
        say("note: planned")
        return real(runner, size, src_fmt, options, path, say)

    monkeypatch.setattr(video, "frame_plan", plan)
    monkeypatch.setattr(video, "quiet_say", said.append)
    one = _OneAtATime()
    with one.runner:
        res = upscale_video(one.runner, src, tmp_path / "o.mkv", quiet=True,
                            options=VideoOptions(segment_seconds=0.5, parallel_segments=parallel))
    assert res.segments == 6 and res.frames == 36 and one.calls == 36
    assert made == [((48, 32), "yuv420p")]
    assert said.count("note: planned") == 1


def test_an_interrupt_stops_every_parallel_segment(tmp_path):
    import _thread
    import threading

    from sr_deploy.media.segments import Parts

    src = tmp_path / "in.mp4"
    make_clip(src, frames=48, fps=12, audio=False)
    one = _OneAtATime(on_call=lambda n: _thread.interrupt_main() if n == 3 else None)
    dst = tmp_path / "o.mkv"
    with one.runner, pytest.raises(KeyboardInterrupt):
        upscale_video(one.runner, src, dst, quiet=True, options=VideoOptions(segment_seconds=0.5, parallel_segments=3))
    # the three running segments stopped before their ends (6 frames each: 18 would be all three finished), the
    # others never started; how many frames pass between the interrupt and the stop depends on the machine's load
    # (the main thread wakes every 0.1 s: 10 on a quiet 2-core CPU, 12 seen once under CI's two workers)
    assert one.calls < 18
    assert not [t for t in threading.enumerate() if t.name.startswith("srdeploy-segment")]
    d = Parts(dst).dir  # kept only with finished segments in it, never a half-written one
    assert not d.exists() or not [p.name for p in d.iterdir() if ".tmp" in p.name]
    assert not dst.exists()


def test_how_many_segments_run_at_once(monkeypatch):
    from types import SimpleNamespace

    from sr_deploy.media.video import parallel_segments

    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    gpu, cpu = SimpleNamespace(on_gpu=True), SimpleNamespace(on_gpu=False)
    assert parallel_segments(gpu, "libx264", VideoOptions(), 10) == 4  # no NVENC (H100): one encoder per 4 cores
    assert parallel_segments(gpu, "libx264", VideoOptions(), 2) == 2  # never more than the segments left
    assert parallel_segments(gpu, "hevc_nvenc", VideoOptions(), 10) == 1  # the GPU encodes
    assert parallel_segments(cpu, "libx264", VideoOptions(), 10) == 1  # the model has the cores
    assert parallel_segments(cpu, "libx264", VideoOptions(parallel_segments=3), 10) == 3  # asked for
    with pytest.raises(InputError, match="--parallel-segments"):
        VideoOptions(parallel_segments=0).check()
