"""Upscale a frame whole or in overlapping tiles blended with a smooth window.

Only tiles travel to the backend. Overlapping tiles are blended with a
raised-cosine ramp (not pasted), so seams vanish and the result stays
within a small PSNR difference of an untiled run.
"""

from __future__ import annotations

import numpy as np

from sr_deploy.runtime.base import Runner


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    starts.append(size - tile)
    return starts


def _ramp(n: int, overlap: int, lead: bool, trail: bool) -> np.ndarray:
    w = np.ones(n, dtype=np.float32)
    if overlap > 0:
        r = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap, dtype=np.float32) + 0.5) / overlap)
        if lead:
            w[:overlap] = r
        if trail:
            w[n - overlap:] = r[::-1]
    return w


def upscale_frame(runner: Runner, frame: np.ndarray, *, tile: int = 0, overlap: int = 16, batch: int = 4) -> np.ndarray:
    """``frame``: HxWxC float32 in [0, 1] → (sH)x(sW)xC float32. ``tile`` 0 or ≥ the frame: one call."""
    h, w, c = frame.shape
    s = runner.scale
    if tile <= 0 or (h <= tile and w <= tile):
        return runner.infer(frame.transpose(2, 0, 1)[None])[0].transpose(1, 2, 0)
    overlap = min(overlap, tile // 2)
    ys, xs = _starts(h, tile, overlap), _starts(w, tile, overlap)
    th, tw = min(tile, h), min(tile, w)
    out = np.zeros((h * s, w * s, c), dtype=np.float32)
    weight = np.zeros((h * s, w * s, 1), dtype=np.float32)
    boxes = [(y, x) for y in ys for x in xs]
    for i in range(0, len(boxes), batch):
        chunk = boxes[i:i + batch]
        inp = np.stack([frame[y:y + th, x:x + tw].transpose(2, 0, 1) for y, x in chunk])
        res = runner.infer(inp)
        for (y, x), r in zip(chunk, res):
            # the ramp's overlap is measured where this tile meets its neighbour
            wy = _ramp(th * s, (ys[ys.index(y) - 1] + th - y) * s if y > 0 else 0, y > 0, False)
            if y + th < h:
                nxt = ys[ys.index(y) + 1]
                wy *= _ramp(th * s, (y + th - nxt) * s, False, True)
            wx = _ramp(tw * s, (xs[xs.index(x) - 1] + tw - x) * s if x > 0 else 0, x > 0, False)
            if x + tw < w:
                nxt = xs[xs.index(x) + 1]
                wx *= _ramp(tw * s, (x + tw - nxt) * s, False, True)
            win = (wy[:, None] * wx[None, :])[..., None]
            out[y * s:(y + th) * s, x * s:(x + tw) * s] += r.transpose(1, 2, 0) * win
            weight[y * s:(y + th) * s, x * s:(x + tw) * s] += win
    out /= weight
    return out
