"""A small built-in set of generated HR images: edges, text, gradients and texture.

Used where no real images are given (the default `srdeploy bench`, the fp16
gate without --gate-data). Numbers on it are not comparable with published
tables; those need real data (`--data`).
"""

from __future__ import annotations

import numpy as np


def synthetic_images(count: int = 4, size: tuple[int, int] = (192, 256), seed: int = 0) -> list[np.ndarray]:
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(count):
        img = np.zeros((h, w, 3), np.float32)
        for c in range(3):
            fx, fy = rng.uniform(3, 30, 2)
            img[..., c] = 0.5 + 0.35 * np.sin(xx / fx + c) * np.cos(yy / fy - c)
        img = (img * 255).astype(np.uint8)
        for _ in range(6):
            p1 = tuple(int(v) for v in rng.integers(0, [w, h]))
            p2 = tuple(int(v) for v in rng.integers(0, [w, h]))
            color = tuple(int(v) for v in rng.integers(0, 256, 3))
            cv2.line(img, p1, p2, color, int(rng.integers(1, 4)), cv2.LINE_AA)
            cv2.circle(img, p1, int(rng.integers(5, 30)), color, 2, cv2.LINE_AA)
        cv2.putText(img, f"srdeploy {i}", (8, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 2, cv2.LINE_AA)
        noise = rng.normal(0, 4, img.shape)
        out.append(np.clip(img + noise, 0, 255).astype(np.uint8))
    return out
