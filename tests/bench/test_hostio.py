"""`bench --host-io`: the host's share of a frame (float vs uint8 I/O, RGB vs the YUV graph) and the encoder's ceiling."""

import numpy as np
from typer.testing import CliRunner

from sr_deploy.bench.encoder import encoder_ceiling
from sr_deploy.bench.hostio import measure_colour_io
from sr_deploy.cli import app


def test_colour_io_counts_the_bytes_of_each_path():
    c8 = measure_colour_io((20, 30), 4, 8, repeats=1)
    px = 20 * 30 + 80 * 120
    assert np.isclose(c8.rgb_mb * 1e6, 3 * px) and np.isclose(c8.yuv_mb * 1e6, 1.5 * px)
    c10 = measure_colour_io((21, 30), 4, 10, repeats=1)  # odd sides are made even (4:2:0)
    assert np.isclose(c10.rgb_mb * 1e6, 12 * px) and np.isclose(c10.yuv_mb * 1e6, 3 * px)
    assert c8.rgb_ms > 0 and c8.yuv_ms > 0


def test_encoder_ceiling_counts_encoded_frames_of_every_encoder():
    one = encoder_ceiling(64, 48, seconds=0.3)
    two = encoder_ceiling(64, 48, encoders=2, threads_each=1, seconds=0.3)
    assert one.fps > 10 and len(one.each) == 1  # small frames: hundreds a second on any CPU
    assert (two.encoders, two.threads_each) == (2, 1) and len(two.each) == 2
    assert min(two.each) > 5 and np.isclose(two.fps, sum(two.each))


def test_host_io_prints_the_three_tables():
    r = CliRunner().invoke(app, ["bench", "--host-io", "--size", "16x24", "--min-time", "0.3"])
    assert r.exit_code == 0, r.output
    assert "host ms, uint8 I/O" in r.output and "host ms, YUV graph" in r.output
    assert "| 96x64 | libx264 veryfast | 1 x auto |" in r.output and "x 1 |" in r.output
