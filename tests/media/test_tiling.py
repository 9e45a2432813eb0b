import numpy as np

from sr_deploy.export.onnx_export import read_descriptor
from sr_deploy.media.tiling import _ramp, _starts, upscale_frame
from sr_deploy.metrics import psnr
from sr_deploy.runtime.ort_runner import OrtRunner
from tests.conftest import pattern_image


class CountingRunner(OrtRunner):
    """Records the largest input it was given: only tiles may reach the backend."""

    largest = (0, 0)

    def _infer(self, batch):
        self.largest = max(self.largest, batch.shape[2:])
        return super()._infer(batch)


def test_ramps_sum_to_one_in_overlaps():
    r = _ramp(10, 4, True, False)
    assert np.allclose(r[:4] + r[:4][::-1], 1.0) and np.all(r[4:] == 1)
    assert _starts(100, 40, 8) == [0, 32, 60]
    assert _starts(30, 40, 8) == [0]


def test_tiled_hd_frame_matches_untiled(tiny_onnx):
    # a 1080p frame in 256 px tiles: 5x9 tiles, the last row and column overlapping more (a 4K frame in 512 px
    # tiles, 5x8, took four times as long)
    frame = pattern_image(1080, 1920, 3).astype(np.float32) / 255.0
    runner = CountingRunner(tiny_onnx, read_descriptor(tiny_onnx))
    with runner:
        whole = upscale_frame(runner, frame)
        runner.largest = (0, 0)
        tiled = upscale_frame(runner, frame, tile=256, overlap=32, batch=2)
    assert runner.largest == (256, 256), "only tiles reach the backend"
    assert tiled.shape == whole.shape == (2160, 3840, 3)
    ref = np.clip(np.repeat(np.repeat(frame, 2, 0), 2, 1), 0, 1)  # any fixed reference works for ΔPSNR
    d = abs(psnr(np.clip(tiled, 0, 1), ref, 1.0) - psnr(np.clip(whole, 0, 1), ref, 1.0))
    assert d <= 0.05
    assert psnr(np.clip(tiled, 0, 1), np.clip(whole, 0, 1), 1.0) > 50  # no visible seams


def test_small_frame_runs_untiled(tiny_onnx):
    runner = CountingRunner(tiny_onnx, read_descriptor(tiny_onnx))
    with runner:
        upscale_frame(runner, np.zeros((40, 50, 3), np.float32), tile=64)
    assert runner.largest == (40, 50)


class ShapesRunner(OrtRunner):
    """Records every input shape it is given; ``max_hw`` stands for an engine profile's largest input."""

    max_hw = None

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.shapes = []

    def input_spec(self):
        import dataclasses

        spec = super().input_spec()
        return dataclasses.replace(spec, max_hw=self.max_hw) if self.max_hw else spec

    def _infer(self, batch):
        self.shapes.append(tuple(batch.shape[2:]))
        return super()._infer(batch)


def test_tiles_keep_their_own_height_and_width_and_fit_an_engine_profile(tiny_onnx):
    frame = pattern_image(72, 120, 3).astype(np.float32) / 255.0
    runner = ShapesRunner(tiny_onnx, read_descriptor(tiny_onnx))
    with runner:
        whole = upscale_frame(runner, frame, tile=0)
        runner.shapes.clear()
        tiled = upscale_frame(runner, frame, tile=(32, 64), overlap=8, batch=1)
        assert max(h for h, _ in runner.shapes) == 32 and max(w for _, w in runner.shapes) == 64, runner.shapes
        assert psnr(np.clip(tiled, 0, 1), np.clip(whole, 0, 1), 1.0) > 45
        # a frame larger than the profile: tiles as large as it allows, in each direction
        runner.max_hw, runner.shapes = (40, 56), []
        fitted = upscale_frame(runner, frame, tile=0)
        assert max(h for h, _ in runner.shapes) == 40 and max(w for _, w in runner.shapes) == 56, runner.shapes
        assert psnr(np.clip(fitted, 0, 1), np.clip(whole, 0, 1), 1.0) > 45
        runner.shapes = []  # tiles asked for: each side capped by the profile's side, not the other one's
        upscale_frame(runner, frame, tile=(100, 48))
        assert max(h for h, _ in runner.shapes) == 40 and max(w for _, w in runner.shapes) == 48, runner.shapes
