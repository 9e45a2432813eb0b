"""The host encoder's ceiling: frames per second a software encoder takes at an output size, one encoder
with all its threads against several encoders side by side (as `run` encodes segments in parallel where a
GPU feeds a host encoder, media/video.parallel_segments), so a run's end-to-end rate can be read against it."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from fractions import Fraction

import numpy as np


@dataclass(frozen=True)
class EncoderCeiling:
    width: int
    height: int
    codec: str
    encoders: int
    threads_each: int  # 0: the encoder's own choice
    fps: float  # all encoders together
    each: tuple[float, ...] = ()  # each encoder's


def _frames(width: int, height: int, count: int = 8) -> list:
    """yuv420p frames with texture and motion (a still or flat frame would flatter the encoder)."""
    import av

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2), dtype=np.uint8)
    luma = np.kron(base, np.ones((8, 8), np.uint8))  # blocks an encoder can predict, with edges
    out = []
    for i in range(count):
        y = np.roll(luma, (i * 3, i * 5), (0, 1))[:height, :width]
        c = np.full((height // 2, width), 128, np.uint8)
        out.append(av.VideoFrame.from_ndarray(np.ascontiguousarray(np.concatenate((y, c))), format="yuv420p"))
    return out


def encoder_ceiling(width: int, height: int, *, codec: str = "libx264", encoders: int = 1, threads_each: int = 0,
                    seconds: float = 3.0, preset: str = "veryfast", crf: int = 18) -> EncoderCeiling:
    import av

    frames = _frames(width, height)
    counts = [0] * encoders
    end = threading.Event()

    def work(k: int) -> None:
        cc = av.CodecContext.create(codec, "w")
        cc.width, cc.height, cc.pix_fmt = width, height, "yuv420p"
        cc.time_base, cc.framerate = Fraction(1, 24), Fraction(24)
        cc.options = {"preset": preset, "crf": str(crf)}
        if threads_each:
            cc.thread_count = threads_each
        i = 0
        while not end.is_set():
            f = frames[i % len(frames)]
            f.pts = i
            for _ in cc.encode(f):
                counts[k] += 1  # frames out of the encoder: its lookahead's delay is not counted
            i += 1
        cc.encode(None)

    workers = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(encoders)]
    for w in workers:
        w.start()
    time.sleep(min(1.0, seconds / 3))  # the encoders' lookahead fills before the count starts
    start, t0 = list(counts), time.perf_counter()
    time.sleep(seconds)
    done, t1 = list(counts), time.perf_counter()
    end.set()
    for w in workers:
        w.join()
    each = tuple((b - a) / (t1 - t0) for a, b in zip(start, done))
    return EncoderCeiling(width, height, codec, encoders, threads_each, sum(each), each)


def ceilings(width: int, height: int, codec: str = "libx264", seconds: float = 3.0) -> list[EncoderCeiling]:
    """One encoder with its own thread choice, and one encoder per four cores (at least two) side by side."""
    cores = os.cpu_count() or 1
    n = max(2, cores // 4)
    return [encoder_ceiling(width, height, codec=codec, seconds=seconds),
            encoder_ceiling(width, height, codec=codec, encoders=n, threads_each=max(1, cores // n), seconds=seconds)]
