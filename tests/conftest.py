"""Shared fixtures: tiny models, generated images and clips. No network, no dataset files."""

from __future__ import annotations

import importlib.util
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from sr_deploy.models import SRResNet, save_checkpoint


def pytest_collection_modifyitems(config, items):
    has_trt = importlib.util.find_spec("tensorrt") is not None
    has_gpu = torch.cuda.is_available()
    for item in items:
        if "needs_tensorrt" in item.keywords and not has_trt:
            item.add_marker(pytest.mark.skip(reason="TensorRT is not installed"))
        if "needs_gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="no CUDA GPU"))


@pytest.fixture(autouse=True)
def _no_stop_left_requested():
    """A test that calls the command line's signal handler in-process leaves the process-wide stop request
    set (sr_deploy/stopping.py): cleared after each test, so that no later frame loop sees it."""
    from sr_deploy import stopping

    yield
    stopping.REQUESTED.clear()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SRDEPLOY_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    # `auto` measures the CPU runners once per model (runtime/tune.py); each tiny test model would
    # spawn its own timing processes, so the rule-based fallback runs unless a test turns it on
    monkeypatch.setenv("SRDEPLOY_TUNE", "0")
    # a provisional ranking is re-timed in the foreground: a detached re-timing would wait for pytest to end
    monkeypatch.setenv("SRDEPLOY_RETIME", "foreground")


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics so that folding is really exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
    return model.eval()


def tiny_model(scale: int = 2, **kw) -> SRResNet:
    torch.manual_seed(0)
    return randomize_bn(SRResNet(scale=scale, num_blocks=2, channels=8, **kw))


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny_x2.pt"
    save_checkpoint(path, tiny_model(2))
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tiny_ckpt, tmp_path_factory) -> Path:
    from sr_deploy.export import export_checkpoint

    return export_checkpoint(tiny_ckpt, tmp_path_factory.mktemp("onnx") / "tiny_x2.onnx").path


def pattern_image(h: int, w: int, channels: int = 3, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus texture: a test image with structure, not noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = [0.5 + 0.4 * np.sin(xx / (5 + 3 * c) + yy / (7 + c)) for c in range(channels)]
    img = np.stack(base, axis=-1) + rng.normal(0, 0.03, (h, w, channels))
    maxval = np.iinfo(dtype).max
    img = np.clip(img, 0, 1) * maxval
    return img.astype(dtype) if channels > 1 else img[..., 0].astype(dtype)


def write_clip(path: Path, frames, *, codec: str = "libx264", rate: int = 10, pix_fmt: str = "yuv420p",
               options: dict | None = None, first_pts: int = 0, configure=None) -> None:
    """Encode ``frames`` (RGB arrays, or VideoFrames already in ``pix_fmt``) as the one video stream of
    ``path``, one frame per tick of 1/``rate`` from ``first_pts``; ``configure(stream)`` sets the rest."""
    import av

    frames = list(frames)
    h, w = (frames[0].height, frames[0].width) if isinstance(frames[0], av.VideoFrame) else frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        vs = c.add_stream(codec, rate=rate)
        vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
        if options:
            vs.options = options
        if configure:
            configure(vs)
        for i, f in enumerate(frames):
            frame = f if isinstance(f, av.VideoFrame) else av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts = first_pts + i
            for p in vs.encode(frame):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)


def make_clip(path: Path, *, frames: int = 12, size: tuple[int, int] = (48, 32), fps: int = 12,
              audio: bool = True, subtitles: bool = False, vfr: bool = False,
              rotation: tuple[int, bool] | None = None, tags: bool = False, timecode: str | None = None,
              attachment: tuple[str, str, bytes] | None = None) -> list[int]:
    """Write an H.264 clip (+ AAC audio, + subtitle track) with PyAV; returns the video pts list.
    ``rotation``: (degrees, hflip) stored as the stream's display matrix, as phones do. ``tags``: a title
    and comment, each stream's language and title, and two chapters splitting the clip in half. ``timecode``:
    the video's start timecode (QuickTime writes a timecode track); ``attachment``: (name, mimetype, data)."""
    import av

    w, h = size
    container = av.open(str(path), "w")
    vs = container.add_stream("libx264", rate=fps)
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
    tb = Fraction(1, 1000) if vfr else Fraction(1, fps)
    vs.time_base = tb
    vs.codec_context.time_base = tb
    vs.options = {"bf": "0"}
    if rotation:
        vs.set_display_rotation(rotation[0], hflip=rotation[1])
    if timecode:
        vs.metadata["timecode"] = timecode
    if attachment:
        container.add_attachment(name=attachment[0], mimetype=attachment[1], data=attachment[2])
    aus = container.add_stream("aac", rate=44100) if audio else None
    if tags:
        container.metadata.update({"title": "A clip", "comment": "made by a test"})
        vs.metadata.update({"language": "eng", "title": "picture"})
        if aus is not None:
            aus.metadata.update({"language": "fra", "title": "commentaire"})
        half = Fraction(frames, 2 * fps)
        container.set_chapters([{"id": i + 1, "start": int(i * half * 1000), "end": int((i + 1) * half * 1000),
                                 "time_base": Fraction(1, 1000), "metadata": {"title": name}}
                                for i, name in enumerate(("first", "second"))])
    # subtitle packets are pre-encoded SubRip text: a mux-only stream needs no encoder
    sub = container.add_mux_stream("subrip", time_base=Fraction(1, 1000)) if subtitles else None
    pts_list, t = [], 0
    for i in range(frames):
        f = av.VideoFrame.from_ndarray(pattern_image(h, w, seed=i), format="rgb24")
        f.pts = t
        f.time_base = tb
        pts_list.append(t)
        t += (40 if i % 2 else 100) if vfr else 1
        for p in vs.encode(f):
            container.mux(p)
    for p in vs.encode(None):
        container.mux(p)
    if aus is not None:
        duration = (t / 1000 if vfr else frames / fps)
        samples = int(44100 * duration)
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / 44100)).astype(np.float32)
        for start in range(0, samples, 1024):
            chunk = tone[start:start + 1024]
            af = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            af.sample_rate, af.pts = 44100, start
            for p in aus.encode(af):
                container.mux(p)
        for p in aus.encode(None):
            container.mux(p)
    if sub is not None:
        _mux_subtitle(container, sub)
    container.close()
    return pts_list


def _mux_subtitle(container, stream) -> None:
    import av

    pkt = av.Packet(b"hello")
    pkt.stream = stream
    pkt.pts = pkt.dts = 0
    pkt.duration = 500
    pkt.time_base = Fraction(1, 1000)
    container.mux(pkt)
