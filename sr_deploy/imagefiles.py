"""Image files on disk: which suffixes are images, listing them, reading one as RGB.

Shared by training data, calibration, evaluation and media, so it sits below all of them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sr_deploy.errors import InputError

# formats OpenCV's wheels neither read nor write, which Pillow does: AVIF, JPEG saved as .jfif (browsers),
# game textures (TGA, DDS), QOI and JPEG 2000 (OpenCV's OpenJPEG refuses small images)
PIL_ONLY_SUFFIXES = {".avif", ".jfif", ".tga", ".dds", ".qoi", ".jp2"}
IMAGE_SUFFIXES = {".png", ".apng", ".jpg", ".jpeg", ".jpe", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm",
                  ".pnm"} | PIL_ONLY_SUFFIXES


def list_images(folders: list[Path] | list[str]) -> list[Path]:
    """Every image file under ``folders`` (recursive, sorted per folder)."""
    files: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"{folder}: data folder not found")
        files += sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return files


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image as RGB uint8 (grayscale expanded, alpha dropped)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # PIL's "cannot identify", truncation
        raise InputError(f"{path}: not a readable image ({exc.__class__.__name__})") from exc
