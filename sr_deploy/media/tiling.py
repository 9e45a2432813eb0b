"""Upscale a frame whole or in overlapping tiles blended with a smooth window.

Only tiles travel to the backend, never the whole frame. Overlapping tiles
are blended with a raised-cosine ramp (not pasted), so seams vanish and the
result stays within a small PSNR difference of an untiled run. Tiles are
processed one row at a time and blended in a strip buffer whose rows are
written out as soon as no later tile touches them: besides the output
itself, memory is bounded by the tile size, not the frame size.
"""

from __future__ import annotations


import numpy as np

from sr_deploy.metrics import quantize  # noqa: F401  (re-exported)
from sr_deploy.runtime.base import Runner


MIN_TILE = 16  # input pixels: below this a tile is mostly blend ramp and the model's zero-padded border


def check_tile(tile: int) -> None:
    from sr_deploy.errors import InputError

    if tile < 0 or 0 < tile < MIN_TILE:
        raise InputError(f"--tile {tile}: use 0 (whole frames) or at least {MIN_TILE} input pixels")


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    starts.append(size - tile)
    return starts


def _ramp(n: int, overlap: int, lead: bool, trail: bool) -> np.ndarray:
    """Weights 1 inside, raised-cosine over ``overlap`` samples at a leading/trailing edge that has a neighbour."""
    w = np.ones(n, dtype=np.float32)
    if overlap > 0:
        r = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap, dtype=np.float32) + 0.5) / overlap)
        if lead:
            w[:overlap] = r
        if trail:
            w[n - overlap:] = r[::-1]
    return w


def _window(starts: list[int], i: int, length: int, s: int) -> np.ndarray:
    """1-D blend weights (output pixels) for tile ``i`` of a row or column of tiles."""
    lead = (starts[i - 1] + length - starts[i]) * s if i > 0 else 0
    trail = (starts[i] + length - starts[i + 1]) * s if i + 1 < len(starts) else 0
    w = _ramp(length * s, lead, lead > 0, False)
    if trail:
        w *= _ramp(length * s, trail, False, True)
    return w


def _finish(x: np.ndarray, out_max: float | None, dtype) -> np.ndarray:
    return x if out_max is None else quantize(x, out_max, dtype)


def auto_tile(runner: Runner, h: int, w: int, overlap: int = 16) -> int | tuple[int, int]:
    """0 (the whole frame in one call) when that fits the runner's memory budget; else the tile
    (height, width) of the grid that computes the fewest pixels with every call within the budget.

    Tiles are balanced over the frame, not square: a 480x640 frame under a 120k-pixel budget runs as
    three 480x224 strips (5% more pixels than the frame, for the overlaps), where square 344-pixel
    tiles anchored at the edges would compute four 344x344 tiles (54% more)."""
    per_px, budget = runner.bytes_per_pixel(), runner.memory_budget()
    # a tile at least three overlaps wide: the blend bands of its two sides never meet (a wide measured
    # receptive field, Real-ESRGAN's RRDBs, makes the overlap wide)
    least = max(MIN_TILE, 3 * overlap)
    if h * w * per_px <= budget:
        return 0
    most = max(least * least, int(budget / per_px))
    best = None
    # up to as many rows as tiles of the least height need to cover h with their overlaps (h // least rows
    # missed the grids of a frame under twice that height: a 35-row frame got 18x18 tiles, 85% more pixels)
    for ny in range(1, 2 + max(0, -(-(h - least) // (least - overlap)))):
        # sizes clamped to the least before they are costed: a clamped tile checked at its unclamped size
        # went past the budget (16x59 tiles for a 903-pixel budget)
        th = max(least, -(-(h + (ny - 1) * overlap) // ny))
        if th * least > most:
            continue
        nx = 1
        while True:
            tw = max(least, -(-(w + (nx - 1) * overlap) // nx))
            if th * tw <= most or tw <= least:
                break
            nx += 1
        # within the budget here: the loop ends at tw <= least only where th * least <= most (checked above)
        cost = (ny * nx * th * tw, ny * nx)  # the fewest pixels, then the fewest calls
        if best is None or cost < best[0]:
            best = (cost, (th, tw))
    return best[1]  # never None: the last row count has th == least, and least x least fits `most`


def tile_batch(runner: Runner, tile: int | tuple[int, int], most: int = 4) -> int:
    """Tiles per inference call: up to ``most`` while the call stays within the runner's memory budget."""
    th, tw = tile if isinstance(tile, tuple) else (tile, tile)
    most = min(most, runner.input_spec().max_batch or most)  # an engine's profile caps its batch
    return int(max(1, min(most, runner.memory_budget() // max(1.0, th * tw * runner.bytes_per_pixel()))))


def _weight_sum(starts: list[int], length: int, s: int, size: int) -> np.ndarray:
    """Sum over a row (or column) of tiles of their 1-D blend windows, in output pixels."""
    total = np.zeros(size * s, dtype=np.float32)
    for i, a in enumerate(starts):
        total[a * s:(a + length) * s] += _window(starts, i, length, s)
    return total


MAX_RF_OVERLAP = 192  # the probe sees radii up to 96 input pixels (export/onnx_export.RF_PROBE)


def upscale_frame(runner: Runner, frame: np.ndarray, *, tile: int | tuple[int, int] | None = 0, overlap: int = 16,
                  batch: int | None = None, out_max: float | None = None, out_dtype=np.uint8) -> np.ndarray:
    """``frame``: HxWxC uint8, or float32 in [0, 1] → (sH)x(sW)xC.

    A uint8 frame runs through ``runner.infer_u8`` (pixels in the graph, bytes to the backend)
    and comes back uint8. A float frame gives float32 in [0, 1] by default; with ``out_max``
    (255 or 65535) the result is rounded into ``out_dtype`` row by row, so no full-size float
    buffer exists. ``tile`` 0, or a frame no larger than the tile, runs in one call; ``tile`` None
    picks one from the runner's memory budget (auto_tile).
    """
    h, w, c = frame.shape
    # window-attention models (SwinIR, HAT, ...) see a pixel's context through its window: tiles overlap
    # by at least one window so no seam falls inside a window the model never saw whole
    desc = getattr(runner, "descriptor", None)
    overlap = max(overlap, int(getattr(desc, "arch", {}).get("window", 0) or 0))
    # a measured receptive field: a seam's error fades within it, so twice it leaves the blend band clean
    overlap = max(overlap, min(2 * int(getattr(desc, "receptive_field", 0) or 0), MAX_RF_OVERLAP))
    if tile is None:
        tile = auto_tile(runner, h, w, overlap)
    if isinstance(tile, tuple):
        tile_h, tile_w = tile
        check_tile(min(tile))
    else:
        check_tile(tile)
        tile_h = tile_w = tile
    s = runner.scale
    max_hw = runner.input_spec().max_hw
    if max_hw and (h > max_hw[0] or w > max_hw[1]):
        # larger than the engine's profile: tiled within it, never an error mid-video
        tile_h, tile_w = min(tile_h or h, max_hw[0]), min(tile_w or w, max_hw[1])
    u8 = frame.dtype == np.uint8
    if u8:
        out_max, out_dtype = None, np.uint8
    if tile_h <= 0 or (h <= tile_h and w <= tile_w):
        if u8:
            return runner.infer_u8(frame[None])[0]
        y = runner.infer(frame.transpose(2, 0, 1)[None])[0].transpose(1, 2, 0)
        return _finish(y, out_max, out_dtype)
    overlap = min(overlap, tile_h // 2, tile_w // 2)
    ys, xs = _starts(h, tile_h, overlap), _starts(w, tile_w, overlap)
    th, tw = min(tile_h, h), min(tile_w, w)
    tile = (th, tw)
    batch = batch or tile_batch(runner, tile)
    if u8:  # tiles come back as bytes; the blend is done in float and rounded per strip
        out_max = 255.0
    out = np.empty((h * s, w * s, c), dtype=np.float32 if out_max is None else out_dtype)
    wxs = [_window(xs, j, tw, s) for j in range(len(xs))]
    # The blend weights are separable (a tile's window is wy ⊗ wx), so their sum over all tiles is the
    # outer product of the row and column sums: two 1-D arrays instead of a weight plane.
    norm_y = 1.0 / _weight_sum(ys, th, s, h)
    norm_x = (1.0 / _weight_sum(xs, tw, s, w))[None, :, None]
    # strip buffer: rows [base, base + th*s) of the output, still receiving contributions
    strip = np.zeros((th * s, w * s, c), dtype=np.float32)
    base = 0
    groups = [list(range(j0, min(j0 + batch, len(xs)))) for j0 in range(0, len(xs), batch)]  # tiles per call
    calls = [(y0, cols) for y0 in ys for cols in groups]
    if u8:  # every tile batch through stream_u8, in order: a GPU runner keeps several in flight
        results = runner.stream_u8(np.stack([frame[y0:y0 + th, xs[j]:xs[j] + tw] for j in cols])
                                   for y0, cols in calls)
    else:
        results = (runner.infer(np.stack([frame[y0:y0 + th, xs[j]:xs[j] + tw].transpose(2, 0, 1) for j in cols]))
                   for y0, cols in calls)

    def flush(rows: int) -> None:
        blk = strip[:rows]
        blk *= norm_y[base:base + rows, None, None]
        blk *= norm_x
        out[base:base + rows] = _finish(blk, out_max, out_dtype)

    for i, y0 in enumerate(ys):
        shift = y0 * s - base  # move the strip down to start at this tile row
        if shift:
            done = min(shift, strip.shape[0])
            flush(done)
            keep = strip.shape[0] - shift
            if keep > 0:
                strip[:keep] = strip[shift:]  # numpy buffers overlapping copies correctly
                strip[keep:] = 0.0
            else:
                strip[:] = 0.0
            base = y0 * s
        wy = _window(ys, i, th, s)
        for cols in groups:
            for j, r in zip(cols, next(results)):
                r = r.astype(np.float32) * (1.0 / 255.0) if u8 else r.transpose(1, 2, 0)
                win = (wy[:, None] * wxs[j][None, :])[..., None]
                x0 = xs[j] * s
                strip[:, x0:x0 + tw * s] += r * win
    flush(th * s)
    return out
