import numpy as np
import pytest

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


class _Budget:
    """What auto_tile and tile_batch ask of a runner: bytes per pixel, the memory budget, the batch cap."""

    def __init__(self, per_px: float, budget: int, max_batch: int | None = None):
        self.per_px, self.budget, self.max_batch = per_px, budget, max_batch

    def bytes_per_pixel(self):
        return self.per_px

    def memory_budget(self):
        return self.budget

    def input_spec(self):
        from types import SimpleNamespace

        return SimpleNamespace(max_batch=self.max_batch)


def _computed(h, w, tile, overlap):
    """Pixels the model computes for an h x w frame in tiles of ``tile`` (as upscale_frame lays them)."""
    th, tw = min(tile[0], h), min(tile[1], w)
    return len(_starts(h, th, overlap)) * len(_starts(w, tw, overlap)) * th * tw


def test_auto_tile_runs_whole_frames_that_fit_and_balanced_strips_that_do_not():
    from sr_deploy.media.tiling import auto_tile

    assert auto_tile(_Budget(2, 2 * 480 * 640), 480, 640) == 0  # exactly the budget: one call
    # the docstring's case: 120k pixels of budget for a 480x640 frame is three 480x224 strips, 5% more
    # pixels than the frame, where square 344-pixel tiles would compute 54% more
    tile = auto_tile(_Budget(1, 120_000), 480, 640)
    assert tile == (480, 224) and len(_starts(640, 224, 16)) == 3
    assert _computed(480, 640, tile, 16) <= 1.06 * 480 * 640
    assert auto_tile(_Budget(1, 480 * 640 - 1), 480, 640) != 0
    # a tile at least three overlaps wide (the blend bands of its sides never meet), MIN_TILE at least,
    # even when the budget allows less
    assert auto_tile(_Budget(1, 120_000), 480, 640, overlap=40) == (480, 240)
    assert auto_tile(_Budget(1, 10), 480, 640) == (48, 48)
    assert auto_tile(_Budget(1, 10), 480, 640, overlap=2) == (16, 16)


def test_auto_tile_takes_a_tile_that_is_exactly_the_budget_and_breaks_ties_by_fewer_calls():
    from sr_deploy.media.tiling import auto_tile

    assert auto_tile(_Budget(1, 48 * 24), 48, 96, overlap=0) == (48, 24)  # 4 calls of exactly the budget
    # 5 x 18x118 and 6 x 30x59 compute the same 10620 pixels: the fewer calls win
    assert auto_tile(_Budget(1, 2404), 90, 118, overlap=0) == (18, 118)


def test_blend_windows_of_neighbouring_tiles_add_up_to_one():
    """Each overlap is a raised-cosine ramp down in one tile and the same ramp up in the next, so where two
    tiles meet the weights sum to 1: a seam is a smooth cross-fade, never a step. (Where the last tile,
    anchored at the frame's edge, overlaps two others the sum exceeds 1 by a few percent; upscale_frame
    divides by it, tested below.)"""
    from sr_deploy.media.tiling import _weight_sum, _window

    for size, tile, overlap, s in [(100, 40, 8, 1), (100, 40, 8, 4), (37, 16, 5, 2), (640, 224, 16, 3), (30, 40, 8, 2),
                                   (20, 8, 1, 1)]:
        starts = _starts(size, tile, overlap)
        length = min(tile, size)
        np.testing.assert_allclose(_weight_sum(starts, length, s, size), 1.0, atol=1e-6)
        for i in range(1, len(starts)):  # the later tile fades in over the band it shares with the earlier
            band = (starts[i - 1] + length - starts[i]) * s
            w = _window(starts, i, length, s)
            assert np.all(np.diff(w[:band]) > 0) and w[0] < 0.5 / band + 1e-6 and w[band] == 1.0


def test_auto_tile_keeps_every_call_within_the_budget_and_computes_near_the_fewest_pixels():
    """Against every tile size the budget allows (brute force over the same layout upscale_frame uses)."""
    import random

    from sr_deploy.media.tiling import auto_tile

    rnd = random.Random(0)
    tried = 0
    for _ in range(40):
        h, w, overlap = rnd.randint(20, 160), rnd.randint(20, 160), rnd.choice([0, 2, 4, 6])
        least = max(16, 3 * overlap)
        per_px = rnd.choice([1, 3])
        # tight budgets too (a few least-size tiles): their grids need the most rows
        most = rnd.randint(least * least, h * w - 1) if rnd.random() < 0.5 else rnd.randint(least * least, 3 * least * least)
        if most >= h * w:
            continue
        th, tw = auto_tile(_Budget(per_px, most * per_px), h, w, overlap)
        assert least <= th and least <= tw and th * tw <= most, (h, w, overlap, most, th, tw)
        best = min(_computed(h, w, (a, b), overlap) for a in range(least, h + 1) for b in range(least, w + 1)
                   if a * b <= most)
        assert _computed(h, w, (th, tw), overlap) <= 1.02 * best, (h, w, overlap, most, th, tw, best)
        tried += 1
    assert tried >= 30


def test_tile_batch_fills_the_budget_up_to_the_cap_and_the_engines_batch():
    from sr_deploy.media.tiling import tile_batch

    # a 10x10 tile at 2 bytes a pixel is 200 bytes
    assert tile_batch(_Budget(2, 650), (10, 10)) == 3
    assert tile_batch(_Budget(2, 650), 10) == 3  # a square tile given as one number
    assert tile_batch(_Budget(2, 10_000), (10, 10)) == 4  # the default cap
    assert tile_batch(_Budget(2, 10_000), (10, 10), most=6) == 6
    assert tile_batch(_Budget(2, 10_000, max_batch=2), (10, 10)) == 2  # an engine profile's batch
    assert tile_batch(_Budget(2, 50), (10, 10)) == 1  # never none
    assert tile_batch(_Budget(2, 850), (10, 20)) == 2  # height and width both count
    assert tile_batch(_Budget(0.001, 5), (10, 10)) == 4  # under a byte a tile still counts one byte a pixel


class _Nearest:
    """A x2 nearest-neighbour runner that records where each tile it is given starts (the frame's first
    channel holds each pixel's column), with a descriptor to carry a window or a receptive field."""

    def __new__(cls, scale: int = 2, **desc):
        from sr_deploy.descriptor import ModelDescriptor
        from sr_deploy.runtime.base import Runner

        class Nearest(Runner):
            backend = "test"

            def _activate(self):
                pass

            def _infer(self, batch):
                self.seen.extend(int(round(float(t[0, 0, 0]) * 1000)) for t in batch)
                self.shapes.extend(t.shape[1:] for t in batch)
                return batch.repeat(scale, axis=2).repeat(scale, axis=3)

        r = Nearest(ModelDescriptor(name="nearest", scale=scale, **desc))
        r.seen, r.shapes = [], []
        return r


def _columns(h, w):
    frame = np.zeros((h, w, 3), np.float32)
    frame[..., 0] = np.arange(w, dtype=np.float32)[None, :] / 1000  # column index, readable from any tile
    frame[..., 1] = 0.5
    return frame


def test_tiles_overlap_by_the_default_a_models_window_or_twice_its_receptive_field():
    # (a 64-row frame in 100x100 tiles: one row of tiles, the overlap capped at half the tile's 100)
    for desc, overlap in [({}, 16), ({"arch": {"window": 24}}, 24), ({"receptive_field": 20}, 40),
                          ({"arch": {"window": 24}, "receptive_field": 8}, 24), ({"receptive_field": 60}, 50)]:
        r = _Nearest(**desc)
        with r:
            upscale_frame(r, _columns(64, 300), tile=(100, 100))
        starts = sorted(set(r.seen))
        assert starts == _starts(300, 100, overlap), (desc, starts)
    # the overlap is at most half the tile's own height or width, whichever is smaller (an odd width halves
    # down to whole pixels); and none where none is asked for and the model has no window
    for tile, overlap in [((40, 100), 20), ((100, 41), 20)]:
        r = _Nearest(receptive_field=60)
        with r:
            upscale_frame(r, _columns(64, 300), tile=tile)
        assert sorted(set(r.seen)) == _starts(300, tile[1], overlap), (tile, sorted(set(r.seen)))
    r = _Nearest()
    with r:
        upscale_frame(r, _columns(64, 300), tile=(100, 100), overlap=0)
    assert sorted(set(r.seen)) == [0, 100, 200]
    # no overlap, tiled in both directions (each tile row moves the strip past all it held), also on a frame
    # narrower than it is tall: every output row written, none blended
    for size in [(64, 300), (64, 20)]:
        f = _columns(*size)
        r = _Nearest()
        with r:
            got = upscale_frame(r, f, tile=(32, 100), overlap=0)
        np.testing.assert_allclose(got, f.repeat(2, axis=0).repeat(2, axis=1), atol=1e-6)


def test_auto_tiles_and_an_engines_largest_input_bound_every_call_and_change_no_pixel():
    from types import SimpleNamespace

    from sr_deploy.media.tiling import auto_tile

    frame = _columns(100, 300)
    frame[..., 2] = np.random.default_rng(1).random((100, 300), dtype=np.float32)
    ref = frame.repeat(2, axis=0).repeat(2, axis=1)
    r = _Nearest()
    r.bytes_per_pixel = lambda: 4.0
    r.memory_budget = lambda: 4 * 100 * 120  # a 100x120 tile's worth: the frame does not fit whole
    with r:
        tile = auto_tile(r, 100, 300, 16)
        got = upscale_frame(r, frame, tile=None)
    assert tile != 0 and set(r.shapes) <= {(100, tile[1]), (tile[0], tile[1])} and len(r.shapes) > 1
    np.testing.assert_allclose(got, ref, atol=1e-6)
    r = _Nearest(receptive_field=20)  # an overlap of 40: auto tiles are at least three overlaps wide
    r.bytes_per_pixel, r.memory_budget = (lambda: 4.0), (lambda: 4 * 100 * 120)
    with r:
        upscale_frame(r, frame, tile=None)
    assert min(w for _, w in r.shapes) >= 120, r.shapes
    for size in [(40, 100), (60, 50), (48, 64)]:  # wider, taller, and exactly the engine's largest input
        r = _Nearest()
        r.input_spec = lambda: SimpleNamespace(max_hw=(48, 64), max_batch=None)
        f = _columns(*size)
        with r:
            got = upscale_frame(r, f)  # tile 0 (whole frames) asked: tiled within the profile all the same
        assert all(h <= 48 and w <= 64 for h, w in r.shapes), (size, r.shapes)
        assert r.shapes == [(48, 64)] if size == (48, 64) else len(r.shapes) > 1
        np.testing.assert_allclose(got, f.repeat(2, axis=0).repeat(2, axis=1), atol=1e-6)


def test_uint8_frames_come_back_uint8_whole_or_tiled():
    # 70 rows in 32-row tiles: the last tile row overlaps two others, whose weights sum past 1 (by 2%)
    frame = (np.random.default_rng(2).random((70, 70, 3)) * 255).astype(np.uint8)
    ref = frame.repeat(2, axis=0).repeat(2, axis=1)
    r = _Nearest()
    with r:
        whole = upscale_frame(r, frame, out_max=65535, out_dtype=np.uint16)  # uint8 in: uint8 out, whatever asked
        tiled = upscale_frame(r, frame, tile=32)
    assert whole.dtype == tiled.dtype == np.uint8 and whole.shape == ref.shape
    np.testing.assert_array_equal(whole, ref)
    np.testing.assert_array_equal(tiled, ref)  # equal tiles blended and rounded back: the same bytes


def test_a_float_frame_rounds_into_16_bit_pixels_tiled_or_whole():
    from sr_deploy.metrics import quantize

    frame = np.random.default_rng(0).random((40, 70, 3), dtype=np.float32)
    r = _Nearest()
    with r:
        whole_f = upscale_frame(r, frame)
        whole = upscale_frame(r, frame, out_max=65535, out_dtype=np.uint16)
        tiled = upscale_frame(r, frame, tile=32, out_max=65535, out_dtype=np.uint16)
    assert whole_f.dtype == np.float32 and whole.dtype == tiled.dtype == np.uint16
    np.testing.assert_array_equal(whole, quantize(whole_f, 65535, np.uint16))
    assert np.abs(tiled.astype(np.int32) - whole).max() <= 1  # nearest x2: the blend of equal tiles


def test_a_tile_below_the_least_is_refused_in_one_line():
    from sr_deploy.errors import InputError
    from sr_deploy.media.tiling import MIN_TILE, check_tile

    for ok in (0, MIN_TILE, 512):
        check_tile(ok)
    for bad in (-1, 1, MIN_TILE - 1):
        with pytest.raises(InputError, match=rf"^--tile {bad}: use 0 \(whole frames\) or at least {MIN_TILE} input pixels$"):
            check_tile(bad)


def test_an_x1_model_in_tiles_overlapping_by_one_pixel_keeps_the_shared_row():
    """At x1 with a one-pixel overlap the strip keeps one row when it moves down: that row is both tiles'."""
    f = _columns(40, 30)
    f[..., 2] = np.random.default_rng(3).random((40, 30), dtype=np.float32)
    r = _Nearest(scale=1)
    with r:
        got = upscale_frame(r, f, tile=(16, 100), overlap=1)
    np.testing.assert_allclose(got, f, atol=1e-6)
